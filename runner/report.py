"""``runner report RUN_DIR``: what happened in one run, per scenario.

The transcript is streamed line by line; only the numbers the report shows are kept
(latencies as floats, a handful of turn references, one small bar per turn for the
timeline). Lines marked ``"superseded": true`` (replaced by a resumed run) are
ignored. A line that is not valid JSON - typically the torn last line of a run that
is still going or was cut short - is skipped and counted, never fatal.

Latency figures (TTFT, duration, tokens/s) are taken over turns whose status is
``ok``: a failed attempt's timings measure the failure, not the model. Percentiles
use linear interpolation (see ``runner.stats``).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import UsageError
from runner.stats import Spread, parse_timestamp, ratio

__all__ = [
    "REPORT_SCHEMA",
    "CheckTally",
    "RepeatSummary",
    "Report",
    "ScenarioSummary",
    "TimelineBar",
    "Transcript",
    "TurnRef",
    "TurnSpread",
    "build_report",
    "fmt_ms",
    "render_json",
    "render_text",
    "turn_key",
]

REPORT_SCHEMA = "convo-runner/report@1"
SLOWEST = 5
FAILING_KEPT = 50
STATUSES = ("ok", "error", "skipped")


# ---------------------------------------------------------------------------
# Reading


class Transcript:
    """Iterate the live turn records of a ``transcript.jsonl``.

    Superseded lines are dropped and counted in ``superseded``; lines that are not a
    JSON object with ``scenario``, ``turn`` and a known ``status`` are dropped and
    counted in ``unreadable`` (``torn_tail`` is true when the last line was one).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.superseded = 0
        self.unreadable = 0
        self.torn_tail = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with self.path.open("rb") as fh:
            for raw in fh:
                if not raw.strip():
                    continue
                self.torn_tail = False
                try:
                    rec = json.loads(raw)
                except ValueError:
                    rec = None
                if not _is_turn(rec):
                    self.unreadable += 1
                    self.torn_tail = True
                    continue
                if rec.get("superseded") is True:
                    self.superseded += 1
                    continue
                yield rec

    def warnings(self) -> list[str]:
        """Human notes about skipped lines, empty when there is nothing to say."""
        notes: list[str] = []
        if self.unreadable:
            where = " (including a torn last line)" if self.torn_tail else ""
            notes.append(f"{self.unreadable} unreadable line(s) skipped{where}")
        if self.superseded:
            notes.append(f"{self.superseded} superseded line(s) ignored")
        return notes


def _is_turn(rec: Any) -> bool:
    return (
        isinstance(rec, dict)
        and isinstance(rec.get("scenario"), str)
        and isinstance(rec.get("turn"), int)
        and rec.get("status") in STATUSES
    )


def transcript_path(run_dir: Path) -> Path:
    """``run_dir/transcript.jsonl``, or a ``UsageError`` saying what is wrong."""
    path = run_dir / "transcript.jsonl"
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run folder; pass a folder under outputs/")
    if not path.is_file():
        raise UsageError(
            f"{run_dir}: no transcript.jsonl here; pass a run folder such as "
            "outputs/20261126T140512Z-3f9a1c"
        )
    return path


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """``run.json`` as a dict; empty when absent or unreadable (a run still starting)."""
    try:
        info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def turn_key(rec: dict[str, Any]) -> tuple[str, int, int | None]:
    """Where a turn sits in a run: (scenario, turn, repeat); repeat is None without one."""
    repeat = rec.get("repeat")
    return rec["scenario"], rec["turn"], repeat if isinstance(repeat, int) else None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def timing(rec: dict[str, Any]) -> tuple[float | None, float | None, str | None]:
    """(ttft_ms, duration_ms, started_at) of a record, tolerating missing pieces."""
    t = rec.get("timing")
    if not isinstance(t, dict):
        return None, None, None
    started = t.get("started_at")
    return (
        _num(t.get("ttft_ms")),
        _num(t.get("duration_ms")),
        started if isinstance(started, str) else None,
    )


