"""Tests for runner/scenario.py: the scenario file loader."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runner.scenario as scenario_module
from runner.errors import ScenarioError
from runner.scenario import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_NODES,
    Scenario,
    Turn,
    discover,
    load_file,
    load_paths,
)

REPO = Path(__file__).resolve().parent.parent

# Hostile inputs must fail quickly; this bound is generous so that a loaded
# machine does not make the tests flaky, yet catches any blow-up.
FAST = 5.0

LOADERS = ["python"] + (["libyaml"] if yaml.__with_libyaml__ else [])


@pytest.fixture(params=LOADERS)
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test with libyaml's parser and with PyYAML's pure-Python one."""
    chosen = yaml.CSafeLoader if request.param == "libyaml" else yaml.SafeLoader
    monkeypatch.setattr(scenario_module, "_Loader", chosen)
    yield request.param


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def failure(path: Path, line: int | None, field: str | None) -> ScenarioError:
    """Load ``path``, expect a ScenarioError located at ``path:line: field:``."""
    with pytest.raises(ScenarioError) as info:
        load_file(path)
    err = info.value
    where = f"{path}" if line is None else f"{path}:{line}"
    prefix = f"{where}: {field}: " if field else f"{where}: "
    assert str(err).startswith(prefix), str(err)
    assert (err.path, err.line, err.field) == (str(path), line, field)
    assert str(err) == prefix + err.message
    return err


# --------------------------------------------------------------------------- the two forms


def test_single_form_with_every_key(tmp_path: Path) -> None:
    text = (
        "# comment\n"
        "name: full\n"
        "provider: Copilot\n"
        "model: gpt-4o\n"
        "history: server\n"
        "system: You are terse.\n"
        "params: {temperature: 0.5, max_tokens: 10, stop: [x, y], extra: {a: null}}\n"
        "stream_options: {include_usage: true}\n"
        "turns:\n"
        "  - Hello\n"
        "  - user: Second\n"
        "  - |\n"
        "    multi\n"
        "    line\n"
    )
    path = write(tmp_path, "f.yaml", text)
    [sc] = load_file(path)
    assert sc == Scenario(
        name="full",
        file=str(path),
        line=2,
        turns=(Turn("Hello", 10), Turn("Second", 11), Turn("multi\nline\n", 12)),
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        provider="Copilot",
        model="gpt-4o",
        history="server",
        system="You are terse.",
        params={"temperature": 0.5, "max_tokens": 10, "stop": ["x", "y"], "extra": {"a": None}},
        stream_options={"include_usage": True},
    )
    assert isinstance(sc.params["max_tokens"], int)


def test_single_form_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "sub/my-scenario.yaml", "turns: [hi]\n")
    [sc] = load_file(path)
    assert sc.name == "my-scenario"
    assert sc.file == str(path)
    assert (sc.provider, sc.model, sc.history, sc.system) == (None, "", "client", None)
    assert sc.params == {}
    assert sc.stream_options is None
    assert sc.turns == (Turn("hi", 1),)
    hash(sc)  # usable in sets despite its mapping fields


def test_accepts_path_objects_and_strings(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "turns: [hi]\n")
    assert load_file(path) == load_file(str(path))


def test_null_means_not_set(tmp_path: Path) -> None:
    text = "provider: ~\nsystem: null\nstream_options:\nparams:\nturns: [hi]\n"
    [sc] = load_file(write(tmp_path, "n.yaml", text))
    assert (sc.provider, sc.system, sc.stream_options, sc.params) == (None, None, None, {})


def test_multi_form_defaults_merge(tmp_path: Path) -> None:
    text = (
        "defaults:\n"  # 1
        "  model: m1\n"
        "  system: be brief\n"
        "  stream_options: {include_usage: true}\n"
        "  params: {temperature: 0, top_p: 1}\n"  # 5
        "scenarios:\n"
        "  - name: first\n"  # 7
        "    turns: [a]\n"
        "  - name: second\n"  # 9
        "    model: m2\n"
        "    system: ~\n"
        "    params: {temperature: 1, seed: 7}\n"
        "    turns:\n"
        "      - b\n"  # 14
        "      - user: c\n"
    )
    path = write(tmp_path, "multi.yaml", text)
    first, second = load_file(path)
    assert (first.name, first.line, first.model, first.system) == ("first", 7, "m1", "be brief")
    assert first.params == {"temperature": 0, "top_p": 1}
    assert first.stream_options == {"include_usage": True}
    assert (second.name, second.line, second.model, second.system) == ("second", 9, "m2", None)
    assert second.params == {"temperature": 1, "top_p": 1, "seed": 7}
    assert second.turns == (Turn("b", 14), Turn("c", 15))
    assert first.sha256 == second.sha256 == hashlib.sha256(text.encode()).hexdigest()


