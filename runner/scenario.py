"""Scenario files: find them, parse them, validate them.

A scenario file is YAML written by a person, so it is treated as untrusted
input and checked completely before anything is sent. Two forms exist::

    # one scenario per file
    name: heiner
    turns:
      - Hello, i am Heiner. How are you?
      - user: Tell me somethings about my name

    # several scenarios sharing defaults
    defaults: {model: gpt-4o-mini, params: {temperature: 0}}
    scenarios:
      - {name: a, turns: [Hi]}
      - {name: b, model: other, turns: [Hello]}

Every failure is a :class:`~runner.errors.ScenarioError` whose ``str()`` is
``path:line: field: message``; only the first error of a file is reported.

The file is parsed at the event level (PyYAML's safe parser, the libyaml one
when available) and values are built here, node by node, so that every value
keeps its line and nothing is ever constructed from a tag. Only the YAML core
tags are accepted (str, int, float, bool, null, seq, map and the ``<<`` merge
key); a plain scalar that YAML 1.1 would read as a timestamp stays a string.

Bounds on hostile input, per file (time and memory stay linear in the capped
size):

- at most ``MAX_FILE_BYTES`` (1 MiB): the size is checked with ``stat`` and at
  most ``MAX_FILE_BYTES + 1`` bytes are ever read;
- UTF-8 text without control characters (binary junk stops there);
- at most ``MAX_NODES`` (100,000) nodes while parsing, and at most
  ``MAX_NODES`` node visits while building values, where an alias counts again
  each time it is followed (so alias bombs stop early);
- at most ``MAX_DEPTH`` (50) levels of nesting, while parsing and again while
  following aliases and merge keys; recursive aliases are rejected;
- numbers of at most ``MAX_NUMBER_CHARS`` (100) characters, since converting
  long digit strings is quadratic.
"""

from __future__ import annotations

import codecs
import copy
import hashlib
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.constructor import SafeConstructor

from runner.checks import (
    Check,
    CheckSpecError,
    TemplateError,
    parse_captures,
    parse_checks,
    render_user,
)
from runner.errors import ScenarioError

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # PyYAML built without libyaml: same events, slower
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "Scenario",
    "Turn",
    "discover",
    "load_file",
    "load_paths",
]

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 50
MAX_NUMBER_CHARS = 100
MAX_NAME_CHARS = 200

YAML_SUFFIXES = (".yaml", ".yml")
HISTORY_MODES = ("client", "server")


@dataclass(frozen=True)
class Turn:
    """One user message of a scenario."""

    user: str
    line: int  # 1-based line of the turn in its file
    expect: tuple[Check, ...] = ()  # checks on this turn's reply
    capture: tuple[tuple[str, re.Pattern[str]], ...] = ()  # name -> one-group regex


@dataclass(frozen=True)
class Scenario:
    """One scripted dialogue, validated."""

    name: str
    file: str  # path as given or as discovered
    line: int  # 1-based line where this scenario starts
    turns: tuple[Turn, ...]
    sha256: str  # hex digest of the file's bytes
    provider: str | None = None
    model: str = ""
    history: str = "client"  # "client" | "server"
    system: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)  # plain JSON values
    stream_options: Mapping[str, Any] | None = field(default=None, hash=False)
    expect_all_turns: tuple[Check, ...] = ()  # checks on every turn's reply

    @property
    def templated(self) -> bool:
        """User text holds ``{name}`` placeholders only in scenarios that capture values."""
        return any(turn.capture for turn in self.turns)


# --------------------------------------------------------------------------- discovery