def checks_of(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """The well-formed check records of a turn."""
    checks = rec.get("checks")
    if not isinstance(checks, list):
        return []
    return [c for c in checks if isinstance(c, dict) and isinstance(c.get("name"), str)]


def output_tokens(rec: dict[str, Any]) -> int | None:
    usage = rec.get("usage")
    if not isinstance(usage, dict):
        return None
    n = usage.get("completion_tokens")
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def generation_seconds(ttft_ms: float | None, duration_ms: float | None) -> float | None:
    """Time spent producing output: duration minus TTFT, or the whole duration."""
    if duration_ms is None or duration_ms <= 0:
        return None
    if ttft_ms is not None and duration_ms - ttft_ms > 0:
        return (duration_ms - ttft_ms) / 1000
    return duration_ms / 1000


# ---------------------------------------------------------------------------
# The report values


@dataclass(frozen=True)
class TurnRef:
    """A turn worth pointing at: among the slowest, or failing."""

    scenario: str
    turn: int
    repeat: int | None
    status: str
    ttft_ms: float | None
    duration_ms: float | None
    started_at: str | None
    user: str
    problems: tuple[str, ...]  # the error, then each failed check, as one-line texts


@dataclass(frozen=True)
class TurnSpread:
    """Duration of one scripted turn across repeats (ok turns only)."""

    turn: int
    count: int
    min: float | None
    p50: float | None
    max: float | None


@dataclass(frozen=True)
class RepeatSummary:
    """Flakiness: a repeat passes when all its turns are ok and all its checks pass."""

    repeats: int
    passed: int
    pass_rate: float
    turns: tuple[TurnSpread, ...]


@dataclass(frozen=True)
class ScenarioSummary:
    name: str
    turns: int
    ok: int
    error: int
    skipped: int
    checks: int
    checks_failed: int
    ttft: Spread
    duration: Spread
    output_tokens: int
    tokens_per_s: float | None  # sum of completion tokens / sum of generation time
    repeats: RepeatSummary | None


@dataclass(frozen=True)
class CheckTally:
    name: str
    passed: int
    failed: int


@dataclass(frozen=True)
class TimelineBar:
    """One turn on a time axis: ``start_ms`` counts from the run's first turn."""

    scenario: str
    turn: int
    repeat: int | None
    start_ms: float
    duration_ms: float | None
    status: str
    checks_failed: int


@dataclass(frozen=True)
class Report:
    run_dir: str
    run_id: str
    run_status: str | None
    endpoint: str | None
    models: tuple[str, ...]  # "provider/model" as requested, in order of first use
    started_at: str | None
    ended_at: str | None
    scenarios: tuple[ScenarioSummary, ...]
    total: ScenarioSummary
    slowest: tuple[TurnRef, ...]
    failing: tuple[TurnRef, ...]  # the first FAILING_KEPT, in transcript order
    failing_total: int
    checks: tuple[CheckTally, ...]
    timeline: tuple[TimelineBar, ...]
    ttft_values: tuple[float, ...] = field(repr=False)  # sorted, ok turns
    duration_values: tuple[float, ...] = field(repr=False)
    superseded: int = 0
    unreadable: int = 0
    torn_tail: bool = False
    warnings: tuple[str, ...] = ()


# ---------------------------------------------------------------------------
# Building


class _Acc:
    """Running totals for one scenario (or for the whole run)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts = dict.fromkeys(STATUSES, 0)
        self.checks = 0
        self.checks_failed = 0
        self.ttft: list[float] = []
        self.duration: list[float] = []
        self.tokens = 0
        self.gen_seconds = 0.0
        self.has_repeat = False
        self.repeat_ok: dict[int, bool] = {}
        self.turn_durations: dict[int, list[float]] = {}

    def add(self, rec: dict[str, Any], failed_checks: int, n_checks: int) -> None:
        status = rec["status"]
        self.counts[status] += 1
        self.checks += n_checks
        self.checks_failed += failed_checks
        ttft, duration, _ = timing(rec)
        if status == "ok":
            if ttft is not None:
                self.ttft.append(ttft)
            if duration is not None:
                self.duration.append(duration)
                self.turn_durations.setdefault(rec["turn"], []).append(duration)
            tokens = output_tokens(rec)
            seconds = generation_seconds(ttft, duration)
            if tokens is not None and seconds is not None:
                self.tokens += tokens
                self.gen_seconds += seconds
        repeat = rec.get("repeat")
        if isinstance(repeat, int):
            self.has_repeat = True
            good = status == "ok" and failed_checks == 0
            self.repeat_ok[repeat] = self.repeat_ok.get(repeat, True) and good

    def summary(self) -> ScenarioSummary:
        repeats = None
        if self.has_repeat:
            passed = sum(self.repeat_ok.values())
            spreads = tuple(
                TurnSpread(t, s.count, s.min, s.p50, s.max)
                for t, s in ((t, Spread.of(v)) for t, v in sorted(self.turn_durations.items()))
            )
            repeats = RepeatSummary(
                repeats=len(self.repeat_ok),
                passed=passed,
                pass_rate=passed / len(self.repeat_ok),
                turns=spreads,
            )
        return ScenarioSummary(
            name=self.name,
            turns=sum(self.counts.values()),
            ok=self.counts["ok"],
            error=self.counts["error"],
            skipped=self.counts["skipped"],
            checks=self.checks,
            checks_failed=self.checks_failed,
            ttft=Spread.of(self.ttft),
            duration=Spread.of(self.duration),
            output_tokens=self.tokens,
            tokens_per_s=self.tokens / self.gen_seconds if self.gen_seconds > 0 else None,
            repeats=repeats,
        )


def _clip(text: Any, limit: int) -> str:
    s = text if isinstance(text, str) else ""
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _ref(rec: dict[str, Any], problems: tuple[str, ...]) -> TurnRef:
    ttft, duration, started = timing(rec)
    repeat = rec.get("repeat")
    return TurnRef(
        scenario=rec["scenario"],
        turn=rec["turn"],
        repeat=repeat if isinstance(repeat, int) else None,
        status=rec["status"],
        ttft_ms=ttft,
        duration_ms=duration,
        started_at=started,
        user=_clip(rec.get("user"), 100),
        problems=problems,
    )


def problems_of(rec: dict[str, Any]) -> tuple[str, ...]:
    """One line per thing that went wrong with a turn: its error, then failed checks."""
    out: list[str] = []
    err = rec.get("error")
    if rec["status"] == "error":
        if isinstance(err, dict):
            status = err.get("http_status")
            code = f" (HTTP {status})" if isinstance(status, int) else ""
            out.append(f"error {err.get('type', '?')}{code}: {_clip(err.get('message'), 300)}")
        else:
            out.append("error (no detail recorded)")
    for check in checks_of(rec):
        if check.get("passed") is not True:
            out.append(f"check {check['name']} failed: {_clip(check.get('detail'), 300)}")
    return tuple(out)


def build_report(run_dir: Path) -> Report:
    """Read ``run_dir`` (``transcript.jsonl`` and, if present, ``run.json``)."""
    transcript = Transcript(transcript_path(run_dir))
    info = read_run_info(run_dir)
    accs: dict[str, _Acc] = {}
    total = _Acc("total")
    slowest: list[tuple[float, int, TurnRef]] = []  # min-heap of the SLOWEST largest
    failing: list[TurnRef] = []
    failing_total = 0
    tallies: dict[str, list[int]] = {}
    bars: list[tuple[float | None, dict[str, Any], int]] = []
    models: dict[str, None] = {}
    first_start: float | None = None

    for n, rec in enumerate(transcript):
        checks = checks_of(rec)
        failed = 0
        for check in checks:
            tally = tallies.setdefault(check["name"], [0, 0])
            if check.get("passed") is True:
                tally[0] += 1
            else:
                tally[1] += 1
                failed += 1
        acc = accs.get(rec["scenario"])
        if acc is None:
            acc = accs[rec["scenario"]] = _Acc(rec["scenario"])
        acc.add(rec, failed, len(checks))
        total.add(rec, failed, len(checks))

        request = rec.get("request")
        if isinstance(request, dict) and isinstance(request.get("model"), str):
            provider = request.get("provider")
            model = request["model"] or "(default model)"
            label = f"{provider}/{model}" if provider else model
            models.setdefault(label)

        _, duration, started = timing(rec)
        moment = parse_timestamp(started)
        epoch = moment.timestamp() * 1000 if moment else None
        if epoch is not None and (first_start is None or epoch < first_start):
            first_start = epoch
        bars.append((epoch, _bar_fields(rec, duration), failed))

        if duration is not None and rec["status"] != "skipped":
            item = (duration, -n, _ref(rec, ()))
            if len(slowest) < SLOWEST:
                heapq.heappush(slowest, item)
            elif item[:2] > slowest[0][:2]:
                heapq.heapreplace(slowest, item)
        problems = problems_of(rec)
        if problems:
            failing_total += 1
            if len(failing) < FAILING_KEPT:
                failing.append(_ref(rec, problems))

    summaries = [acc.summary() for acc in accs.values()]
    timeline = tuple(
        TimelineBar(
            start_ms=(epoch - first_start)
            if epoch is not None and first_start is not None
            else 0.0,
            checks_failed=failed,
            **fields,
        )
        for epoch, fields, failed in bars
        if epoch is not None
    )
    ttft_all = tuple(sorted(total.ttft))
    duration_all = tuple(sorted(total.duration))
    return Report(
        run_dir=str(run_dir),
        run_id=str(info.get("run_id") or run_dir.name),
        run_status=_str_or_none(info.get("status")),
        endpoint=_str_or_none(info.get("endpoint")),
        models=tuple(models),
        started_at=_str_or_none(info.get("started_at")),
        ended_at=_str_or_none(info.get("ended_at")),
        scenarios=tuple(summaries),
        total=total.summary(),
        slowest=tuple(ref for _, _, ref in sorted(slowest, key=lambda x: (-x[0], -x[1]))),
        failing=tuple(failing),
        failing_total=failing_total,
        checks=tuple(CheckTally(name, p, f) for name, (p, f) in sorted(tallies.items())),
        timeline=timeline,
        ttft_values=ttft_all,
        duration_values=duration_all,
        superseded=transcript.superseded,
        unreadable=transcript.unreadable,
        torn_tail=transcript.torn_tail,
        warnings=tuple(transcript.warnings()),
    )


def _bar_fields(rec: dict[str, Any], duration: float | None) -> dict[str, Any]:
    repeat = rec.get("repeat")
    return {
        "scenario": rec["scenario"],
        "turn": rec["turn"],
        "repeat": repeat if isinstance(repeat, int) else None,
        "duration_ms": duration,
        "status": rec["status"],
    }


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------------------
# Rendering


def fmt_ms(value: float | None) -> str:
    """``812 ms``, ``1.24 s``, or ``-`` when unknown."""
    if value is None:
        return "-"
    if abs(value) < 1000:
        return f"{value:.0f} ms"
    return f"{value / 1000:.2f} s"


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def table(headers: list[str], rows: list[list[str]], *, left: int = 1) -> str:
    """A plain-text table; the first ``left`` columns are left-aligned, others right."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        out = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths).rstrip()
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def turn_label(scenario: str, turn: int, repeat: int | None) -> str:
    rep = f" repeat {repeat}" if repeat is not None else ""
    return f"{scenario} turn {turn}{rep}"


def scenario_row(s: ScenarioSummary) -> list[str]:
    return [
        s.name,
        str(s.turns),
        str(s.ok),
        str(s.error),
        str(s.skipped),
        f"{s.checks_failed}/{s.checks}" if s.checks else "-",
        fmt_ms(s.ttft.p50),
        fmt_ms(s.ttft.p95),
        fmt_ms(s.duration.p50),
        fmt_ms(s.duration.p95),
        fmt_rate(s.tokens_per_s),
    ]


SCENARIO_HEADERS = [
    "scenario",
    "turns",
    "ok",
    "error",
    "skipped",
    "checks failed",
    "TTFT p50",
    "TTFT p95",
    "duration p50",
    "duration p95",
    "out tok/s",
]


def render_text(report: Report) -> str:
    """The report as plain text for a terminal."""
    parts: list[str] = []
    head = f"Run {report.run_id}"
    if report.run_status:
        head += f" ({report.run_status})"
    parts.append(head)
    meta = []
    if report.endpoint:
        meta.append(f"endpoint {report.endpoint}")
    if report.models:
        meta.append("model " + ", ".join(report.models))
    if report.started_at:
        meta.append(f"started {report.started_at}")
    if meta:
        parts.append("  ".join(meta))
    parts.append("")
    if not report.scenarios:
        parts.append("No turns recorded yet.")
    else:
        rows = [scenario_row(s) for s in report.scenarios] + [scenario_row(report.total)]
        parts.append(table(SCENARIO_HEADERS, rows))
    flaky = [s for s in report.scenarios if s.repeats is not None]
    if flaky:
        parts += ["", "Repeats (a repeat passes when every turn is ok and every check passes)"]
        rows = []
        for s in flaky:
            r = s.repeats
            assert r is not None
            rows.append([s.name, "", str(r.repeats), str(r.passed), fmt_pct(r.pass_rate)])
            for t in r.turns:
                spread = [fmt_ms(t.min), fmt_ms(t.p50), fmt_ms(t.max)]
                rows.append(["", f"turn {t.turn}", str(t.count), "", "", *spread])
        rows = [row + [""] * (8 - len(row)) for row in rows]
        headers = ["scenario", "", "repeats", "passed", "pass rate"]
        headers += ["dur min", "dur p50", "dur max"]
        parts.append(table(headers, rows, left=2))
    if report.slowest:
        parts += ["", f"Slowest turns (top {len(report.slowest)})"]
        for i, ref in enumerate(report.slowest, 1):
            parts.append(
                f"{i:2d}. {fmt_ms(ref.duration_ms):>9}  TTFT {fmt_ms(ref.ttft_ms):>9}  "
                f"{turn_label(ref.scenario, ref.turn, ref.repeat)}  [{ref.status}]  {ref.user!r}"
            )
    if report.failing_total:
        parts += ["", f"Failing turns ({report.failing_total})"]
        for ref in report.failing:
            parts.append(f"- {turn_label(ref.scenario, ref.turn, ref.repeat)}: {ref.user!r}")
            parts.extend(f"    {p}" for p in ref.problems)
        if report.failing_total > len(report.failing):
            parts.append(f"  ... and {report.failing_total - len(report.failing)} more")
    if report.warnings:
        parts += ["", "Note: " + "; ".join(report.warnings) + "."]
    return "\n".join(parts) + "\n"


def render_json(report: Report) -> dict[str, Any]:
    """The report as JSON-able data (``--json``); raw latency lists are left out."""
    data = asdict(report)
    for key in ("ttft_values", "duration_values", "timeline"):
        del data[key]
    total = report.total
    data["error_rate"] = ratio(total.error, total.ok + total.error)
    return {"schema": REPORT_SCHEMA, **data}