def test_defaults_are_not_shared_between_scenarios(tmp_path: Path) -> None:
    text = (
        "defaults: {stream_options: {x: [1]}, params: {n: {deep: [1]}}}\n"
        "scenarios: [{name: a, turns: [x]}, {name: b, turns: [y]}]\n"
    )
    a, b = load_file(write(tmp_path, "d.yaml", text))
    assert a.params == b.params
    assert a.stream_options is not None
    a.params["n"]["deep"].append(2)
    a.stream_options["x"].append(2)
    assert b.params == {"n": {"deep": [1]}}
    assert b.stream_options == {"x": [1]}


def test_merge_keys(tmp_path: Path) -> None:
    text = (
        "scenarios:\n"
        "  - &base\n"
        "    name: a\n"
        "    model: m\n"
        "    params: {p: 1}\n"
        "    turns: [x]\n"
        "  - <<: *base\n"
        "    name: b\n"
        "  - name: c\n"
        "    turns: [y]\n"
        "    params:\n"
        "      <<: [{k: first, only1: 1}, {k: second, only2: 2}]\n"
        "      own: 3\n"
        "      only1: explicit\n"
    )
    a, b, c = load_file(write(tmp_path, "m.yaml", text))
    assert (b.name, b.model, b.params, b.turns) == ("b", "m", {"p": 1}, a.turns)
    assert c.params == {"k": "first", "only1": "explicit", "only2": 2, "own": 3}


def test_plain_scalar_types(tmp_path: Path) -> None:
    text = (
        "turns: ['2024-01-01', 2024-01-01]\n"
        "params:\n"
        "  hex: 0x1F\n"
        "  under: 1_000\n"
        "  neg: -3\n"
        "  f: 1.5e3\n"
        "  g: 1e-5\n"
        "  h: -2E+2\n"
        "  i: .5e1\n"
        "  yes_: yes\n"
        "  off_: Off\n"
        "  nothing: ~\n"
        "  quoted: '12'\n"
        "  date: 2024-01-01\n"
        "  explicit: !!str 12\n"
        "  explicit_int: !!int '7'\n"
    )
    [sc] = load_file(write(tmp_path, "t.yaml", text))
    assert [t.user for t in sc.turns] == ["2024-01-01", "2024-01-01"]
    assert sc.params == {
        "hex": 31,
        "under": 1000,
        "neg": -3,
        "f": 1500.0,
        "g": 1e-5,
        "h": -200.0,
        "i": 5.0,
        "yes_": True,
        "off_": False,
        "nothing": None,
        "quoted": "12",
        "date": "2024-01-01",  # timestamps stay text: the request body is JSON
        "explicit": "12",
        "explicit_int": 7,
    }


def test_utf8_bom_and_unicode_text(tmp_path: Path) -> None:
    path = write(tmp_path, "u.yaml", b"\xef\xbb\xbfturns: [\xc3\xa9t\xc3\xa9, \xf0\x9f\x99\x82]\n")
    [sc] = load_file(path)
    assert [t.user for t in sc.turns] == ["été", "\U0001f642"]


def test_name_limits_accept_edge_values(tmp_path: Path) -> None:
    name = "é" * 200
    [sc] = load_file(write(tmp_path, "n.yaml", f"name: '{name}'\nturns: [x]\n"))
    assert sc.name == name
    [sc] = load_file(write(tmp_path, "dots.yaml", "name: '...'\nturns: [x]\n"))
    assert sc.name == "..."


# --------------------------------------------------------------------------- error table