def discover(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and directories into the list of scenario files to load.

    A file is taken as given, whatever its suffix. A directory is walked
    recursively for ``*.yaml`` and ``*.yml`` files, skipping names that start
    with a dot and not following symlinked subdirectories; its files come
    sorted. Paths keep the form they were given in; a file reached twice is
    listed once, where it was first reached.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = _walk(path)
            if not files:
                raise ScenarioError(
                    "directory holds no *.yaml or *.yml file; give a scenario file or "
                    "a directory that contains some",
                    path=str(given),
                )
        elif path.is_file():
            files = [path]
        elif path.exists():
            raise ScenarioError(
                "not a regular file or directory; give a scenario file", path=str(given)
            )
        else:
            raise ScenarioError("no such file or directory", path=str(given))
        for file in files:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                found.append(file)
    return found


def _walk(root: Path) -> list[Path]:
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith(".") and name.lower().endswith(YAML_SUFFIXES):
                file = Path(folder, name)
                if file.is_file():
                    files.append(file)
    return sorted(files)


# --------------------------------------------------------------------------- loading


def load_paths(paths: Sequence[str | os.PathLike[str]]) -> list[Scenario]:
    """Discover and load every scenario, rejecting a name used twice in the run."""
    scenarios: list[Scenario] = []
    for file in discover(paths):
        scenarios.extend(load_file(file))
    _check_unique(scenarios)
    return scenarios


def load_file(path: str | os.PathLike[str]) -> list[Scenario]:
    """Load and validate one scenario file; raise ScenarioError on the first problem."""
    shown = os.fspath(path)
    data = _read(shown)
    text = _decode(data, shown)
    root = _compose(text, shown)
    ctx = _Context(shown, hashlib.sha256(data).hexdigest())
    if root is None:
        ctx.fail(
            "the file holds no YAML document; write a mapping with 'turns:' "
            "(or 'defaults:' and 'scenarios:')",
            line=None,
        )
    scenarios = _build_file(root, ctx, Path(shown).stem)
    _check_unique(scenarios)
    return scenarios


def _check_unique(scenarios: Iterable[Scenario]) -> None:
    # Names become file names, so two names differing only in case would
    # collide on case-insensitive file systems.
    first: dict[str, Scenario] = {}
    for scenario in scenarios:
        earlier = first.setdefault(scenario.name.casefold(), scenario)
        if earlier is scenario:
            continue
        where = f"first defined at {earlier.file}:{earlier.line}"
        if earlier.name == scenario.name:
            message = f"duplicate scenario name {scenario.name!r} ({where})"
        else:
            message = (
                f"scenario name {scenario.name!r} differs only in case from "
                f"{earlier.name!r} ({where}); names become file names, so make them distinct"
            )
        raise ScenarioError(message, path=scenario.file, line=scenario.line, field="name")


def _read(path: str) -> bytes:
    limit = f"scenario files may be at most {MAX_FILE_BYTES:,} bytes (1 MiB)"
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise ScenarioError("is a directory; give a scenario file", path=path)
        if not stat.S_ISREG(info.st_mode):
            raise ScenarioError("not a regular file; give a scenario file", path=path)
        if info.st_size > MAX_FILE_BYTES:
            raise ScenarioError(f"file is {info.st_size:,} bytes; {limit}", path=path)
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ScenarioError("no such file", path=path) from None
    except OSError as exc:
        raise ScenarioError(f"cannot read the file: {exc.strerror or exc}", path=path) from exc
    if len(data) > MAX_FILE_BYTES:
        raise ScenarioError(f"file is larger than 1 MiB; {limit}", path=path)
    return data


# Characters YAML does not allow in a stream (YAML 1.1, section 5.1), as PyYAML's
# reader checks them; checked here too so the message has a line.
_NON_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


def _decode(data: bytes, path: str) -> str:
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} cannot be decoded); "
            "save the file as UTF-8",
            path=path,
            line=data.count(b"\n", 0, exc.start) + 1,
        ) from None
    bad = _NON_PRINTABLE.search(text)
    if bad is not None:
        raise ScenarioError(
            f"control character U+{ord(bad.group()):04X} is not allowed in YAML text "
            "(is this a binary file?); remove it or write it as an escape in a "
            'double-quoted string ("\\t", "\\u0007")',
            path=path,
            line=text.count("\n", 0, bad.start()) + 1,
        )
    return text


