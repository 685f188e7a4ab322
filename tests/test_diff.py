"""Comparing two runs: alignment, regressions, improvements, replies, latency, error rate."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from runner.diff import (
    ALL,
    Diff,
    DiffThresholds,
    LatencyShift,
    build_diff,
    render_diff_html,
    render_json,
    render_text,
)
from tests.transcripts_factory import turn, write_run


def diff_of(
    tmp_path: Path,
    base: list[dict[str, Any]],
    new: list[dict[str, Any]],
    **thresholds: Any,
) -> Diff:
    b = write_run(tmp_path / "20261126T140512Z-aaaaaa", base)
    n = write_run(tmp_path / "20261127T140512Z-bbbbbb", new)
    return build_diff(b, n, thresholds=DiffThresholds(**thresholds))


def shift(diff: Diff, scenario: str, metric: str) -> LatencyShift:
    (found,) = [s for s in diff.latency if s.scenario == scenario and s.metric == metric]
    return found


def test_identical_runs_have_no_changes(tmp_path: Path) -> None:
    records = [turn(turn=i, reply=f"reply {i}") for i in range(3)]
    diff = diff_of(tmp_path, records, records)
    assert diff.regressions == 0
    assert diff.improvements == 0
    assert not diff.status_changes and not diff.check_changes and not diff.reply_changes
    assert shift(diff, ALL, "duration").ratio == pytest.approx(1.0)
    assert diff.base_run_id == "20261126T140512Z-aaaaaa"


@pytest.mark.parametrize(
    ("base", "new", "kind"),
    [
        ("ok", "error", "regression"),
        ("ok", "skipped", "regression"),
        ("skipped", "error", "regression"),
        ("error", "ok", "improvement"),
        ("skipped", "ok", "improvement"),
        ("error", "skipped", "change"),
    ],
)
def test_status_changes(tmp_path: Path, base: str, new: str, kind: str) -> None:
    diff = diff_of(tmp_path, [turn(status=base)], [turn(status=new)])
    (change,) = diff.status_changes
    assert (change.base, change.new, change.kind) == (base, new, kind)
    status_regressions = 1 if kind == "regression" else 0
    assert diff.regressions - sum(e.regression for e in diff.error_rates) == status_regressions
    assert diff.improvements == (1 if kind == "improvement" else 0)
    if new == "error":
        assert change.detail == ("error http_status (HTTP 502): HTTP 502 from upstream",)


def test_alignment_uses_scenario_turn_and_repeat(tmp_path: Path) -> None:
    base = [turn(turn=0, repeat=0), turn(turn=0, repeat=1, status="error")]
    new = [turn(turn=0, repeat=1), turn(turn=0, repeat=0)]  # order does not matter
    diff = diff_of(tmp_path, base, new)
    (change,) = diff.status_changes
    assert (change.repeat, change.kind) == (1, "improvement")


def test_a_run_without_repeats_aligns_with_the_first_repeat(tmp_path: Path) -> None:
    base = [turn(turn=1, status="error")]
    new = [turn(turn=1, repeat=2), turn(turn=1, repeat=1, reply="other")]
    diff = diff_of(tmp_path, base, new)
    assert [(c.repeat, c.kind) for c in diff.status_changes] == [(1, "improvement")]
    assert diff.turns_added == (("greeting", 1, 2),)
    swapped = diff_of(tmp_path, new, base)
    assert [(c.repeat, c.kind) for c in swapped.status_changes] == [(1, "regression")]
    assert swapped.turns_removed == (("greeting", 1, 2),)


def test_superseded_and_torn_lines_are_ignored(tmp_path: Path) -> None:
    base = [turn(status="error", superseded=True), turn(status="ok")]
    b = write_run(tmp_path / "base", base)
    n = write_run(tmp_path / "new", [turn()], torn='{"scenario": "greet')
    diff = build_diff(b, n, thresholds=DiffThresholds())
    assert diff.status_changes == ()
    assert diff.warnings == (
        "base: 1 superseded line(s) ignored",
        "new: 1 unreadable line(s) skipped (including a torn last line)",
    )


def test_check_regressions_and_improvements(tmp_path: Path) -> None:
    base = [
        turn(turn=0, checks=[("contains", True, "found"), ("contains", True, "found")]),
        turn(turn=1, checks=[("regex", False, "no match")]),
    ]
    new = [
        turn(turn=0, checks=[("contains", True, "found"), ("contains", False, "missing 'x'")]),
        turn(turn=1, checks=[("regex", True, "matched"), ("json", False, "not JSON")]),
    ]
    diff = diff_of(tmp_path, base, new)
    got = {
        (c.turn, c.check): (c.base_passed, c.new_passed, c.kind, c.detail)
        for c in diff.check_changes
    }
    assert got == {
        (0, "contains#2"): (True, False, "regression", "missing 'x'"),
        (1, "regex"): (False, True, "improvement", "matched"),
        (1, "json"): (None, False, "regression", "not JSON"),
    }
    assert diff.regressions == 2
    assert diff.improvements == 1
    text = render_text(diff)
    assert "contains#2 now fails: missing 'x'" in text
    assert "json new check, fails: not JSON" in text


def test_checks_are_not_compared_when_the_status_changed(tmp_path: Path) -> None:
    base = [turn(status="error")]
    new = [turn(checks=[("contains", False, "missing")])]
    diff = diff_of(tmp_path, base, new)
    assert diff.check_changes == ()
    assert [c.kind for c in diff.status_changes] == ["improvement"]


def test_reply_change_similarity_and_unified_diff(tmp_path: Path) -> None:
    base_reply = "\n".join(f"line {i}" for i in range(40))
    new_reply = base_reply.replace("line 5", "LINE FIVE")
    diff = diff_of(tmp_path, [turn(reply=base_reply)], [turn(reply=new_reply)])
    (change,) = diff.reply_changes
    assert 0.9 < change.similarity < 1.0
    assert change.approximate is False
    assert change.regression is False  # min_similarity defaults to 0
    assert "-line 5" in change.diff and "+LINE FIVE" in change.diff
    assert change.diff[:2] == ("--- base", "+++ new")
    assert diff.regressions == 0


def test_unified_diff_is_capped(tmp_path: Path) -> None:
    base = "\n".join(f"a{i}" for i in range(100))
    new = "\n".join(f"b{i}" for i in range(100))
    (change,) = diff_of(tmp_path, [turn(reply=base)], [turn(reply=new)]).reply_changes
    assert len(change.diff) == 21
    assert change.diff[-1].startswith("… (") and "more diff lines" in change.diff[-1]


def test_reply_below_min_similarity_is_a_regression(tmp_path: Path) -> None:
    diff = diff_of(
        tmp_path,
        [turn(reply="The capital of France is Paris.")],
        [turn(reply="I cannot help with that.")],
        min_similarity=0.8,
    )
    (change,) = diff.reply_changes
    assert change.regression is True
    assert change.similarity < 0.8
    assert diff.regressions == 1
    # a small edit stays above the threshold
    diff = diff_of(
        tmp_path,
        [turn(reply="The capital of France is Paris.")],
        [turn(reply="The capital of France is Paris!")],
        min_similarity=0.8,
    )
    assert diff.reply_changes[0].regression is False


def test_quick_ratio_bound_is_used_when_it_already_decides(tmp_path: Path) -> None:
    diff = diff_of(
        tmp_path, [turn(reply="aaaa bbbb")], [turn(reply="zzzz yyyy")], min_similarity=0.5
    )
    (change,) = diff.reply_changes
    assert change.approximate is True
    assert change.regression is True
    assert "similarity <=" in render_text(diff)


def test_replies_of_errored_turns_are_not_compared(tmp_path: Path) -> None:
    diff = diff_of(tmp_path, [turn(reply="a")], [turn(reply="b", status="error")])
    assert diff.reply_changes == ()


def test_latency_ratio_regression_per_scenario_and_overall(tmp_path: Path) -> None:
    base = [turn(scenario="slow", turn=i, duration_ms=200.0, ttft_ms=100.0) for i in range(3)]
    base += [turn(scenario="fast", turn=i, duration_ms=200.0, ttft_ms=10.0) for i in range(3)]
    new = [turn(scenario="slow", turn=i, duration_ms=400.0, ttft_ms=120.0) for i in range(3)]
    new += [turn(scenario="fast", turn=i, duration_ms=200.0, ttft_ms=40.0) for i in range(3)]
    diff = diff_of(tmp_path, base, new)

    slow = shift(diff, "slow", "duration")
    assert (slow.base_p50, slow.new_p50, slow.ratio, slow.regression) == (200.0, 400.0, 2.0, True)
    assert shift(diff, "slow", "ttft").regression is False  # x1.2
    fast_ttft = shift(diff, "fast", "ttft")
    assert fast_ttft.ratio == pytest.approx(4.0)
    assert fast_ttft.regression is False  # base p50 of 10 ms is below the 50 ms floor
    overall = shift(diff, ALL, "duration")
    assert overall.ratio == pytest.approx(300.0 / 200.0)  # p50 of [200]*3+[400]*3 is 300
    assert overall.regression is False  # not above 1.5
    assert diff.regressions == 1

    looser = diff_of(tmp_path, base, new, max_latency_ratio=2.5)
    assert looser.regressions == 0
    stricter = diff_of(tmp_path, base, new, min_latency_base_ms=5.0)
    assert shift(stricter, "fast", "ttft").regression is True


def test_error_rate_change(tmp_path: Path) -> None:
    base = [turn(turn=i) for i in range(10)]
    new = [turn(turn=i, status="error" if i < 2 else "ok") for i in range(10)]
    diff = diff_of(tmp_path, base, new)
    (overall,) = [e for e in diff.error_rates if e.scenario == ALL]
    assert (overall.base_rate, overall.new_rate) == (0.0, 0.2)
    assert overall.delta == pytest.approx(0.2)
    assert overall.regression is True
    lenient = diff_of(tmp_path, base, new, max_error_rate_increase=0.25)
    assert not any(e.regression for e in lenient.error_rates)
    assert lenient.regressions == 2  # the two ok -> error turns


def test_scenarios_and_turns_added_or_removed(tmp_path: Path) -> None:
    base = [turn(scenario="kept", turn=0), turn(scenario="kept", turn=1), turn(scenario="old")]
    new = [turn(scenario="kept", turn=0), turn(scenario="kept", turn=2), turn(scenario="fresh")]
    diff = diff_of(tmp_path, base, new)
    assert diff.scenarios_added == ("fresh",)
    assert diff.scenarios_removed == ("old",)
    assert diff.turns_added == (("kept", 2, None),)
    assert diff.turns_removed == (("kept", 1, None),)
    assert {s.scenario for s in diff.latency} == {"kept", ALL}
    text = render_text(diff)
    assert "Scenarios added: fresh" in text
    assert "Scenarios removed: old" in text


def test_json_output(tmp_path: Path) -> None:
    diff = diff_of(tmp_path, [turn()], [turn(status="error")])
    data = json.loads(json.dumps(render_json(diff)))
    assert data["schema"] == "convo-runner/diff@1"
    assert data["regressions"] == diff.regressions >= 1
    assert data["status_changes"][0]["kind"] == "regression"
    assert data["thresholds"]["max_latency_ratio"] == 1.5


def test_html_escapes_replies_and_marks_regressions(tmp_path: Path) -> None:
    diff = diff_of(
        tmp_path,
        [turn(reply="hello")],
        [turn(reply="<script>alert(1)</script>", scenario="greeting")],
    )
    page = render_diff_html(diff)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.startswith("<!DOCTYPE html>")
    assert "default-src 'none'" in page


def test_text_shows_the_least_similar_replies_first_and_caps_them(tmp_path: Path) -> None:
    base = [turn(turn=i, reply="a" * 20) for i in range(15)]
    new = [turn(turn=i, reply="a" * (19 - i) + "b" * (i + 1)) for i in range(15)]
    diff = diff_of(tmp_path, base, new)
    assert len(diff.reply_changes) == 15
    text = render_text(diff)
    shown = [int(m) for m in re.findall(r"greeting turn (\d+): similarity", text)]
    assert shown == list(range(14, 4, -1))  # the ten most changed, most changed first
    assert "... and 5 more (see --json)" in text
    assert render_diff_html(diff).count("<pre class='diff'>") == 15
