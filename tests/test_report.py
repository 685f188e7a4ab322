"""The run report: numbers, torn and superseded lines, repeats, text and JSON output."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from runner.errors import UsageError
from runner.report import Report, ScenarioSummary, build_report, fmt_ms, render_json, render_text
from tests.transcripts_factory import T0, demo_run, turn, write_run


def scenario(report: Report, name: str) -> ScenarioSummary:
    (found,) = [s for s in report.scenarios if s.name == name]
    return found


def test_counts_percentiles_and_tokens_per_second(tmp_path: Path) -> None:
    durations = [100.0, 200.0, 300.0, 400.0, 1000.0]
    records = [
        turn(scenario="a", turn=i, ttft_ms=d / 10, duration_ms=d, completion_tokens=10)
        for i, d in enumerate(durations)
    ]
    records.append(turn(scenario="a", turn=5, status="error", duration_ms=99999.0))
    records.append(turn(scenario="a", turn=6, status="skipped"))
    records.append(
        turn(scenario="b", turn=0, ttft_ms=None, duration_ms=500.0, completion_tokens=20)
    )
    report = build_report(write_run(tmp_path / "run1", records))

    a = scenario(report, "a")
    assert (a.turns, a.ok, a.error, a.skipped) == (7, 5, 1, 1)
    # linear interpolation over ok turns only (the error's 99999 ms is left out)
    assert a.duration.p50 == 300.0
    assert a.duration.p95 == pytest.approx(400 + 0.8 * 600)
    assert a.ttft.p50 == 30.0
    assert a.duration.max == 1000.0
    # 50 tokens over the generation time: sum(d - d/10) = 0.9 * 2000 ms
    assert a.tokens_per_s == pytest.approx(50 / 1.8)
    # no TTFT: the whole duration is the generation time
    assert scenario(report, "b").tokens_per_s == pytest.approx(20 / 0.5)
    assert report.total.turns == 8
    assert report.total.duration.count == 6
    assert report.ttft_values == (10.0, 20.0, 30.0, 40.0, 100.0)


def test_usage_missing_gives_no_rate(tmp_path: Path) -> None:
    report = build_report(write_run(tmp_path / "r", [turn(completion_tokens=None)]))
    assert report.total.tokens_per_s is None
    total_row = render_text(report).split("\n\n")[1].splitlines()[-1]
    assert total_row.split()[0] == "total"
    assert total_row.split()[-1] == "-"


def test_torn_last_line_is_skipped_and_counted(tmp_path: Path) -> None:
    records = [turn(turn=0), turn(turn=1)]
    torn = json.dumps(turn(turn=2))[:57]
    report = build_report(write_run(tmp_path / "r", records, torn=torn))
    assert report.total.turns == 2
    assert report.unreadable == 1
    assert report.torn_tail is True
    assert "1 unreadable line(s) skipped (including a torn last line)" in render_text(report)


def test_bad_line_in_the_middle_is_not_a_torn_tail(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "r", [turn(turn=0)])
    with (run_dir / "transcript.jsonl").open("a") as fh:
        fh.write("not json\n\n[1, 2]\n" + json.dumps(turn(turn=1)) + "\n")
    report = build_report(run_dir)
    assert report.total.turns == 2
    assert report.unreadable == 2
    assert report.torn_tail is False


def test_superseded_lines_are_ignored(tmp_path: Path) -> None:
    records = [
        turn(turn=0, status="error", superseded=True, duration_ms=9000.0),
        turn(turn=0, status="ok", duration_ms=100.0),
    ]
    report = build_report(write_run(tmp_path / "r", records))
    assert (report.total.ok, report.total.error) == (1, 0)
    assert report.failing_total == 0
    assert report.superseded == 1
    assert [r.duration_ms for r in report.slowest] == [100.0]
    assert "1 superseded line(s) ignored" in render_text(report)


def test_slowest_are_the_top_five_by_duration(tmp_path: Path) -> None:
    durations = [50.0, 700.0, 300.0, 900.0, 100.0, 800.0, 600.0, 200.0]
    records = [turn(turn=i, duration_ms=d) for i, d in enumerate(durations)]
    records.append(turn(turn=99, status="skipped"))
    report = build_report(write_run(tmp_path / "r", records))
    assert [r.duration_ms for r in report.slowest] == [900.0, 800.0, 700.0, 600.0, 300.0]
    assert [r.turn for r in report.slowest] == [3, 5, 1, 6, 2]


def test_failing_turns_carry_error_and_check_detail(tmp_path: Path) -> None:
    records = [
        turn(turn=0, checks=[("contains", True, "found")]),
        turn(turn=1, checks=[("regex", False, "no match for /x/; reply starts: 'abc'")]),
        turn(
            turn=2,
            status="error",
            error={"type": "idle_timeout", "message": "no byte for 30 s", "http_status": None},
        ),
    ]
    report = build_report(write_run(tmp_path / "r", records))
    assert report.total.checks == 2
    assert report.total.checks_failed == 1
    assert [(c.name, c.passed, c.failed) for c in report.checks] == [
        ("contains", 1, 0),
        ("regex", 0, 1),
    ]
    assert report.failing_total == 2
    assert report.failing[0].problems == (
        "check regex failed: no match for /x/; reply starts: 'abc'",
    )
    assert report.failing[1].problems == ("error idle_timeout: no byte for 30 s",)
    text = render_text(report)
    assert "Failing turns (2)" in text
    assert "check regex failed: no match for /x/" in text
    assert "error idle_timeout: no byte for 30 s" in text


def test_repeats_pass_rate_and_latency_spread(tmp_path: Path) -> None:
    records = []
    for rep, (d0, d1, ok1, check_ok) in enumerate(
        [(100.0, 400.0, True, True), (300.0, 500.0, False, True), (200.0, 600.0, True, False)]
    ):
        records.append(turn(scenario="s", turn=0, repeat=rep, duration_ms=d0))
        records.append(
            turn(
                scenario="s",
                turn=1,
                repeat=rep,
                duration_ms=d1,
                status="ok" if ok1 else "error",
                checks=[("contains", check_ok, "detail")] if ok1 else None,
            )
        )
    report = build_report(write_run(tmp_path / "r", records))
    reps = scenario(report, "s").repeats
    assert reps is not None
    assert (reps.repeats, reps.passed) == (3, 1)
    assert reps.pass_rate == pytest.approx(1 / 3)
    t0, t1 = reps.turns
    assert (t0.turn, t0.count, t0.min, t0.p50, t0.max) == (0, 3, 100.0, 200.0, 300.0)
    assert (t1.turn, t1.count, t1.min, t1.p50, t1.max) == (1, 2, 400.0, 500.0, 600.0)
    text = render_text(report)
    assert "Repeats" in text and "33%" in text


def test_no_repeat_field_means_no_flakiness_section(tmp_path: Path) -> None:
    report = build_report(write_run(tmp_path / "r", [turn()]))
    assert report.scenarios[0].repeats is None
    assert "Repeats" not in render_text(report)


def test_timeline_offsets_from_first_start(tmp_path: Path) -> None:
    records = [
        turn(turn=1, started_at=T0 + timedelta(seconds=2)),
        turn(turn=0, started_at=T0),
        turn(turn=2, started_at="garbage"),
    ]
    report = build_report(write_run(tmp_path / "r", records))
    assert [(b.turn, b.start_ms) for b in report.timeline] == [(1, 2000.0), (0, 0.0)]


def test_run_json_fields_and_missing_run_json(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "20261126T140512Z-abcdef", [turn()], run={"status": "running"})
    report = build_report(run_dir)
    assert report.run_status == "running"
    assert report.endpoint == "http://localhost:1337/v1/chat/completions"
    assert report.models == ("PollinationsAI/gpt-4o-mini",)
    (run_dir / "run.json").unlink()
    bare = build_report(run_dir)
    assert bare.run_id == "20261126T140512Z-abcdef"
    assert bare.run_status is None


def test_missing_transcript_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such run folder"):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"no transcript\.jsonl here"):
        build_report(tmp_path / "empty")


def test_empty_transcript_renders(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "r", [])
    report = build_report(run_dir)
    assert report.total.turns == 0
    assert "No turns recorded yet." in render_text(report)


def test_text_table_shows_scenarios_and_total(tmp_path: Path) -> None:
    records = [turn(scenario="alpha", duration_ms=1500.0, ttft_ms=250.0)]
    text = render_text(build_report(write_run(tmp_path / "r", records)))
    header, rule, alpha, total = text.split("\n\n")[1].splitlines()
    assert header.split()[:3] == ["scenario", "turns", "ok"]
    assert set(rule) <= {"-", " "}
    assert alpha.split()[:4] == ["alpha", "1", "1", "0"]
    assert "1.50 s" in alpha and "250 ms" in alpha
    assert total.startswith("total")


def test_json_is_serialisable_and_complete(tmp_path: Path) -> None:
    run_dir = demo_run(tmp_path, seed=3)
    report = build_report(run_dir)
    data = json.loads(json.dumps(render_json(report)))
    assert data["schema"] == "convo-runner/report@1"
    assert data["total"]["turns"] == report.total.turns
    assert {s["name"] for s in data["scenarios"]} == {s.name for s in report.scenarios}
    assert "ttft_values" not in data
    assert data["error_rate"] == pytest.approx(
        report.total.error / (report.total.ok + report.total.error)
    )


@pytest.mark.parametrize(
    ("value", "text"), [(None, "-"), (0.4, "0 ms"), (812.4, "812 ms"), (1234.0, "1.23 s")]
)
def test_fmt_ms(value: float | None, text: str) -> None:
    assert fmt_ms(value) == text
