"""Sharding: K/N parsing, a stable partition, and selection in order."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.errors import UsageError
from runner.scenario import Scenario, Turn
from runner.shard import parse_shard, select, shard_of


def scenario(name: str, file: str = "suite.yaml") -> Scenario:
    return Scenario(name=name, file=file, line=1, turns=(Turn("hi", 2),), sha256="0" * 64)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1/1", (1, 1)), ("2/4", (2, 4)), (" 4 / 4 ", (4, 4)), ("07/10", (7, 10))],
)
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0/4", "between 1 and 4"),
        ("5/4", "between 1 and 4"),
        ("1/0", "N must be at least 1"),
        ("2", "not K/N"),
        ("a/b", "not K/N"),
        ("1/2/3", "not K/N"),
        ("-1/4", "not K/N"),
        ("", "not K/N"),
    ],
)
def test_parse_shard_refuses_with_a_hint(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        parse_shard(text)
    assert "--shard" in str(info.value)


def test_shard_of_is_the_documented_hash() -> None:
    digest = hashlib.sha256(b"suite.yaml\0greeting").hexdigest()
    assert shard_of("suite.yaml", "greeting", 7) == int(digest[:16], 16) % 7 + 1


def test_directories_do_not_count() -> None:
    paths = ("suite.yaml", "a/b/suite.yaml", "/x/suite.yaml", "./suite.yaml")
    assert len({shard_of(p, "greeting", 1000) for p in paths}) == 1
    digest = hashlib.sha256(b"other.yaml\0farewell").hexdigest()
    assert shard_of("deep/dir/other.yaml", "farewell", 1000) == int(digest[:16], 16) % 1000 + 1


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=40, unique=True), st.data())
def test_shards_partition_the_suite_whatever_the_order(
    names: list[str], data: st.DataObject
) -> None:
    n = data.draw(st.integers(1, 6))
    suite = [scenario(name, f"f{i % 3}.yaml") for i, name in enumerate(names)]
    shards = [select(suite, k, n) for k in range(1, n + 1)]
    assert sorted(sc.name for part in shards for sc in part) == sorted(names)
    for part in shards:  # each shard keeps the suite's order
        assert part == [sc for sc in suite if sc in part]
    shuffled = data.draw(st.permutations(suite))
    for k in range(1, n + 1):
        assert {sc.name for sc in select(shuffled, k, n)} == {sc.name for sc in shards[k - 1]}


def test_adding_a_scenario_moves_no_other() -> None:
    suite = [scenario(f"s{i}") for i in range(50)]
    before = {sc.name: shard_of(sc.file, sc.name, 4) for sc in suite}
    after = {sc.name: shard_of(sc.file, sc.name, 4) for sc in [*suite, scenario("new")]}
    assert {k: after[k] for k in before} == before


def test_shards_of_a_large_suite_are_about_even() -> None:
    rng = random.Random(7)
    names = [f"scenario-{rng.getrandbits(64):x}" for _ in range(4000)]
    sizes = Counter(shard_of("suite.yaml", name, 4) for name in names)
    assert set(sizes) == {1, 2, 3, 4}
    assert all(900 <= size <= 1100 for size in sizes.values()), sizes


def test_select_refuses_a_bad_shard() -> None:
    with pytest.raises(UsageError):
        select([scenario("a")], 3, 2)
    with pytest.raises(ValueError, match="at least 1"):
        shard_of("a.yaml", "a", 0)
