"""Expectations on replies: parse ``expect:`` and ``capture:``, evaluate them, fill templates.

Everything here is pure. A scenario turn may carry::

    expect:
      - contains: Paris
      - regex: {pattern: '^\\d+ km$', flags: im}
      - json: {type: object, required: [city]}
      - max_ttft_ms: 2000
    capture:
      city: 'capital is (\\w+)'

``parse_checks`` and ``parse_captures`` validate and compile the plain YAML values
and raise ``CheckSpecError`` (which knows the list index or capture name at fault, so
the scenario loader can point at a file and line). ``evaluate`` and
``apply_captures`` turn a reply into ``CheckRecord`` values for the transcript.
``render_user`` replaces ``{name}`` placeholders in later user text with captured
values; ``{{`` and ``}}`` stand for literal braces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runner.records import CheckRecord

__all__ = [
    "CHECK_NAMES",
    "Check",
    "CheckSpecError",
    "TemplateError",
    "UnknownPlaceholderError",
    "apply_captures",
    "evaluate",
    "parse_captures",
    "parse_checks",
    "placeholders",
    "render_user",
]

EXCERPT_CHARS = 200

_TEXT_CHECKS = ("contains", "not_contains", "equals")
_LIST_CHECKS = ("contains_any", "contains_all")
_OTHER_CHECKS = (
    "regex",
    "min_chars",
    "max_chars",
    "json",
    "finish_reason",
    "max_ttft_ms",
    "max_duration_ms",
)
CHECK_NAMES: tuple[str, ...] = (
    *_TEXT_CHECKS,
    *_LIST_CHECKS,
    *_OTHER_CHECKS,
    *(f"i{n}" for n in (*_TEXT_CHECKS, *_LIST_CHECKS)),
)

_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
_JSON_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
_SCHEMA_KEYS = ("type", "required", "properties", "items", "enum")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class CheckSpecError(ValueError):
    """An ``expect:`` or ``capture:`` value is wrong.

    ``index`` is the position in the ``expect`` list (or the capture's name);
    ``field`` spells the place, e.g. ``expect[2].regex`` or ``capture.city``.
    """

    def __init__(
        self, message: str, index: int | str | None = None, *, where: str = "expect"
    ) -> None:
        self.message = message
        self.index = index
        self.where = where
        if isinstance(index, int):
            self.field = f"{where}[{index}]"
        elif isinstance(index, str):
            self.field = f"{where}.{index}"
        else:
            self.field = where
        super().__init__(f"{self.field}: {message}")


class TemplateError(ValueError):
    """User text has a malformed ``{placeholder}``."""


class UnknownPlaceholderError(TemplateError, KeyError):
    """User text names a placeholder that no earlier turn captured."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = tuple(known)
        have = ", ".join(sorted(self.known)) or "none"
        hint = _suggest(name, self.known)
        self.message = (
            f"user text uses {{{name}}} but no earlier turn captured {name!r}{hint} "
            f"(captured so far: {have}); add `capture: {{{name}: '...(group)...'}}` to an "
            "earlier turn, or write {{ and }} for literal braces"
        )
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


@dataclass(frozen=True)
class Check:
    """One compiled expectation. ``arg`` is the YAML argument (lists become tuples)."""

    name: str
    arg: Any
    pattern: re.Pattern[str] | None = None

    def describe(self) -> str:
        """A short human form, e.g. ``contains 'Paris'``."""
        if self.pattern is not None:
            return f"{self.name} {_show_regex(self.pattern)}"
        if self.name == "json" and self.arg is True:
            return "json"
        return f"{self.name} {self.arg!r}"


# ---------------------------------------------------------------------------
# Parsing


def parse_checks(raw: Any, *, where: str = "expect") -> tuple[Check, ...]:
    """Validate and compile the plain value of ``expect:`` (a list of one-key mappings).

    ``where`` names the key in messages (``expect`` or ``expect_all_turns``).
    ``None`` means no checks.
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise CheckSpecError(
            f"must be a list of one-key mappings such as `- contains: Paris`, got {_kind(raw)}",
            where=where,
        )
    return tuple(_parse_one(item, i, where) for i, item in enumerate(raw))


def _parse_one(item: Any, index: int, where: str) -> Check:
    def fail(message: str) -> CheckSpecError:
        return CheckSpecError(message, index, where=where)

    if isinstance(item, str) and item in CHECK_NAMES:
        raise fail(f"{item!r} needs an argument, e.g. `- {item}: ...`")
    if not isinstance(item, dict) or len(item) != 1:
        raise fail(
            f"each check is a one-key mapping such as `- contains: Paris`, got {_kind(item)}"
        )
    ((name, arg),) = item.items()
    if not isinstance(name, str) or name not in CHECK_NAMES:
        raise fail(
            f"unknown check {name!r}{_suggest(str(name), CHECK_NAMES)}; "
            f"known checks: {', '.join(CHECK_NAMES)}"
        )
    base = _base_name(name)
    try:
        if base in ("contains", "not_contains"):
            return Check(name, _nonempty_str(arg))
        if base == "equals":
            return Check(name, _str(arg))
        if base in _LIST_CHECKS:
            return Check(name, _str_list(arg))
        if base == "regex":
            return Check(name, arg, _compile(arg))
        if base in ("min_chars", "max_chars"):
            return Check(name, _count(arg))
        if base == "json":
            if arg is True:
                return Check(name, True)
            if isinstance(arg, dict):
                _validate_schema(arg, "schema")
                return Check(name, arg)
            raise ValueError(f"takes `true` or a JSON-Schema mapping, got {_kind(arg)}")
        if base == "finish_reason":
            if isinstance(arg, str) and arg:
                return Check(name, (arg,))
            return Check(name, _str_list(arg))
        # max_ttft_ms, max_duration_ms
        return Check(name, _positive_number(arg))
    except ValueError as exc:
        raise fail(f"{name}: {exc}") from None


def parse_captures(raw: Any) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """Validate and compile ``capture: {name: regex-with-one-group}``.

    The regex is a string or ``{pattern: ..., flags: "im"}``. ``None`` means none.
    """
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise CheckSpecError(
            f"must be a mapping of name to regex, e.g. `capture: {{city: 'is (\\w+)'}}`, "
            f"got {_kind(raw)}",
            where="capture",
        )
    out: list[tuple[str, re.Pattern[str]]] = []
    for name, spec in raw.items():
        key = str(name)
        if not isinstance(name, str) or not _NAME.match(name):
            raise CheckSpecError(
                "capture names are identifiers (letters, digits, _; not starting with a digit)",
                key,
                where="capture",
            )
        try:
            pattern = _compile(spec)
        except ValueError as exc:
            raise CheckSpecError(str(exc), key, where="capture") from None
        if pattern.groups != 1:
            raise CheckSpecError(
                f"the regex {_show_regex(pattern)} has {pattern.groups} groups; it needs "
                "exactly one (...) around the text to capture (use (?:...) for others)",
                key,
                where="capture",
            )
        out.append((name, pattern))
    return tuple(out)


def _compile(spec: Any) -> re.Pattern[str]:
    flags_text = ""
    if isinstance(spec, dict):
        unknown = set(spec) - {"pattern", "flags"}
        if unknown:
            raise ValueError(
                f"regex mapping takes `pattern` and `flags`, not {sorted(map(str, unknown))}"
            )
        if "pattern" not in spec:
            raise ValueError("regex mapping needs a `pattern`")
        flags_text = spec.get("flags") or ""
        if not isinstance(flags_text, str):
            raise ValueError(f"regex flags are letters among 'imsx', got {_kind(flags_text)}")
        spec = spec["pattern"]
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"a regex is a non-empty string, got {_kind(spec)}")
    flags = 0
    for letter in flags_text:
        if letter not in _REGEX_FLAGS:
            raise ValueError(
                f"unknown regex flag {letter!r}; use i (ignore case), m (multiline), "
                "s (dot matches newline), x (verbose)"
            )
        flags |= _REGEX_FLAGS[letter]
    try:
        return re.compile(spec, flags)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise ValueError(f"bad regex {spec!r}: {exc.msg}{where}") from None


def _validate_schema(schema: Any, at: str) -> None:
    if not isinstance(schema, dict):
        raise ValueError(f"{at} must be a mapping, got {_kind(schema)}")
    for key in schema:
        if key not in _SCHEMA_KEYS:
            raise ValueError(
                f"{at}: unsupported keyword {key!r}{_suggest(str(key), _SCHEMA_KEYS)}; "
                f"supported: {', '.join(_SCHEMA_KEYS)}"
            )
    if "type" in schema:
        types = schema["type"]
        listed = types if isinstance(types, list) else [types]
        for t in listed:
            if t not in _JSON_TYPES:
                raise ValueError(
                    f"{at}.type: unknown type {t!r}{_suggest(str(t), _JSON_TYPES)}; "
                    f"use one of {', '.join(_JSON_TYPES)}"
                )
    if "required" in schema:
        req = schema["required"]
        if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
            raise ValueError(f"{at}.required must be a list of property names")
    if "properties" in schema:
        props = schema["properties"]
        if not isinstance(props, dict):
            raise ValueError(f"{at}.properties must be a mapping of name to schema")
        for prop, sub in props.items():
            _validate_schema(sub, f"{at}.properties.{prop}")
    if "items" in schema:
        _validate_schema(schema["items"], f"{at}.items")
    if "enum" in schema and not isinstance(schema["enum"], list):
        raise ValueError(f"{at}.enum must be a list of allowed values")


def _str(arg: Any) -> str:
    if isinstance(arg, str):
        return arg
    raise ValueError(f"takes a string, got {_kind(arg)} (quote it in YAML)")


def _nonempty_str(arg: Any) -> str:
    text = _str(arg)
    if not text:
        raise ValueError("takes a non-empty string")
    return text


def _str_list(arg: Any) -> tuple[str, ...]:
    if not isinstance(arg, list) or not arg:
        raise ValueError(f"takes a non-empty list of strings, got {_kind(arg)}")
    for item in arg:
        if not isinstance(item, str) or not item:
            raise ValueError(f"takes a list of non-empty strings; one item is {_kind(item)}")
    return tuple(arg)


def _count(arg: Any) -> int:
    if isinstance(arg, bool) or not isinstance(arg, int) or arg < 0:
        raise ValueError(f"takes a whole number >= 0, got {arg!r}")
    return arg


def _positive_number(arg: Any) -> float:
    if isinstance(arg, bool) or not isinstance(arg, (int, float)) or not arg > 0:
        raise ValueError(f"takes a number of milliseconds > 0, got {arg!r}")
    return float(arg)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({_clip(value, 40)!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        keys = ", ".join(map(str, list(value)[:4]))
        return f"a mapping with keys [{keys}]"
    return type(value).__name__


def _suggest(word: str, choices: Sequence[str]) -> str:
    import difflib  # only on the error path: the scenario loader imports this module

    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------
# Evaluation


def evaluate(
    checks: Sequence[Check],
    *,
    reply: str,
    finish_reason: str | None,
    ttft_ms: float | None,
    duration_ms: float | None,
) -> list[CheckRecord]:
    """One ``CheckRecord`` per check, in order; ``detail`` says what was seen."""
    facts = _Facts(reply, finish_reason, ttft_ms, duration_ms)
    out: list[CheckRecord] = []
    for check in checks:
        passed, detail = _EVALUATORS[_base_name(check.name)](check, facts)
        out.append(CheckRecord(name=check.name, passed=passed, detail=detail))
    return out


@dataclass(frozen=True)
class _Facts:
    reply: str
    finish_reason: str | None
    ttft_ms: float | None
    duration_ms: float | None


def _is_ci(check: Check) -> bool:
    return check.name != _base_name(check.name)


def _base_name(name: str) -> str:
    """``icontains`` -> ``contains``; other names unchanged."""
    return name[1:] if name.startswith("i") and name[1:] in CHECK_NAMES else name


def _fold(check: Check, text: str) -> str:
    return text.casefold() if _is_ci(check) else text


def _contains(check: Check, f: _Facts) -> tuple[bool, str]:
    needle = str(check.arg)
    pos = _fold(check, f.reply).find(_fold(check, needle))
    if pos >= 0:
        return True, f"found {needle!r} at offset {pos}"
    return False, f"expected the reply to contain {needle!r}; {_starts(f.reply)}"


def _not_contains(check: Check, f: _Facts) -> tuple[bool, str]:
    needle = str(check.arg)
    pos = _fold(check, f.reply).find(_fold(check, needle))
    if pos < 0:
        return True, f"{needle!r} not found"
    return False, (
        f"the reply contains {needle!r} at offset {pos}: {_around(f.reply, pos, len(needle))}"
    )


def _contains_any(check: Check, f: _Facts) -> tuple[bool, str]:
    hay = _fold(check, f.reply)
    for needle in check.arg:
        if _fold(check, needle) in hay:
            return True, f"found {needle!r}"
    return False, f"expected any of {list(check.arg)!r}; {_starts(f.reply)}"


def _contains_all(check: Check, f: _Facts) -> tuple[bool, str]:
    hay = _fold(check, f.reply)
    missing = [n for n in check.arg if _fold(check, n) not in hay]
    if not missing:
        return True, f"found all {len(check.arg)}"
    return False, f"missing {missing!r} of {list(check.arg)!r}; {_starts(f.reply)}"


def _equals(check: Check, f: _Facts) -> tuple[bool, str]:
    # Surrounding whitespace is noise in model output (a trailing newline, say).
    want, got = str(check.arg).strip(), f.reply.strip()
    if _fold(check, want) == _fold(check, got):
        return True, "equal"
    return False, f"expected {_clip(want)!r}, got {_clip(got)!r}"


def _regex(check: Check, f: _Facts) -> tuple[bool, str]:
    assert check.pattern is not None
    match = check.pattern.search(f.reply)
    if match:
        return True, f"matched {_clip(match.group(0), 80)!r} at offset {match.start()}"
    return False, f"no match for {_show_regex(check.pattern)}; {_starts(f.reply)}"


def _min_chars(check: Check, f: _Facts) -> tuple[bool, str]:
    n = len(f.reply)
    passed = n >= check.arg
    return passed, f"reply has {n} chars, expected at least {check.arg}"


def _max_chars(check: Check, f: _Facts) -> tuple[bool, str]:
    n = len(f.reply)
    passed = n <= check.arg
    return passed, f"reply has {n} chars, expected at most {check.arg}"


_FENCE = re.compile(r"\A```[A-Za-z0-9_-]*[ \t]*\r?\n(.*?)\r?\n?```\Z", re.DOTALL)


def _json(check: Check, f: _Facts) -> tuple[bool, str]:
    text = f.reply.strip()
    fenced = _FENCE.match(text)
    if fenced:  # models like to wrap JSON in a ```json fence; accept exactly one
        text = fenced.group(1).strip()
    try:
        value = json.loads(text)
    except ValueError as exc:
        return False, f"the reply is not JSON ({exc}); {_starts(f.reply)}"
    if check.arg is True:
        return True, f"valid JSON ({_json_type(value)})"
    problem = _schema_problem(value, check.arg, "$")
    if problem:
        return False, f"JSON does not match the schema: {problem}"
    return True, "JSON matches the schema"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(value: Any, wanted: str) -> bool:
    actual = _json_type(value)
    if wanted == actual:
        return True
    if wanted == "number":
        return actual == "integer"
    if wanted == "integer":
        return actual == "number" and float(value).is_integer()
    return False


def _schema_problem(value: Any, schema: Mapping[str, Any], at: str) -> str | None:
    if "type" in schema:
        wanted = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, w) for w in wanted):
            return f"{at}: expected {' or '.join(wanted)}, got {_json_type(value)}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{at}: {_clip(json.dumps(value), 60)} is not one of {schema['enum']!r}"
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                return f"{at}: missing required property {name!r}"
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                problem = _schema_problem(value[name], sub, f"{at}.{name}")
                if problem:
                    return problem
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problem = _schema_problem(item, schema["items"], f"{at}[{i}]")
            if problem:
                return problem
    return None


def _finish_reason(check: Check, f: _Facts) -> tuple[bool, str]:
    wanted = " or ".join(repr(w) for w in check.arg)
    if f.finish_reason in check.arg:
        return True, f"finish_reason {f.finish_reason!r}"
    return False, f"finish_reason was {f.finish_reason!r}, expected {wanted}"


def _max_ms(label: str, get: Callable[[_Facts], float | None]) -> _Evaluator:
    def run(check: Check, f: _Facts) -> tuple[bool, str]:
        got = get(f)
        if got is None:
            return False, f"no {label} was measured (no reply text arrived), limit {check.arg:g} ms"
        if got <= check.arg:
            return True, f"{label} {got:.0f} ms within {check.arg:g} ms"
        return False, f"{label} {got:.0f} ms exceeds the limit of {check.arg:g} ms"

    return run


_Evaluator = Callable[[Check, _Facts], tuple[bool, str]]

_EVALUATORS: dict[str, _Evaluator] = {
    "contains": _contains,
    "not_contains": _not_contains,
    "contains_any": _contains_any,
    "contains_all": _contains_all,
    "equals": _equals,
    "regex": _regex,
    "min_chars": _min_chars,
    "max_chars": _max_chars,
    "json": _json,
    "finish_reason": _finish_reason,
    "max_ttft_ms": _max_ms("TTFT", lambda f: f.ttft_ms),
    "max_duration_ms": _max_ms("duration", lambda f: f.duration_ms),
}


def _clip(text: str, limit: int = EXCERPT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _starts(reply: str) -> str:
    if not reply:
        return "the reply is empty"
    return f"reply starts: {_clip(reply)!r}"


def _around(text: str, pos: int, length: int, margin: int = 40) -> str:
    lo, hi = max(0, pos - margin), min(len(text), pos + length + margin)
    return ("…" if lo else "") + repr(text[lo:hi]) + ("…" if hi < len(text) else "")


def _show_regex(pattern: re.Pattern[str]) -> str:
    letters = "".join(k for k, v in _REGEX_FLAGS.items() if pattern.flags & v)
    return f"/{pattern.pattern}/{letters}"


# ---------------------------------------------------------------------------
# Captures and templates


def apply_captures(
    captures: Sequence[tuple[str, re.Pattern[str]]], reply: str
) -> tuple[dict[str, str], list[CheckRecord]]:
    """Run each capture regex on ``reply``.

    Returns the captured values and one ``capture:<name>`` record per capture; a
    capture that does not match (or whose group does not take part) fails.
    """
    values: dict[str, str] = {}
    records: list[CheckRecord] = []
    for name, pattern in captures:
        match = pattern.search(reply)
        group = match.group(1) if match else None
        if group is None:
            detail = f"no match for {_show_regex(pattern)}; {_starts(reply)}"
            records.append(CheckRecord(name=f"capture:{name}", passed=False, detail=detail))
            continue
        values[name] = group
        records.append(
            CheckRecord(name=f"capture:{name}", passed=True, detail=f"captured {_clip(group)!r}")
        )
    return values, records


_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")


def _scan(template: str) -> list[str | tuple[str]]:
    """Split a template into literal strings and ``(name,)`` placeholders."""
    parts: list[str | tuple[str]] = []
    last = 0
    for m in _TOKEN.finditer(template):
        if m.start() > last:
            parts.append(template[last : m.start()])
        token = m.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif m.group(1) is not None:
            parts.append((m.group(1),))
        else:
            raise TemplateError(
                f"stray {token!r} at offset {m.start()} in user text "
                f"{_around(template, m.start(), 1, 20)}: placeholders look like {{name}}; "
                "write {{ or }} for a literal brace"
            )
        last = m.end()
    if last < len(template):
        parts.append(template[last:])
    return parts


def placeholders(template: str) -> tuple[str, ...]:
    """The placeholder names ``template`` uses, in order of first use.

    Raises ``TemplateError`` on a malformed template, so a loader can check user
    text before anything is sent.
    """
    seen: dict[str, None] = {}
    for part in _scan(template):
        if isinstance(part, tuple):
            seen.setdefault(part[0])
    return tuple(seen)


def render_user(template: str, values: Mapping[str, str]) -> str:
    """Replace ``{name}`` with ``values[name]``; ``{{``/``}}`` become literal braces.

    Raises ``UnknownPlaceholderError`` (a ``KeyError`` and a ``TemplateError``) for
    a name not in ``values`` and ``TemplateError`` for a stray brace.
    """
    out: list[str] = []
    for part in _scan(template):
        if isinstance(part, tuple):
            if part[0] not in values:
                raise UnknownPlaceholderError(part[0], list(values))
            out.append(values[part[0]])
        else:
            out.append(part)
    return "".join(out)
