"""Percentiles (linear interpolation), spreads and timestamps."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.stats import Spread, parse_timestamp, percentile, ratio


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, None),
        ([7], 95, 7.0),
        ([1, 2, 3, 4], 50, 2.5),
        ([4, 1, 3, 2], 50, 2.5),
        ([1, 2, 3, 4, 5], 50, 3.0),
        ([10, 20, 30, 40, 50], 95, 48.0),  # rank 3.8: 40 + 0.8 * 10
        (list(range(1, 101)), 95, 95.05),
        ([5, 9], 0, 5.0),
        ([5, 9], 100, 9.0),
    ],
)
def test_percentile_linear(values: list[float], q: float, expected: float | None) -> None:
    got = percentile(values, q)
    assert got == (None if expected is None else pytest.approx(expected))


def test_percentile_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1], 101)


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=50), st.floats(0, 100))
def test_percentile_lies_between_min_and_max(values: list[float], q: float) -> None:
    got = percentile(values, q)
    assert got is not None
    assert min(values) - 1e-6 <= got <= max(values) + 1e-6


def test_spread() -> None:
    s = Spread.of([300.0, 100.0, 200.0])
    assert (s.count, s.min, s.p50, s.max) == (3, 100.0, 200.0, 300.0)
    assert s.p95 == pytest.approx(290.0)
    assert Spread.of([]) == Spread(0, None, None, None, None)


def test_ratio() -> None:
    assert ratio(1, 4) == 0.25
    assert ratio(0, 0) is None


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-26T14:05:12.5Z",
        "2026-11-26T14:05:12.500+00:00",
        "2026-11-26T15:05:12.500000+01:00",
        "2026-11-26T14:05:12.5000001Z",
    ],
)
def test_parse_timestamp_forms(text: str) -> None:
    assert parse_timestamp(text) == datetime(2026, 11, 26, 14, 5, 12, 500000, tzinfo=timezone.utc)


@pytest.mark.parametrize("bad", [None, "", "yesterday", 12])
def test_parse_timestamp_bad(bad: object) -> None:
    assert parse_timestamp(bad) is None