# --------------------------------------------------------------------------- YAML nodes

_TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
SEQ, MAP, MERGE = _TAG + "seq", _TAG + "map", _TAG + "merge"
_SCALAR_TAGS = frozenset({STR, INT, FLOAT, BOOL, NULL, MERGE})

# PyYAML's implicit resolvers restricted to the core types: timestamps and the
# odd YAML 1.1 "value"/"yaml" types stay plain strings. YAML 1.1 reads 1e-5 and
# 1.5e3 as strings (its exponent needs a dot and a sign); request parameters
# want numbers, so the YAML 1.2 exponent form is a float too.
_IMPLICIT: dict[str | None, list[tuple[str, re.Pattern[str]]]] = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag in _SCALAR_TAGS]
    for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
}
_EXPONENT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
for _first in "-+.0123456789":
    _IMPLICIT.setdefault(_first, []).insert(0, (FLOAT, _EXPONENT))

_SCALAR, _SEQUENCE, _MAPPING = "scalar", "sequence", "mapping"


class _Node:
    """A composed YAML node: a scalar's text or a collection's children, plus its line.

    A mapping's ``items`` are flat: key, value, key, value, ...
    """

    __slots__ = ("items", "kind", "line", "tag", "text")

    def __init__(self, kind: str, tag: str, line: int, text: str = "") -> None:
        self.kind = kind
        self.tag = tag
        self.line = line
        self.text = text
        self.items: list[_Node] = []