# (file text, line, field, words that must appear in the message)
ERRORS: list[tuple[str, int | None, str | None, tuple[str, ...]]] = [
    # unknown keys, with a suggestion
    ("turns: [a]\nhitsory: server\n", 2, "hitsory", ("unknown key", "did you mean 'history'")),
    ("turns:\n  - usr: hi\n", 2, "turns[0].usr", ("unknown key (allowed: user, expect, capture)",)),
    ("scenarios: [{name: a, turns: [x]}]\nsenarios: 1\n", 2, "senarios", ("unknown key",)),
    ("scenarios:\n  - name: a\n    turn: [x]\n", 3, "scenarios[0].turn", ("did you mean 'turns'",)),
    # wrong types
    ("model: 3\nturns: [a]\n", 1, "model", ("expected a string", "integer '3'", "quotes")),
    ("model:\nturns: [a]\n", 1, "model", ("expected a string, got null",)),
    ("provider: ''\nturns: [a]\n", 1, "provider", ("must not be empty",)),
    ("provider: [a]\nturns: [a]\n", 1, "provider", ("expected a string, got a list",)),
    ("system: {a: 1}\nturns: [a]\n", 1, "system", ("got a mapping",)),
    ("history: sever\nturns: [a]\n", 1, "history", ("'client'", "'server'", "did you mean")),
    ("history: true\nturns: [a]\n", 1, "history", ("boolean",)),
    ("stream_options: [1]\nturns: [a]\n", 1, "stream_options", ("expected a mapping",)),
    ("stream_options: {n: .inf}\nturns: [a]\n", 1, "stream_options.n", ("finite",)),
    ("name: 5\nturns: [a]\n", 1, "name", ("expected a string",)),
    # turns
    ("name: x\n", 1, "turns", ("missing required key 'turns'",)),
    ("turns: []\n", 1, "turns", ("at least one turn",)),
    ("turns:\n", 1, "turns", ("expected a list of turns",)),
    ("turns: hello\n", 1, "turns", ("expected a list of turns",)),
    (
        "turns:\n  - hi\n  - 42\n",
        3,
        "turns[1]",
        ("expected a string or a mapping with 'user', got the integer '42'",),
    ),
    ("turns:\n  - no\n", 2, "turns[0]", ("boolean 'no'", "quotes")),
    ("turns:\n  - [a]\n", 2, "turns[0]", ("expected a string or a mapping with 'user'",)),
    ("turns:\n  - ''\n", 2, "turns[0]", ("must not be empty",)),
    ('turns:\n  - "  \\t "\n', 2, "turns[0]", ("only whitespace",)),
    ('turns:\n  - "\\n"\n', 2, "turns[0]", ("only whitespace",)),
    ("turns:\n  - a\n  - {}\n", 3, "turns[1]", ("missing required key 'user'",)),
    ("turns:\n  - user: 1.5\n", 2, "turns[0].user", ("expected a string",)),
    ("turns:\n  - user: ' '\n", 2, "turns[0].user", ("must not be empty",)),
    # params
    ("params: [1]\nturns: [a]\n", 1, "params", ("expected a mapping of extra request-body",)),
    ("turns: [a]\nparams:\n  messages: []\n", 3, "params.messages", ("'messages'",)),
    ("turns: [a]\nparams:\n  stream: false\n", 3, "params.stream", ("'stream'",)),
    ("turns: [a]\nparams: {conversation_id: x}\n", 2, "params.conversation_id", ("runner",)),
    ("turns: [a]\nparams: {model: x}\n", 2, "params.model", ("'model:' key",)),
    ("turns: [a]\nparams:\n  1: x\n", 3, "params", ("keys must be strings", "integer '1'")),
    ("turns: [a]\nparams: {a: {null: x}}\n", 2, "params.a", ("keys must be strings", "null")),
    ("turns: [a]\nparams: {t: .nan}\n", 2, "params.t", ("not a finite number",)),
    ("turns: [a]\nparams: {t: -.inf}\n", 2, "params.t", ("not a finite number",)),
    ("turns: [a]\nparams: {t: !!int abc}\n", 2, "params.t", ("not a valid !!int",)),
    ("turns: [a]\nparams: {t: !!int ''}\n", 2, "params.t", ("not a valid !!int",)),
    ("turns: [a]\nparams: {t: !!float x}\n", 2, "params.t", ("not a valid !!float",)),
    ("turns: [a]\nparams: {t: !!bool maybe}\n", 2, "params.t", ("not a valid !!bool",)),
    ("turns: [a]\nparams: {t: [1, {u: 2, 3: v}]}\n", 2, "params.t[1]", ("keys must be",)),
    ("turns: [a]\nparams: {a-b: [.nan]}\n", 2, "params['a-b'][0]", ("finite",)),
    # keys of the wrong type, duplicates
    ("1: a\nturns: [a]\n", 1, None, ("keys must be strings, got the integer '1'",)),
    ("true: a\nturns: [a]\n", 1, None, ("keys must be strings, got the boolean 'true'",)),
    ("~: a\nturns: [a]\n", 1, None, ("keys must be strings, got null",)),
    ("? [a]\n: b\n", 1, None, ("keys must be strings, got a list",)),
    ("{a: 1}: b\n", 1, None, ("keys must be strings, got a mapping",)),
    ("turns: [a]\nmodel: x\nmodel: y\n", 3, "model", ("duplicate key 'model' (first at line 2)",)),
    # top level
    ("- a\n", 1, None, ("expected a mapping at the top", "got a list")),
    ("hello\n", 1, None, ("expected a mapping at the top", "the string 'hello'")),
    ("42\n", 1, None, ("expected a mapping at the top", "integer")),
    ("", None, None, ("no YAML document",)),
    ("# only a comment\n\n", None, None, ("no YAML document",)),
    ("turns: [a]\n---\nturns: [b]\n", 2, None, ("more than one YAML document",)),
    # YAML syntax, with the parser's line
    ("name: x\nturns: [a\nmodel: b\n", 3, None, ("YAML syntax error",)),
    ("turns:\n  - a\n - b\n", 3, None, ("YAML syntax error",)),
    ("a: b\n  c: d\n", 2, None, ("YAML syntax error", "mapping values are not allowed")),
    ("x: 'abc\n", 2, None, ("YAML syntax error", "quoted scalar")),
    ("\tturns: [a]\n", 1, None, ("YAML syntax error",)),
    # the two forms
    ("turns: [a]\nscenarios: [{name: a, turns: [x]}]\n", 1, "turns", ("cannot sit beside",)),
    ("defaults: {model: x}\nmodel: y\n", 2, "model", ("cannot sit beside",)),
    ("defaults: {model: x}\n", 1, None, ("missing required key 'scenarios'",)),
    ("defaults: [1]\nscenarios: [{name: a, turns: [x]}]\n", 1, "defaults", ("mapping",)),
    ("defaults:\n  name: x\nscenarios: [{name: a, turns: [x]}]\n", 2, "defaults.name", ()),
    ("defaults:\n  turns: [x]\nscenarios: [{name: a, turns: [x]}]\n", 2, "defaults.turns", ()),
    ("defaults:\n  model: 1\nscenarios: [{name: a, turns: [x]}]\n", 2, "defaults.model", ()),
    ("defaults:\n  histry: x\nscenarios: [{name: a, turns: [x]}]\n", 2, "defaults.histry", ()),
    ("scenarios: {name: a}\n", 1, "scenarios", ("expected a list of scenario mappings",)),
    ("scenarios: []\n", 1, "scenarios", ("at least one scenario",)),
    ("scenarios:\n  - just text\n", 2, "scenarios[0]", ("expected a scenario mapping",)),
    ("scenarios:\n  - turns: [a]\n", 2, "scenarios[0].name", ("missing required key 'name'",)),
    ("scenarios:\n  - name: a\n", 2, "scenarios[0].turns", ("missing required key 'turns'",)),
    (
        "scenarios:\n  - {name: a, turns: [x]}\n  - {name: b, turns: [x]}\n"
        "  - name: c\n    turns: [x]\n    history: both\n",
        6,
        "scenarios[2].history",
        ("must be 'client'",),
    ),
    (
        "scenarios:\n  - {name: a, turns: [x]}\n  - {name: b, turns: [' ']}\n",
        3,
        "scenarios[1].turns[0]",
        ("must not be empty",),
    ),
    (
        "scenarios:\n  - name: same\n    turns: [x]\n  - name: same\n    turns: [y]\n",
        4,
        "name",
        ("duplicate scenario name 'same' (first defined at ",),
    ),
    # scenario names
    ("name: ''\nturns: [a]\n", 1, "name", ("must not be empty",)),
    ("name: '   '\nturns: [a]\n", 1, "name", ("must not be empty",)),
    (f"name: {'x' * 201}\nturns: [a]\n", 1, "name", ("201 characters", "limit is 200")),
    ('name: "a\\0b"\nturns: [a]\n', 1, "name", ("NUL",)),
    ("name: a/b\nturns: [a]\n", 1, "name", ("'/' or '\\'",)),
    ("name: 'a\\b'\nturns: [a]\n", 1, "name", ("'/' or '\\'",)),
    ("name: .\nturns: [a]\n", 1, "name", ("'.' or '..'",)),
    ("name: ..\nturns: [a]\n", 1, "name", ("'.' or '..'",)),
    ('name: "two\\nlines"\nturns: [a]\n', 1, "name", ("control characters",)),
    # tags outside the core schema: never constructed
    ("turns: [a]\nparams: !!python/object/apply:os.system [echo]\n", 2, None, ("!!python",)),
    ("turns: [!!python/name:os.system a]\n", 1, None, ("!!python/name:os.system",)),
    ("turns: [a]\nparams: {x: !!python/object:os.Foo {a: 1}}\n", 2, None, ("!!python",)),
    ("turns: [!custom a]\n", 1, None, ("tag !custom is not allowed",)),
    ("turns: [a]\nparams: {x: !!binary aGk=}\n", 2, None, ("!!binary",)),
    ("turns: [a]\nparams: {x: !!timestamp 2024-01-01}\n", 2, None, ("!!timestamp",)),
    ("turns: [a]\nparams: !!set {a: null}\n", 2, None, ("!!set",)),
    ("turns: [a]\nparams: !!str {a: 1}\n", 2, None, ("!!str is not allowed on a mapping",)),
    ("turns: !!map [a]\n", 1, None, ("!!map is not allowed on a sequence",)),
    ("turns: [a]\nparams: {x: !<tag:example.com:x> 1}\n", 2, None, ("tag:example.com:x",)),
    ("%TAG !e! tag:example.com:\n---\nturns: [!e!x a]\n", 3, None, ("tag:example.com:x",)),
    # anchors, aliases and merges
    ("turns: [*a]\n", 1, None, ("alias *a has no anchor",)),
    ("turns: [a]\nparams: &a {x: *a}\n", 2, None, ("refers to a node that contains it",)),
    ("turns: [a]\nparams:\n  a: &r [1, [*r]]\n", 3, None, ("refers to a node that contains",)),
    ("turns: [&a x, &a y]\n", 1, None, ("anchor &a is defined twice",)),
    ("<<: 3\nturns: [a]\n", 1, None, ("'<<' merges mappings",)),
    ("turns: [a]\nparams:\n  <<: [{a: 1}, [2]]\n", 3, "params", ("'<<' merges mappings",)),
    ("turns: [a]\nparams: {x: <<}\n", 2, "params.x", ("merge key",)),
    # numbers too long to convert cheaply
    ("turns: [a]\nparams: {x: " + "9" * 101 + "}\n", 2, "params.x", ("longer than 100",)),
]


