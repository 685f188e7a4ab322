"""Expectations: parsing, evaluation, captures and user-text templates."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.checks import (
    CHECK_NAMES,
    CheckSpecError,
    TemplateError,
    UnknownPlaceholderError,
    apply_captures,
    evaluate,
    parse_captures,
    parse_checks,
    placeholders,
    render_user,
)
from runner.records import CheckRecord


def run(
    spec: list[Any],
    reply: str,
    *,
    finish_reason: str | None = "stop",
    ttft_ms: float | None = 100.0,
    duration_ms: float | None = 400.0,
) -> list[CheckRecord]:
    return evaluate(
        parse_checks(spec, where="expect"),
        reply=reply,
        finish_reason=finish_reason,
        ttft_ms=ttft_ms,
        duration_ms=duration_ms,
    )


def one(spec: dict[str, Any], reply: str, **kw: Any) -> CheckRecord:
    (record,) = run([spec], reply, **kw)
    assert record["name"] == next(iter(spec))
    return record


# --- each check, pass and fail ----------------------------------------------------------

PASS_FAIL = [
    # (check, passing reply, failing reply, text expected in the failure detail)
    ({"contains": "Paris"}, "It is Paris.", "It is Lyon.", "contain 'Paris'"),
    ({"icontains": "PARIS"}, "it is paris", "it is lyon", "contain 'PARIS'"),
    ({"not_contains": "sorry"}, "Sure!", "I am sorry, no.", "at offset 5"),
    ({"inot_contains": "SORRY"}, "Sure!", "I am Sorry, no.", "'SORRY'"),
    ({"contains_any": ["yes", "sure"]}, "sure thing", "no way", "any of ['yes', 'sure']"),
    ({"icontains_any": ["YES", "Sure"]}, "SURE thing", "no way", "any of"),
    ({"contains_all": ["a1", "b2"]}, "a1 and b2", "a1 only", "missing ['b2']"),
    ({"icontains_all": ["A1", "B2"]}, "a1 and b2", "A1 only", "missing ['B2']"),
    ({"equals": "42"}, "  42\n", "43", "expected '42', got '43'"),
    ({"iequals": "Yes"}, "YES", "No", "expected 'Yes', got 'No'"),
    ({"regex": r"\b\d{3}\b"}, "code 123 ok", "code 12 ok", r"no match for /\b\d{3}\b/"),
    ({"regex": {"pattern": "^paris$", "flags": "im"}}, "x\nParis\ny", "x Paris y", "/^paris$/im"),
    ({"min_chars": 5}, "hello", "hey", "reply has 3 chars, expected at least 5"),
    ({"max_chars": 5}, "hello", "hello!", "reply has 6 chars, expected at most 5"),
    ({"json": True}, '{"a": 1}', "{'a': 1}", "not JSON"),
    ({"json": True}, '```json\n{"a": [1, 2]}\n```', "Here: {}", "not JSON"),
]


@pytest.mark.parametrize(("spec", "good", "bad", "why"), PASS_FAIL)
def test_check_passes_and_fails(spec: dict[str, Any], good: str, bad: str, why: str) -> None:
    assert one(spec, good)["passed"] is True
    failed = one(spec, bad)
    assert failed["passed"] is False
    assert why in failed["detail"]


def test_failure_detail_quotes_the_start_of_the_reply_up_to_200_chars() -> None:
    reply = "x" * 150 + "y" * 150
    detail = one({"regex": "z+"}, reply)["detail"]
    assert "/z+/" in detail
    assert "x" * 150 + "y" * 50 + "…" in detail
    assert "y" * 51 not in detail


def test_empty_reply_is_said_plainly() -> None:
    assert "the reply is empty" in one({"contains": "a"}, "")["detail"]


def test_finish_reason_single_and_list() -> None:
    assert one({"finish_reason": "stop"}, "", finish_reason="stop")["passed"]
    bad = one({"finish_reason": "stop"}, "", finish_reason="length")
    assert not bad["passed"]
    assert bad["detail"] == "finish_reason was 'length', expected 'stop'"
    assert one({"finish_reason": ["stop", "length"]}, "", finish_reason="length")["passed"]
    assert not one({"finish_reason": "stop"}, "", finish_reason=None)["passed"]


@pytest.mark.parametrize(
    ("name", "key"), [("max_ttft_ms", "ttft_ms"), ("max_duration_ms", "duration_ms")]
)
def test_latency_limits(name: str, key: str) -> None:
    assert one({name: 500}, "", **{key: 500.0})["passed"]
    over = one({name: 500}, "", **{key: 812.4})
    assert not over["passed"]
    assert "812 ms exceeds the limit of 500 ms" in over["detail"]
    missing = one({name: 500}, "", **{key: None})
    assert not missing["passed"]
    assert "no " in missing["detail"] and "measured" in missing["detail"]


SCHEMA = {
    "type": "object",
    "required": ["city", "tags"],
    "properties": {
        "city": {"type": "string"},
        "pop": {"type": ["integer", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "geo": {
            "type": "object",
            "required": ["lat"],
            "properties": {"lat": {"type": "number"}},
        },
    },
}


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ('{"city": "Lyon", "tags": []}', None),
        ('{"city": "Lyon", "tags": ["a"], "pop": 5.0, "geo": {"lat": 45}}', None),
        ('{"city": "Lyon", "tags": [], "pop": null}', None),
        ('{"tags": []}', "$: missing required property 'city'"),
        ('{"city": 3, "tags": []}', "$.city: expected string, got integer"),
        ('{"city": "x", "tags": ["a", 2]}', "$.tags[1]: expected string, got integer"),
        ('{"city": "x", "tags": [], "pop": 2.5}', "$.pop: expected integer or null, got number"),
        ('{"city": "x", "tags": [], "geo": {}}', "$.geo: missing required property 'lat'"),
        ('{"city": "x", "tags": [], "geo": {"lat": true}}', "$.geo.lat: expected number"),
        ("[1]", "$: expected object, got array"),
    ],
)
def test_json_schema_subset(reply: str, problem: str | None) -> None:
    result = one({"json": SCHEMA}, reply)
    assert result["passed"] is (problem is None)
    if problem:
        assert problem in result["detail"]


def test_json_enum() -> None:
    spec = {"json": {"type": "string", "enum": ["yes", "no"]}}
    assert one(spec, '"yes"')["passed"]
    assert "is not one of ['yes', 'no']" in one(spec, '"maybe"')["detail"]


def test_checks_run_in_order_and_all_are_reported() -> None:
    records = run([{"contains": "a"}, {"contains": "zz"}, {"max_chars": 1}], "abc")
    assert [(r["name"], r["passed"]) for r in records] == [
        ("contains", True),
        ("contains", False),
        ("max_chars", False),
    ]


def test_regex_is_compiled_once_at_parse_time() -> None:
    (check,) = parse_checks([{"regex": {"pattern": "a.b", "flags": "s"}}], where="expect")
    assert isinstance(check.pattern, re.Pattern)
    assert check.pattern.flags & re.DOTALL
    assert check.describe() == "regex /a.b/s"


def test_every_name_parses_with_a_suitable_argument() -> None:
    sample = {
        "regex": "x",
        "min_chars": 1,
        "max_chars": 1,
        "json": True,
        "finish_reason": "stop",
        "max_ttft_ms": 1,
        "max_duration_ms": 1,
    }
    for name in CHECK_NAMES:
        base = name[1:] if name[1:] in CHECK_NAMES else name
        arg = sample.get(base, ["x"] if base.endswith(("_any", "_all")) else "x")
        (check,) = parse_checks([{name: arg}], where="expect")
        assert check.name == name


# --- parse errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "index", "message"),
    [
        ({"contains": "x"}, None, "must be a list of one-key mappings"),
        ([{"contain": "x"}], 0, "unknown check 'contain' (did you mean 'contains'?)"),
        ([{"contains": "x"}, {"regexp": "y"}], 1, "did you mean 'regex'?"),
        ([{"contains": "a", "regex": "b"}], 0, "one-key mapping"),
        (["contains"], 0, "'contains' needs an argument"),
        ([{"regex": "(unclosed"}], 0, "bad regex '(unclosed': missing ), unterminated"),
        ([{"regex": {"pattern": "x", "flags": "q"}}], 0, "unknown regex flag 'q'"),
        ([{"regex": {"patern": "x"}}], 0, "takes `pattern` and `flags`"),
        ([{"contains": 3}], 0, "takes a string, got a number (3)"),
        ([{"contains": ""}], 0, "non-empty string"),
        ([{"contains_any": "x"}], 0, "non-empty list of strings"),
        ([{"contains_all": []}], 0, "non-empty list of strings"),
        ([{"min_chars": -1}], 0, "whole number >= 0"),
        ([{"max_chars": True}], 0, "whole number >= 0"),
        ([{"max_ttft_ms": 0}], 0, "number of milliseconds > 0"),
        ([{"json": False}], 0, "takes `true` or a JSON-Schema mapping"),
        ([{"json": {"type": "obj"}}], 0, "unknown type 'obj' (did you mean 'object'?)"),
        ([{"json": {"requird": ["a"]}}], 0, "unsupported keyword 'requird'"),
        ([{"json": {"properties": {"a": {"type": "strin"}}}}], 0, "schema.properties.a.type"),
        ([{"finish_reason": 1}], 0, "non-empty list of strings"),
    ],
)
def test_parse_errors_name_the_place_and_the_fix(raw: Any, index: int | None, message: str) -> None:
    with pytest.raises(CheckSpecError) as info:
        parse_checks(raw, where="expect_all_turns")
    err = info.value
    assert isinstance(err, ValueError)
    assert err.index == index
    assert message in err.message
    assert str(err).startswith("expect_all_turns")


def test_none_means_no_checks() -> None:
    assert parse_checks(None, where="expect") == ()
    assert parse_captures(None) == ()


# --- captures -----------------------------------------------------------------------------


def test_capture_success_and_failure() -> None:
    caps = parse_captures({"city": r"capital is (\w+)", "n": {"pattern": "N=(\\d+)", "flags": "i"}})
    values, records = apply_captures(caps, "The capital is Paris; n=7")
    assert values == {"city": "Paris", "n": "7"}
    assert [r["name"] for r in records] == ["capture:city", "capture:n"]
    assert all(r["passed"] for r in records)

    values, records = apply_captures(caps, "no idea")
    assert values == {}
    assert [r["passed"] for r in records] == [False, False]
    assert "no match for /capital is (\\w+)/" in records[0]["detail"]
    assert "'no idea'" in records[0]["detail"]


def test_capture_group_that_does_not_take_part_fails() -> None:
    caps = parse_captures({"x": r"a|(b)"})
    values, records = apply_captures(caps, "a")
    assert values == {}
    assert records[0]["passed"] is False


@pytest.mark.parametrize(
    ("raw", "key", "message"),
    [
        ({"x": "no group"}, "x", "has 0 groups; it needs exactly one"),
        ({"x": "(a)(b)"}, "x", "has 2 groups"),
        ({"x": "(a"}, "x", "bad regex"),
        ({"1x": "(a)"}, "1x", "identifiers"),
        (["(a)"], None, "must be a mapping"),
    ],
)
def test_capture_errors(raw: Any, key: str | None, message: str) -> None:
    with pytest.raises(CheckSpecError) as info:
        parse_captures(raw)
    assert info.value.index == key
    assert message in info.value.message
    assert info.value.field == ("capture" if key is None else f"capture.{key}")


# --- templates ----------------------------------------------------------------------------


def test_render_user_substitutes_and_unescapes() -> None:
    text = render_user('Tell me about {city}. Use {{json}} like {{"a": 1}}.', {"city": "Paris"})
    assert text == 'Tell me about Paris. Use {json} like {"a": 1}.'
    assert placeholders("{a} {b} {a} {{c}}") == ("a", "b")


def test_unknown_placeholder_is_a_key_error_with_a_helpful_message() -> None:
    with pytest.raises(KeyError) as info:
        render_user("Where is {citty}?", {"city": "Paris"})
    err = info.value
    assert isinstance(err, UnknownPlaceholderError)
    assert isinstance(err, TemplateError)
    assert err.name == "citty"
    assert "did you mean 'city'?" in str(err)
    assert "captured so far: city" in str(err)


@pytest.mark.parametrize("template", ["a { b", "a } b", "{not valid}", "{1x}", "{"])
def test_stray_braces_are_errors(template: str) -> None:
    with pytest.raises(TemplateError) as info:
        render_user(template, {})
    assert "write {{ or }} for a literal brace" in str(info.value)


@given(st.text())
def test_escaped_text_round_trips(text: str) -> None:
    escaped = text.replace("{", "{{").replace("}", "}}")
    assert render_user(escaped, {}) == text
    assert placeholders(escaped) == ()