def _short(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _compose(text: str, path: str) -> _Node | None:
    """Turn parser events into a node graph, bounding size and depth as it goes."""
    root: list[_Node] = []
    stack: list[tuple[_Node, str | None]] = []  # open collections and their anchors
    anchors: dict[str, _Node] = {}
    opened: set[str] = set()  # anchors of open collections: aliasing one would recurse
    count = 0
    documents = 0

    def fail(message: str, event: Any) -> NoReturn:
        raise ScenarioError(message, path=path, line=event.start_mark.line + 1)

    def add(node: _Node) -> None:
        if stack:
            stack[-1][0].items.append(node)
        else:
            root.append(node)

    try:
        # Events are handled as Any: dispatch is on type(event), which mypy cannot follow.
        events: Iterable[Any] = yaml.parse(text, Loader=_Loader)
        for event in events:
            kind = type(event)
            if kind is yaml.ScalarEvent or kind is yaml.AliasEvent:
                count += 1
                if count > MAX_NODES:
                    fail(_too_many("parsed"), event)
                if kind is yaml.AliasEvent:
                    anchor = event.anchor
                    if anchor in opened:
                        fail(f"alias *{anchor} refers to a node that contains it", event)
                    if anchor not in anchors:
                        fail(f"alias *{anchor} has no anchor &{anchor} before it", event)
                    add(anchors[anchor])
                    continue
                tag = event.tag
                if tag is None or tag == "!":
                    tag = STR
                    if event.implicit[0]:  # plain scalar: resolve 12, true, null, ...
                        value = event.value
                        for candidate, regexp in _IMPLICIT.get(value[:1], ()):
                            if regexp.match(value):
                                tag = candidate
                                break
                elif tag not in _SCALAR_TAGS:
                    fail(_bad_tag(tag, "scalar"), event)
                node = _Node(_SCALAR, tag, event.start_mark.line + 1, event.value)
                anchor = event.anchor
                if anchor is not None:
                    if anchor in anchors or anchor in opened:
                        fail(f"anchor &{anchor} is defined twice; rename one", event)
                    anchors[anchor] = node
                add(node)
            elif kind is yaml.SequenceStartEvent or kind is yaml.MappingStartEvent:
                count += 1
                if count > MAX_NODES:
                    fail(_too_many("parsed"), event)
                if len(stack) >= MAX_DEPTH:
                    fail(f"nesting deeper than {MAX_DEPTH} levels; flatten the data", event)
                collection, expected = (
                    (_SEQUENCE, SEQ) if kind is yaml.SequenceStartEvent else (_MAPPING, MAP)
                )
                tag = expected if event.tag in (None, "!") else event.tag
                if tag != expected:
                    fail(_bad_tag(tag, collection), event)
                anchor = event.anchor
                if anchor is not None:
                    if anchor in anchors or anchor in opened:
                        fail(f"anchor &{anchor} is defined twice; rename one", event)
                    opened.add(anchor)
                stack.append((_Node(collection, tag, event.start_mark.line + 1), anchor))
            elif kind is yaml.SequenceEndEvent or kind is yaml.MappingEndEvent:
                node, anchor = stack.pop()
                if anchor is not None:
                    opened.discard(anchor)
                    anchors[anchor] = node
                add(node)
            elif kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    fail(
                        "more than one YAML document ('---'); put several scenarios in "
                        "a 'scenarios:' list instead",
                        event,
                    )
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        raise ScenarioError(
            f"YAML syntax error: {problem}{context}",
            path=path,
            line=None if mark is None else mark.line + 1,
        ) from None
    except (yaml.YAMLError, RecursionError, ValueError, UnicodeError) as exc:
        raise ScenarioError(f"cannot parse YAML: {exc}", path=path) from None
    return root[0] if root else None


def _bad_tag(tag: str, kind: str) -> str:
    return (
        f"tag {_short(tag)} is not allowed on a {kind}; scenario files use plain YAML "
        "(strings, numbers, booleans, null, lists, mappings)"
    )


def _too_many(stage: str) -> str:
    if stage == "parsed":
        return f"more than {MAX_NODES:,} YAML nodes; scenario files are small, split this one up"
    return (
        f"more than {MAX_NODES:,} values to build (an alias counts each time it is used); "
        "is this an alias bomb? Write the data out plainly"
    )


# --------------------------------------------------------------------------- building values


class _Context:
    """Per-file state while building: where we are and how much work is left."""

    def __init__(self, path: str, sha256: str) -> None:
        self.path = path
        self.sha256 = sha256
        self.visits = 0
        self.depth = 1  # nesting level of the scenario mapping being built

    def fail(self, message: str, *, line: int | None, field: str | None = None) -> NoReturn:
        if field and len(field) > 120:  # deep paths through aliases: keep both ends
            field = f"{field[:70]}...{field[-40:]}"
        raise ScenarioError(message, path=self.path, line=line, field=field or None)

    def visit(self, node: _Node, field: str) -> None:
        self.visits += 1
        if self.visits > MAX_NODES:
            self.fail(_too_many("to build"), line=node.line, field=field)


def _join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    return f"{prefix}.{key}" if key.isidentifier() else f"{prefix}[{key!r}]"


def _describe(node: _Node) -> str:
    if node.kind == _SEQUENCE:
        return "a list"
    if node.kind == _MAPPING:
        return "a mapping"
    noun = {STR: "the string", INT: "the integer", FLOAT: "the number", BOOL: "the boolean"}
    if node.tag == NULL:
        return "null" if node.text in ("", "~", "null", "Null", "NULL") else f"null ({node.text})"
    return f"{noun.get(node.tag, 'the value')} {node.text!r}"


def _hint(node: _Node) -> str:
    if node.kind != _SCALAR:
        return ""
    if node.tag == NULL:
        return " (write a value, or remove the key)"
    return " (put it in quotes to keep it as text)"


def _pairs(node: _Node, ctx: _Context, field: str, depth: int) -> dict[str, tuple[_Node, int]]:
    """A mapping's string keys -> (value node, key line), with ``<<`` merges applied.

    As in YAML's merge-key spec: explicit keys win over merged ones, and among
    merged mappings the earlier one wins.
    """
    if depth > MAX_DEPTH:
        ctx.fail(f"merge keys nest deeper than {MAX_DEPTH} levels", line=node.line, field=field)
    ctx.visit(node, field)
    merged: dict[str, tuple[_Node, int]] = {}
    explicit: dict[str, tuple[_Node, int]] = {}
    items = node.items
    for index in range(0, len(items), 2):
        key, value = items[index], items[index + 1]
        ctx.visit(key, field)
        if key.kind == _SCALAR and key.tag == MERGE:
            sources = value.items if value.kind == _SEQUENCE else [value]
            for source in reversed(sources):
                if source.kind != _MAPPING:
                    ctx.fail(
                        f"'<<' merges mappings, got {_describe(source)}",
                        line=source.line,
                        field=field,
                    )
                merged.update(_pairs(source, ctx, field, depth + 1))
            continue
        if key.kind != _SCALAR or key.tag != STR:
            hint = "; quote it" if key.kind == _SCALAR else ""
            ctx.fail(
                f"keys must be strings, got {_describe(key)}{hint}", line=key.line, field=field
            )
        if key.text in explicit:
            ctx.fail(
                f"duplicate key {key.text!r} (first at line {explicit[key.text][1]})",
                line=key.line,
                field=_join(field, key.text),
            )
        explicit[key.text] = (value, key.line)
    if not merged:
        return explicit
    merged.update(explicit)
    return merged


def _mapping(node: _Node, ctx: _Context, field: str, what: str) -> dict[str, tuple[_Node, int]]:
    if node.kind != _MAPPING:
        ctx.fail(f"expected {what}, got {_describe(node)}", line=node.line, field=field)
    return _pairs(node, ctx, field, ctx.depth + 1)


def _string(node: _Node, ctx: _Context, field: str) -> str:
    ctx.visit(node, field)
    if node.kind != _SCALAR or node.tag != STR:
        ctx.fail(
            f"expected a string, got {_describe(node)}{_hint(node)}", line=node.line, field=field
        )
    return node.text


def _text(node: _Node, ctx: _Context, field: str) -> str:
    """A message text: a string with something other than whitespace in it."""
    value = _string(node, ctx, field)
    if not value.strip():
        ctx.fail(
            "must not be empty or only whitespace; write the message text",
            line=node.line,
            field=field,
        )
    return value


def _optional(parse: Callable[[_Node, _Context, str], Any]) -> Callable[..., Any]:
    """Accept null as "not set" (None) before applying ``parse``."""

    def parse_optional(node: _Node, ctx: _Context, field: str) -> Any:
        if node.kind == _SCALAR and node.tag == NULL:
            ctx.visit(node, field)
            return None
        return parse(node, ctx, field)

    return parse_optional


def _name(node: _Node, ctx: _Context, field: str) -> str:
    name = _string(node, ctx, field)
    _check_name(name, ctx, node.line, field)
    return name


def _check_name(name: str, ctx: _Context, line: int, field: str, origin: str = "") -> None:
    # Names end up in file names and transcript records.
    if not name.strip():
        problem = "must not be empty or only whitespace"
    elif len(name) > MAX_NAME_CHARS:
        problem = f"is {len(name)} characters long; the limit is {MAX_NAME_CHARS}"
    elif "\0" in name:
        problem = "must not contain a NUL character"
    elif "/" in name or "\\" in name:
        problem = "must not contain '/' or '\\' (names become file names)"
    elif name in (".", ".."):
        problem = "must not be '.' or '..' (names become file names)"
    elif any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        problem = "must not contain control characters such as newlines or tabs"
    else:
        return
    ctx.fail(f"scenario name {name!r} {problem}{origin}", line=line, field=field)


def _provider(node: _Node, ctx: _Context, field: str) -> str:
    value = _string(node, ctx, field)
    if not value.strip():
        ctx.fail("must not be empty; omit 'provider' to send none", line=node.line, field=field)
    return value


def _history(node: _Node, ctx: _Context, field: str) -> str:
    value = _string(node, ctx, field)
    if value not in HISTORY_MODES:
        ctx.fail(
            f"must be 'client' (the runner resends the whole dialogue) or 'server' "
            f"(the server keeps it), got {value!r}{_did_you_mean(value, HISTORY_MODES)}",
            line=node.line,
            field=field,
        )
    return value


# The runner builds these request-body fields itself, or from scenario keys.
_OWNED_PARAMS = {
    "messages": "the runner builds 'messages' from the turns",
    "stream": "the runner always streams",
    "conversation_id": "the runner manages 'conversation_id' (see 'history: server')",
    "model": "use the scenario's 'model:' key",
    "provider": "use the scenario's 'provider:' key",
    "stream_options": "use the scenario's 'stream_options:' key",
}


def _params(node: _Node, ctx: _Context, field: str) -> dict[str, Any]:
    if node.kind == _SCALAR and node.tag == NULL:
        ctx.visit(node, field)
        return {}
    pairs = _mapping(node, ctx, field, "a mapping of extra request-body fields")
    for key, (_, line) in pairs.items():
        if key in _OWNED_PARAMS:
            ctx.fail(
                f"{key!r} is not allowed here: {_OWNED_PARAMS[key]}",
                line=line,
                field=_join(field, key),
            )
    return {
        key: _plain(value, ctx, _join(field, key), ctx.depth + 2)
        for key, (value, _) in pairs.items()
    }


def _json_mapping(node: _Node, ctx: _Context, field: str) -> dict[str, Any]:
    pairs = _mapping(node, ctx, field, "a mapping")
    return {
        key: _plain(value, ctx, _join(field, key), ctx.depth + 2)
        for key, (value, _) in pairs.items()
    }


# PyYAML's own conversions, applied to a lone scalar node (they cannot recurse).
_CONSTRUCTOR = SafeConstructor()
_SCALAR_BUILDERS: dict[str, Callable[[yaml.ScalarNode], Any]] = {
    INT: _CONSTRUCTOR.construct_yaml_int,
    FLOAT: _CONSTRUCTOR.construct_yaml_float,
    BOOL: _CONSTRUCTOR.construct_yaml_bool,
}


def _plain(node: _Node, ctx: _Context, field: str, depth: int) -> Any:
    """Plain JSON data (str, int, finite float, bool, None, list, dict) from a node."""
    if depth > MAX_DEPTH:
        ctx.fail(
            f"nesting deeper than {MAX_DEPTH} levels (through aliases); flatten the data",
            line=node.line,
            field=field,
        )
    if node.kind == _SEQUENCE:
        ctx.visit(node, field)
        return [_plain(item, ctx, f"{field}[{i}]", depth + 1) for i, item in enumerate(node.items)]
    if node.kind == _MAPPING:
        return {
            key: _plain(value, ctx, _join(field, key), depth + 1)
            for key, (value, _) in _pairs(node, ctx, field, depth).items()
        }
    ctx.visit(node, field)
    tag = node.tag
    if tag == STR:
        return node.text
    if tag == NULL:
        return None
    if tag == MERGE:
        ctx.fail("'<<' is a merge key and cannot be a value", line=node.line, field=field)
    if len(node.text) > MAX_NUMBER_CHARS:
        ctx.fail(
            f"{_short(tag)} value is longer than {MAX_NUMBER_CHARS} characters; "
            "quote it to send a string",
            line=node.line,
            field=field,
        )
    try:
        value = _SCALAR_BUILDERS[tag](yaml.ScalarNode(tag, node.text))
    except (ValueError, IndexError, KeyError, OverflowError):
        ctx.fail(f"{node.text!r} is not a valid {_short(tag)} value", line=node.line, field=field)
    if isinstance(value, float) and not math.isfinite(value):
        ctx.fail(
            f"{node.text!r} is not a finite number and cannot be sent as JSON",
            line=node.line,
            field=field,
        )
    return value


def _turns(node: _Node, ctx: _Context, field: str) -> tuple[Turn, ...]:
    ctx.visit(node, field)
    if node.kind != _SEQUENCE:
        ctx.fail(
            f"expected a list of turns, got {_describe(node)}; write each user message "
            "as a '- ' item",
            line=node.line,
            field=field,
        )
    if not node.items:
        ctx.fail("must hold at least one turn", line=node.line, field=field)
    return tuple(_turn(item, ctx, f"{field}[{i}]") for i, item in enumerate(node.items))


def _turn(node: _Node, ctx: _Context, field: str) -> Turn:
    if node.kind == _SCALAR and node.tag == STR:
        return Turn(user=_text(node, ctx, field), line=node.line)
    if node.kind != _MAPPING:
        ctx.fail(
            f"expected a string or a mapping with 'user', got {_describe(node)}{_hint(node)}",
            line=node.line,
            field=field,
        )
    values = _fields(node, ctx, field, _TURN_KEYS)
    for key in _TURN_REQUIRED:
        if key not in values:
            ctx.fail(f"missing required key {key!r}", line=node.line, field=field)
    return Turn(line=node.line, **values)


_Parse = Callable[[_Node, _Context, str], Any]


def _check_list(where: str) -> _Parse:
    """``expect:`` / ``expect_all_turns:``: a list of one-key checks."""

    def parse(node: _Node, ctx: _Context, field: str) -> tuple[Check, ...]:
        raw = _plain(node, ctx, field, ctx.depth + 1)
        try:
            return parse_checks(raw, where=where)
        except CheckSpecError as exc:
            line = node.line
            if isinstance(exc.index, int) and node.kind == _SEQUENCE:
                line = node.items[exc.index].line
                field = f"{field}[{exc.index}]"
            ctx.fail(exc.message, line=line, field=field)

    return parse


def _captures(node: _Node, ctx: _Context, field: str) -> tuple[tuple[str, re.Pattern[str]], ...]:
    raw = _plain(node, ctx, field, ctx.depth + 1)
    try:
        return parse_captures(raw)
    except CheckSpecError as exc:
        line = node.line
        if isinstance(exc.index, str) and node.kind == _MAPPING:
            pairs = _mapping(node, ctx, field, "a mapping")
            line = pairs[exc.index][1] if exc.index in pairs else node.line
            field = _join(field, exc.index)
        ctx.fail(exc.message, line=line, field=field)


# Allowed keys, one line each: adding a key to turns or scenarios is a line
# here plus a field on the dataclass.
_TURN_KEYS: dict[str, _Parse] = {
    "user": _text,
    "expect": _check_list("expect"),
    "capture": _captures,
}
_TURN_REQUIRED = ("user",)

_SCENARIO_KEYS: dict[str, _Parse] = {
    "name": _name,
    "provider": _optional(_provider),
    "model": _string,
    "history": _history,
    "system": _optional(_string),
    "params": _params,
    "stream_options": _optional(_json_mapping),
    "expect_all_turns": _check_list("expect_all_turns"),
    "turns": _turns,
}
# Keys that 'defaults:' refuses, with the reason.
_PER_SCENARIO = {
    "name": "'name' cannot be a default; each scenario needs its own",
    "turns": "'turns' cannot be a default; each scenario lists its own",
}
_DEFAULT_KEYS = {k: v for k, v in _SCENARIO_KEYS.items() if k not in _PER_SCENARIO}
_FILE_KEYS = ("defaults", "scenarios")


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    import difflib  # only on the error path

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown(key: str, allowed: Iterable[str]) -> str:
    names = list(allowed)
    return f"unknown key (allowed: {', '.join(names)}){_did_you_mean(key, names)}"


def _fields(
    node: _Node,
    ctx: _Context,
    prefix: str,
    allowed: Mapping[str, _Parse],
    refused: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Parse a mapping's keys, each with the parser ``allowed`` names for it."""
    values: dict[str, Any] = {}
    for key, (value, line) in _pairs(node, ctx, prefix, ctx.depth).items():
        parse = allowed.get(key)
        if parse is None:
            reason = (refused or {}).get(key) or _unknown(key, allowed)
            ctx.fail(reason, line=line, field=_join(prefix, key))
        values[key] = parse(value, ctx, _join(prefix, key))
    return values


def _build_file(root: _Node, ctx: _Context, stem: str) -> list[Scenario]:
    if root.kind != _MAPPING:
        hint = " with 'turns:' or 'scenarios:'" if root.kind == _SEQUENCE else ""
        ctx.fail(
            f"expected a mapping at the top of the file{hint}, got {_describe(root)}",
            line=root.line,
        )
    top = _pairs(root, ctx, "", 1)
    if not any(key in top for key in _FILE_KEYS):
        fields = _fields(root, ctx, "", _SCENARIO_KEYS)
        if "name" not in fields:
            _check_name(stem, ctx, root.line, "name", " (taken from the file name; set 'name:')")
            fields["name"] = stem
        return [_scenario(fields, root, ctx, "")]

    # The 'defaults:'/'scenarios:' form holds nothing else.
    for key, (_, line) in top.items():
        if key in _SCENARIO_KEYS:
            ctx.fail(
                f"cannot sit beside 'scenarios:' (a file is either one scenario or a "
                f"'defaults:'/'scenarios:' pair); move {key!r} into a scenario or 'defaults:'",
                line=line,
                field=key,
            )
        if key not in _FILE_KEYS:
            ctx.fail(_unknown(key, _FILE_KEYS), line=line, field=key)
    if "scenarios" not in top:
        ctx.fail("missing required key 'scenarios' (the list of scenarios)", line=root.line)

    defaults: dict[str, Any] = {}
    if "defaults" in top:
        node, _ = top["defaults"]
        if node.kind != _MAPPING:
            ctx.fail(
                f"expected a mapping of scenario keys, got {_describe(node)}",
                line=node.line,
                field="defaults",
            )
        ctx.depth = 2
        defaults = _fields(node, ctx, "defaults", _DEFAULT_KEYS, _PER_SCENARIO)

    listing, _ = top["scenarios"]
    ctx.visit(listing, "scenarios")
    if listing.kind != _SEQUENCE:
        ctx.fail(
            f"expected a list of scenario mappings, got {_describe(listing)}",
            line=listing.line,
            field="scenarios",
        )
    if not listing.items:
        ctx.fail("must hold at least one scenario", line=listing.line, field="scenarios")
    ctx.depth = 3
    scenarios = []
    for index, node in enumerate(listing.items):
        prefix = f"scenarios[{index}]"
        if node.kind != _MAPPING:
            ctx.fail(
                f"expected a scenario mapping, got {_describe(node)}", line=node.line, field=prefix
            )
        fields = _fields(node, ctx, prefix, _SCENARIO_KEYS)
        if "name" not in fields:
            ctx.fail(
                "missing required key 'name' (each scenario of a list needs its own)",
                line=node.line,
                field=f"{prefix}.name",
            )
        combined = copy.deepcopy(defaults)  # no mutable value shared between scenarios
        if "params" in combined and "params" in fields:
            fields["params"] = {**combined["params"], **fields["params"]}
        combined.update(fields)
        scenarios.append(_scenario(combined, node, ctx, prefix))
    return scenarios


def _scenario(fields: dict[str, Any], node: _Node, ctx: _Context, prefix: str) -> Scenario:
    if "turns" not in fields:
        ctx.fail(
            "missing required key 'turns' (the list of user messages)",
            line=node.line,
            field=_join(prefix, "turns"),
        )
    scenario = Scenario(file=ctx.path, line=node.line, sha256=ctx.sha256, **fields)
    if scenario.templated:
        # Every {name} must be captured by an earlier turn of this scenario.
        known: dict[str, str] = {}
        for i, turn in enumerate(scenario.turns):
            try:
                render_user(turn.user, known)
            except TemplateError as exc:
                ctx.fail(str(exc), line=turn.line, field=f"{_join(prefix, 'turns')}[{i}].user")
            known.update((name, "") for name, _ in turn.capture)
    return scenario