@pytest.mark.parametrize(("text", "line", "field", "words"), ERRORS)
def test_errors(
    tmp_path: Path,
    loader: str,
    text: str,
    line: int | None,
    field: str | None,
    words: tuple[str, ...],
) -> None:
    err = failure(write(tmp_path, "case.yaml", text), line, field)
    for word in words:
        assert word in err.message, err.message


def test_numbers_at_the_length_limit_are_accepted(tmp_path: Path) -> None:
    [sc] = load_file(write(tmp_path, "n.yaml", "turns: [a]\nparams: {x: " + "9" * 100 + "}\n"))
    assert sc.params["x"] == int("9" * 100)


def test_name_taken_from_file_name_is_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "..yaml", "turns: [a]\n")
    err = failure(path, 1, "name")
    assert "'.'" in err.message
    assert "taken from the file name" in err.message


def test_non_utf8_names_the_line(tmp_path: Path, loader: str) -> None:
    path = write(tmp_path, "l.yaml", "name: x\nturns:\n  - caf\xe9\n".encode("latin-1"))
    err = failure(path, 3, None)
    assert "not UTF-8" in err.message
    assert "0xe9" in err.message


def test_utf16_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "w.yaml", "turns: [a]\n".encode("utf-16"))
    err = failure(path, 1, None)
    assert "not UTF-8" in err.message


