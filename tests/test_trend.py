"""Trends over many runs: grouping by UTC day and provider/model, rates, CSV, HTML."""

from __future__ import annotations

import csv
import json
from datetime import timedelta
from pathlib import Path

import pytest

from runner.errors import UsageError
from runner.trend import (
    CSV_COLUMNS,
    Trend,
    TrendRow,
    build_trend,
    render_json,
    render_text,
    render_trend_html,
    write_csv,
)
from tests.transcripts_factory import T0, run_id_at, turn, write_run

DAY1, DAY2 = "2026-11-26", "2026-11-27"


def row(trend: Trend, day: str, provider: str, model: str) -> TrendRow:
    (found,) = [r for r in trend.rows if (r.day, r.provider, r.model) == (day, provider, model)]
    return found


def make_tree(root: Path) -> None:
    day2 = T0 + timedelta(days=1)
    # run 1, day 1, provider A: 4 ok (one failed check) + 1 error + 1 skipped
    recs = [turn(turn=i, ttft_ms=100.0 * (i + 1), provider="A") for i in range(4)]
    recs[0]["checks"] = [{"name": "contains", "passed": False, "detail": "x"}]
    recs[1]["checks"] = [{"name": "contains", "passed": True, "detail": "x"}]
    recs += [
        turn(turn=4, status="error", provider="A"),
        turn(turn=5, status="skipped", provider="A"),
    ]
    write_run(root / run_id_at(T0, "000001"), recs)
    # run 2, day 1, same group + a superseded line and a torn tail
    recs = [
        turn(turn=0, ttft_ms=500.0, provider="A"),
        turn(turn=1, status="error", provider="A", superseded=True),
    ]
    write_run(root / run_id_at(T0, "000002"), recs, torn='{"status": "ok", "tim')
    # run 3, day 2, provider None; one turn's local time is still day 1... in UTC day 2
    recs = [
        turn(turn=0, provider=None, started_at=day2, ttft_ms=50.0),
        turn(turn=1, provider=None, started_at="2026-11-27T00:30:00.000+01:00", ttft_ms=70.0),
        turn(turn=2, provider=None, started_at="2026-11-27T23:30:00-02:00", ttft_ms=90.0),
    ]
    write_run(root / run_id_at(day2, "000003"), recs)
    (root / "not-a-run").mkdir()
    (root / "stray.txt").write_text("hello")


def test_groups_by_day_provider_and_model(tmp_path: Path) -> None:
    make_tree(tmp_path)
    trend = build_trend(tmp_path)
    assert trend.runs == 3
    assert trend.turns == 10
    assert trend.superseded == 1
    assert trend.unreadable == 1
    a = row(trend, DAY1, "A", "gpt-4o-mini")
    assert (a.runs, a.turns, a.ok, a.error, a.skipped) == (2, 7, 5, 1, 1)
    assert a.error_rate == pytest.approx(1 / 6)
    assert (a.checks, a.checks_failed, a.check_failure_rate) == (2, 1, 0.5)
    assert a.ttft_p50 == 300.0  # ok TTFTs 100, 200, 300, 400, 500
    assert a.ttft_p95 == pytest.approx(480.0)
    # provider None shows as "-"; timestamps with offsets land on their UTC day
    dash_day2 = row(trend, DAY2, "-", "gpt-4o-mini")
    assert dash_day2.turns == 1
    dash_day1 = row(trend, DAY1, "-", "gpt-4o-mini")
    assert dash_day1.turns == 1 and dash_day1.ttft_p50 == 70.0
    dash_day3 = row(trend, "2026-11-28", "-", "gpt-4o-mini")
    assert dash_day3.ttft_p50 == 90.0
    assert dash_day1.check_failure_rate is None
    assert trend.days == (DAY1, DAY2, "2026-11-28")
    assert [(r.provider, r.day) for r in trend.rows] == sorted(
        (r.provider, r.day) for r in trend.rows
    )


def test_day_falls_back_to_run_json_then_run_id(tmp_path: Path) -> None:
    rec = turn(started_at="")
    rec["timing"]["started_at"] = None
    write_run(
        tmp_path / "20261001T000000Z-aaaaaa", [rec], run={"started_at": "2026-10-05T10:00:00Z"}
    )
    run_dir = write_run(tmp_path / "20261002T000000Z-bbbbbb", [rec])
    (run_dir / "run.json").unlink()
    trend = build_trend(tmp_path)
    assert trend.days == ("2026-10-02", "2026-10-05")


def test_model_falls_back_to_run_settings(tmp_path: Path) -> None:
    rec = turn()
    del rec["request"]
    write_run(tmp_path / "r1", [rec], run={"settings": {"model": "m-x", "provider": None}})
    trend = build_trend(tmp_path)
    assert [(r.provider, r.model) for r in trend.rows] == [("-", "m-x")]


def test_csv(tmp_path: Path) -> None:
    make_tree(tmp_path / "out")
    trend = build_trend(tmp_path / "out")
    path = tmp_path / "trend.csv"
    write_csv(trend, path)
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 1 + len(trend.rows)
    by_key = {(r[0], r[1], r[2]): dict(zip(CSV_COLUMNS, r, strict=True)) for r in rows[1:]}
    a = by_key[(DAY1, "A", "gpt-4o-mini")]
    assert a["turns"] == "7"
    assert a["error_rate"] == "0.1667"
    assert a["check_failure_rate"] == "0.5"
    assert a["ttft_p50_ms"] == "300"
    assert by_key[(DAY2, "-", "gpt-4o-mini")]["check_failure_rate"] == ""


def test_text_and_json(tmp_path: Path) -> None:
    make_tree(tmp_path)
    trend = build_trend(tmp_path)
    text = render_text(trend)
    assert f"3 run(s), 10 turn(s) under {tmp_path}" in text
    line = next(ln for ln in text.splitlines() if ln.startswith(f"{DAY1}  A"))
    assert line.split()[3:] == ["2", "7", "17%", "50%", "300", "ms", "480", "ms"]
    assert "1 unreadable line(s) skipped; 1 superseded line(s) ignored" in text
    data = json.loads(json.dumps(render_json(trend)))
    assert data["turns"] == 10 and len(data["rows"]) == len(trend.rows)


def test_empty_and_missing(tmp_path: Path) -> None:
    trend = build_trend(tmp_path)
    assert trend.rows == () and trend.runs == 0
    assert "No turns found." in render_text(trend)
    assert "No turns found." in render_trend_html(trend)
    with pytest.raises(UsageError, match="no such folder"):
        build_trend(tmp_path / "missing")


def test_html_has_a_chart_per_model_and_escapes(tmp_path: Path) -> None:
    write_run(tmp_path / "r1", [turn(model="<script>alert(1)</script>")])
    write_run(tmp_path / "r2", [turn(model="plain", started_at=T0 + timedelta(days=1))])
    html = render_trend_html(build_trend(tmp_path))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<svg") == 4  # TTFT and rates for each of two models
    # one day each: single points, no lines; p50, p95 and error rate (no checks ran)
    assert "<polyline" not in html
    assert html.count("<circle") == 6
    assert "TTFT p50 on 2026-11-27" in html