def test_control_characters_name_the_line(tmp_path: Path, loader: str) -> None:
    path = write(tmp_path, "c.yaml", b"name: x\nturns:\n  - a\x07b\n")
    err = failure(path, 3, None)
    assert "U+0007" in err.message


def test_unreadable_paths(tmp_path: Path) -> None:
    failure(tmp_path / "missing.yaml", None, None)
    err = failure(tmp_path, None, None)
    assert "is a directory" in err.message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.yaml"
    os.mkfifo(pipe)
    err = failure(pipe, None, None)
    assert "not a regular file" in err.message
    with pytest.raises(ScenarioError, match="not a regular file"):
        discover([pipe])


# --------------------------------------------------------------------------- hostile input


def load_timed(path: Path) -> ScenarioError:
    started = time.monotonic()
    with pytest.raises(ScenarioError) as info:
        load_file(path)
    assert time.monotonic() - started < FAST
    return info.value


def test_huge_file_fails_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as handle:
        handle.write(b"turns: [a]\n")
        handle.truncate(50 * 1024 * 1024)
    err = load_timed(path)
    assert (err.path, err.line) == (str(path), None)
    assert "52,428,800 bytes" in err.message
    assert "1 MiB" in err.message


def test_size_cap_holds_when_stat_lies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that grows after stat (or reports size 0) is still read only up to the cap."""
    path = write(tmp_path, "grow.yaml", b"#" * (3 * MAX_FILE_BYTES))
    real = os.stat(path)
    lying = os.stat_result((real.st_mode, *real[1:6], 0, *real[7:10]))
    read_sizes: list[int] = []

    class Os:
        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        @staticmethod
        def stat(target: Any) -> os.stat_result:
            return lying if os.fspath(target) == str(path) else os.stat(target)

    class Counting:
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def read(self, size: int = -1) -> bytes:
            data: bytes = self.handle.read(size)
            read_sizes.append(len(data))
            return data

    monkeypatch.setattr(scenario_module, "os", Os())

    def counting_open(target: str, mode: str) -> Counting:
        return Counting(open(target, mode))

    monkeypatch.setattr(scenario_module, "open", counting_open, raising=False)
    err = failure(path, None, None)
    assert "larger than 1 MiB" in err.message
    assert sum(read_sizes) == MAX_FILE_BYTES + 1


def test_file_at_the_cap_is_parsed(tmp_path: Path) -> None:
    body = b"turns: [a]\n"
    path = write(tmp_path, "cap.yaml", body + b"#" * (MAX_FILE_BYTES - len(body)))
    assert os.path.getsize(path) == MAX_FILE_BYTES
    assert len(load_file(path)) == 1


def laughs(levels: int, width: int = 10) -> str:
    lines = [
        "turns: [a]",
        "params:",
        "  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]",
    ]
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * width)
        lines.append(f"  l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


def test_billion_laughs(tmp_path: Path, loader: str) -> None:
    err = load_timed(write(tmp_path, "lol.yaml", laughs(9)))
    assert "alias" in err.message
    assert f"{MAX_NODES:,}" in err.message
    assert err.field is not None and err.field.startswith("params.l")


def test_laughs_through_stream_options_and_merges(tmp_path: Path) -> None:
    text = laughs(9).replace("params:", "stream_options:")
    err = load_timed(write(tmp_path, "so.yaml", text))
    assert "alias" in err.message
    merges = ["turns: [a]", "params:", "  m0: &m0 {a: 1, b: 2, c: 3}"]
    for level in range(1, 12):
        refs = ", ".join([f"*m{level - 1}"] * 10)
        merges.append(f"  m{level}: &m{level} {{<<: [{refs}], k{level}: 1}}")
    err = load_timed(write(tmp_path, "merge.yaml", "\n".join(merges) + "\n"))
    assert "alias" in err.message


def test_small_alias_use_is_fine(tmp_path: Path) -> None:
    [sc] = load_file(write(tmp_path, "ok.yaml", laughs(3)))
    assert len(sc.params["l2"]) == 10
    assert sc.params["l2"][0] == [["lol"] * 10] * 10
    assert sc.params["l2"][0] is not sc.params["l2"][1]  # aliases become copies


@pytest.mark.parametrize(
    "text",
    [
        "turns: " + "[" * 1_000_000,
        "turns: [a]\nparams: {x: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "}\n",
        "turns: [a]\nparams:\n  x:\n    " + "- " * (MAX_DEPTH + 5) + "a\n",
        "turns: [a]\nparams:\n"
        + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(MAX_DEPTH + 5))
        + "  " * (MAX_DEPTH + 6)
        + "end\n",
    ],
    ids=["flow-1M", "flow", "block-sequence", "block-mapping"],
)
def test_deep_nesting(tmp_path: Path, loader: str, text: str) -> None:
    if loader == "python" and len(text) > 100_000:
        pytest.skip("the pure-Python parser is slow on a whole MiB; libyaml covers it")
    err = load_timed(write(tmp_path, "deep.yaml", text))
    assert "nesting" in err.message
    assert err.line is not None


def test_nesting_at_the_limit_is_accepted(tmp_path: Path) -> None:
    depth = MAX_DEPTH - 2  # the top mapping and the params mapping take two levels
    text = "turns: [a]\nparams: {x: " + "[" * depth + "]" * depth + "}\n"
    [sc] = load_file(write(tmp_path, "ok.yaml", text))
    value = sc.params["x"]
    for _ in range(depth - 1):
        value = value[0]
    assert value == []


def test_deep_alias_chains(tmp_path: Path, loader: str) -> None:
    lines = ["turns: [a]", "params:", "  a0: &a0 [1]"]
    lines += [f"  a{i}: &a{i} [*a{i - 1}]" for i in range(1, 200)]
    err = load_timed(write(tmp_path, "chain.yaml", "\n".join(lines) + "\n"))
    assert "nesting deeper" in err.message
    assert err.field is not None and len(err.field) < 130
    merges = ["turns: [a]", "params:", "  m0: &m0 {x: 1}"]
    merges += [f"  m{i}: &m{i} {{<<: *m{i - 1}}}" for i in range(1, 200)]
    err = load_timed(write(tmp_path, "merges.yaml", "\n".join(merges) + "\n"))
    assert "merge keys nest deeper" in err.message


def test_too_many_nodes(tmp_path: Path) -> None:
    err = load_timed(write(tmp_path, "wide.yaml", "turns: [" + "a, " * (MAX_NODES + 10) + "]\n"))
    assert f"{MAX_NODES:,} YAML nodes" in err.message
    keys = "".join(f"k{i}: 1\n" for i in range(MAX_NODES // 2 + 10))
    err = load_timed(write(tmp_path, "keys.yaml", "turns: [a]\n" + keys))
    assert f"{MAX_NODES:,} YAML nodes" in err.message


def test_binary_junk(tmp_path: Path, loader: str) -> None:
    err = load_timed(write(tmp_path, "junk.yaml", bytes(range(256)) * 2000))
    assert err.line == 2  # the first byte that is not UTF-8 follows 0x0a
    assert "not UTF-8 text (byte 0x80" in err.message
    err = load_timed(write(tmp_path, "ascii.yaml", b"turns: [a]\n" + bytes(range(128)) * 2000))
    assert err.line == 2
    assert "U+0000" in err.message
    err = load_timed(write(tmp_path, "high.yaml", bytes(range(128, 256)) * 100))
    assert "not UTF-8" in err.message
    err = load_timed(write(tmp_path, "png.yaml", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100))
    assert "not UTF-8" in err.message


def test_long_text_is_fine(tmp_path: Path) -> None:
    text = "x" * (MAX_FILE_BYTES - 100)
    [sc] = load_file(write(tmp_path, "long.yaml", f"turns: ['{text}']\n"))
    assert sc.turns[0].user == text


# --------------------------------------------------------------------------- discovery


def test_discover_walks_sorted_and_recursively(tmp_path: Path) -> None:
    for name in ["b.yaml", "a.yml", "sub/c.yaml", "sub/deeper/a.YAML", "a/z.yaml", "notes.txt"]:
        write(tmp_path, name, "turns: [x]\n")
    write(tmp_path, ".hidden/h.yaml", "turns: [x]\n")
    write(tmp_path, ".h.yaml", "turns: [x]\n")
    found = discover([tmp_path])
    relative = [p.relative_to(tmp_path).as_posix() for p in found]
    assert relative == ["a/z.yaml", "a.yml", "b.yaml", "sub/c.yaml", "sub/deeper/a.YAML"]
    assert all(str(p).startswith(str(tmp_path)) for p in found)


def test_discover_keeps_argument_order_and_drops_repeats(tmp_path: Path) -> None:
    one = write(tmp_path, "z/one.yaml", "turns: [x]\n")
    two = write(tmp_path, "a/two.yml", "turns: [x]\n")
    odd = write(tmp_path, "explicit.txt", "turns: [x]\n")
    assert discover([one.parent, odd, two.parent, one, str(two)]) == [one, odd, two]


def test_discover_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        discover([tmp_path / "nope"])
    assert str(info.value) == f"{tmp_path / 'nope'}: no such file or directory"
    write(tmp_path, "empty/readme.txt", "hi")
    with pytest.raises(ScenarioError) as info:
        discover([tmp_path / "empty"])
    assert str(info.value).startswith(f"{tmp_path / 'empty'}: directory holds no *.yaml")


def test_load_paths_rejects_duplicate_names_across_files(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "name: x\nturns: [hi]\n")
    b = write(tmp_path, "b.yaml", "# another\n\nname: x\nturns: [hi]\n")
    with pytest.raises(ScenarioError) as info:
        load_paths([tmp_path])
    assert str(info.value) == (f"{b}:3: name: duplicate scenario name 'x' (first defined at {a}:1)")
    assert len(load_paths([a])) == 1


def test_load_paths_rejects_names_differing_in_case(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "name: Heiner\nturns: [hi]\n")
    b = write(
        tmp_path,
        "b.yaml",
        "scenarios:\n  - name: other\n    turns: [x]\n  - name: heiner\n    turns: [x]\n",
    )
    with pytest.raises(ScenarioError) as info:
        load_paths([tmp_path])
    assert (info.value.path, info.value.line, info.value.field) == (str(b), 4, "name")
    assert "differs only in case from 'Heiner'" in info.value.message


def test_load_paths_default_names_collide(tmp_path: Path) -> None:
    write(tmp_path, "one/same.yaml", "turns: [hi]\n")
    write(tmp_path, "two/same.yml", "turns: [hi]\n")
    with pytest.raises(ScenarioError, match="duplicate scenario name 'same'"):
        load_paths([tmp_path])


def test_load_paths_loads_in_discovery_order(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", "scenarios: [{name: b1, turns: [x]}, {name: b2, turns: [x]}]\n")
    write(tmp_path, "a.yaml", "turns: [x]\n")
    write(tmp_path, "c/c.yaml", "turns: [x]\n")
    assert [s.name for s in load_paths([tmp_path])] == ["a", "b1", "b2", "c"]


def test_load_paths_reports_the_first_bad_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "turns: [x]\n")
    bad = write(tmp_path, "b.yaml", "turns: [x]\nhistory: nope\n")
    with pytest.raises(ScenarioError) as info:
        load_paths([tmp_path])
    assert (info.value.path, info.value.line, info.value.field) == (str(bad), 2, "history")


# --------------------------------------------------------------------------- properties


def _expect_scenarios_or_error(path: Path) -> None:
    try:
        result = load_file(path)
    except ScenarioError as err:
        assert str(err).startswith(str(path))
        return
    assert result and all(isinstance(s, Scenario) for s in result)


_FRAGMENTS = [
    "name: ", "turns:", "params:", "scenarios:", "defaults:", "history: ", "stream_options:",
    "user: ", "- ", "  ", "    ", "\n", ": ", "[", "]", "{", "}", ", ", "&a ", "*a", "&b ",
    "*b", "<<: ", "!!str ", "!!int ", "!!python/none ", "! ", "? ", "'", '"', "|\n", ">-\n",
    "---\n", "...\n", "#", "x", "42", "0x1f", ".inf", "~", "null", "yes", "\t", "\\", "é",
    "\x00", "\x85", "\ufeff", "2024-01-01", "%TAG ! tag:x:\n", "model", "client", "server",
]  # fmt: skip


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=400))
def test_any_text_gives_scenarios_or_scenario_error(tmp_path: Path, text: str) -> None:
    _expect_scenarios_or_error(write(tmp_path, "fuzz.yaml", text))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=400))
def test_any_bytes_give_scenarios_or_scenario_error(tmp_path: Path, data: bytes) -> None:
    _expect_scenarios_or_error(write(tmp_path, "fuzz.yaml", data))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(parts=st.lists(st.sampled_from(_FRAGMENTS), max_size=60))
def test_yaml_like_text_gives_scenarios_or_scenario_error(tmp_path: Path, parts: list[str]) -> None:
    _expect_scenarios_or_error(write(tmp_path, "fuzz.yaml", "".join(parts)))


_names = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"], exclude_characters="/\\"),
    min_size=1,
    max_size=40,
).filter(lambda n: n.strip() and n not in (".", ".."))
_texts = st.text(min_size=1, max_size=80).filter(str.strip)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats(allow_nan=False,
    allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
    max_size=4),
    max_leaves=12,
)  # fmt: skip


class _Dumper(yaml.SafeDumper):
    """Quotes strings like 1e5, which the loader reads as numbers (YAML 1.2)."""


_Dumper.add_implicit_resolver(
    "tag:yaml.org,2002:float", scenario_module._EXPONENT, list("-+.0123456789")
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=_names,
    turns=st.lists(_texts | st.builds(lambda t: {"user": t}, _texts), min_size=1, max_size=4),
    params=st.dictionaries(
        st.text(max_size=10).filter(lambda k: k not in scenario_module._OWNED_PARAMS),
        _json,
        max_size=4,
    ),
    history=st.sampled_from(["client", "server"]),
    system=st.none() | st.text(max_size=40),
)
def test_dumped_scenarios_load_back(
    tmp_path: Path,
    name: str,
    turns: list[Any],
    params: dict[str, Any],
    history: str,
    system: str | None,
) -> None:
    document = {"name": name, "history": history, "params": params, "turns": turns}
    if system is not None:
        document["system"] = system
    # ASCII output: PyYAML's emitter writes U+0085 raw, which YAML reads as a line break.
    text = yaml.dump(document, Dumper=_Dumper)
    [sc] = load_file(write(tmp_path, "round.yaml", text))
    assert sc.name == name
    assert sc.history == history
    assert sc.system == system
    assert sc.params == params
    assert [t.user for t in sc.turns] == [t if isinstance(t, str) else t["user"] for t in turns]


# --------------------------------------------------------------------------- bundled examples


def test_bundled_scenarios_load() -> None:
    scenarios = load_paths([REPO / "scenarios"])
    by_name = {s.name: s for s in scenarios}
    assert {"heiner", "terse_assistant"} <= set(by_name)
    assert len(scenarios) >= 5
    heiner = by_name["heiner"]
    assert (heiner.provider, heiner.model, heiner.history) == ("Copilot", "", "server")
    assert [t.user for t in heiner.turns] == [
        "Hello, i am Heiner. How are you?",
        "Tell me somethings about my name",
    ]
    assert [s.name for s in scenarios if s.provider is not None] == ["heiner"]
    terse = by_name["terse_assistant"]
    assert terse.system and terse.history == "client" and len(terse.turns) == 3
    assert terse.params == {"temperature": 0}
    suite = [s for s in scenarios if Path(s.file).name == "suite.yaml"]
    assert 2 <= len(suite) <= 3


def test_import_is_light() -> None:
    code = (
        "import sys, runner.scenario; "
        "heavy = {'requests', 'urllib3', 'tenacity', 'tqdm', 'difflib'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- expectations


def test_expect_capture_and_expect_all_turns_load(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        (
            "name: c\n"
            "expect_all_turns:\n"
            "  - max_chars: 500\n"
            "turns:\n"
            "  - user: first\n"
            "    expect:\n"
            "      - contains: a\n"
            "      - regex: {pattern: '^x', flags: i}\n"
            "    capture:\n"
            "      word: 'said: (\\w+)'\n"
            "  - user: 'about {word} and {{literal}}'\n"
        ),
    )
    (sc,) = load_file(path)
    assert [c.name for c in sc.turns[0].expect] == ["contains", "regex"]
    assert [name for name, _ in sc.turns[0].capture] == ["word"]
    assert [c.name for c in sc.expect_all_turns] == ["max_chars"]
    assert sc.templated


def test_braces_are_literal_without_captures(tmp_path: Path) -> None:
    (sc,) = load_file(write(tmp_path, "c.yaml", "turns: ['reply with {\"a\": 1}']\n"))
    assert not sc.templated and sc.turns[0].user == 'reply with {"a": 1}'


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        (
            "turns:\n  - user: a\n    expect:\n      - contains: x\n      - contanis: y\n",
            5,
            "turns[0].expect[1]",
            "did you mean 'contains'",
        ),
        (
            "turns:\n  - user: a\n    expect:\n      - regex: '(unclosed'\n",
            4,
            "turns[0].expect[0]",
            "regex",
        ),
        ("turns:\n  - user: a\n    expect: {contains: x}\n", 3, "turns[0].expect", "list"),
        (
            "turns:\n  - user: a\n    capture:\n      n: 'no group'\n",
            4,
            "turns[0].capture.n",
            "exactly one",
        ),
        (
            "expect_all_turns:\n  - min_chars: -1\nturns: [a]\n",
            2,
            "expect_all_turns[0]",
            "min_chars",
        ),
        (
            "turns:\n  - user: a\n    capture: {n: '(x)'}\n  - user: 'b {m}'\n",
            4,
            "turns[1].user",
            "no earlier turn captured 'm'",
        ),
    ],
)
def test_expectation_errors_name_file_line_field(
    tmp_path: Path, text: str, line: int, field: str, words: str
) -> None:
    path = write(tmp_path, "x.yaml", text)
    with pytest.raises(ScenarioError) as info:
        load_file(path)
    err = info.value
    assert (err.line, err.field) == (line, field), str(err)
    assert words in err.message
