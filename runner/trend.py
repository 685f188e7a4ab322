"""``runner trend DIR``: how turns fared per day and per (provider, model), over many runs.

Every subfolder of ``DIR`` holding a ``transcript.jsonl`` is a run. Each turn goes
to the UTC day of its ``timing.started_at`` (else the run's ``started_at``, else
the date in the run id) and to its requested ``request.provider`` /
``request.model`` (else the run's settings); a missing provider shows as ``-``.

Per group: runs, turns, error rate (errors / (ok + error); skipped turns were never
sent), check failure rate (failed checks / checks) and TTFT p50/p95 over ok turns.

Speed matters here (thousands of runs): lines are read as bytes and parsed with
``json.loads`` (C code), and only a few fields are looked at; no per-turn objects
are built. Superseded and unreadable lines are skipped as everywhere else.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runner.errors import UsageError
from runner.htmlreport import Html, Series, esc, html_table, legend, line_chart_svg, page
from runner.report import STATUSES, fmt_ms, fmt_pct, read_run_info, table
from runner.stats import parse_timestamp, percentile_sorted, ratio

__all__ = [
    "CSV_COLUMNS",
    "Trend",
    "TrendRow",
    "build_trend",
    "render_json",
    "render_text",
    "render_trend_html",
    "write_csv",
]

NO_PROVIDER = "-"
CSV_COLUMNS = (
    "day",
    "provider",
    "model",
    "runs",
    "turns",
    "ok",
    "error",
    "skipped",
    "error_rate",
    "checks",
    "checks_failed",
    "check_failure_rate",
    "ttft_p50_ms",
    "ttft_p95_ms",
)
_ROW_FIELDS = (*CSV_COLUMNS[:12], "ttft_p50", "ttft_p95")  # TrendRow names, CSV order
_UTC_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T[^+-]*(Z|[+-]00:?00)?\Z")
_RUN_ID_DAY = re.compile(r"(\d{4})(\d{2})(\d{2})T")


@dataclass(frozen=True)
class TrendRow:
    day: str  # YYYY-MM-DD, UTC
    provider: str
    model: str
    runs: int
    turns: int
    ok: int
    error: int
    skipped: int
    error_rate: float | None
    checks: int
    checks_failed: int
    check_failure_rate: float | None
    ttft_p50: float | None
    ttft_p95: float | None


@dataclass(frozen=True)
class Trend:
    root: str
    rows: tuple[TrendRow, ...]  # sorted by provider, model, day
    days: tuple[str, ...]
    runs: int
    turns: int
    unreadable: int
    superseded: int


class _Group:
    __slots__ = ("checks", "checks_failed", "counts", "runs", "ttft")

    def __init__(self) -> None:
        self.runs: set[str] = set()
        self.counts = dict.fromkeys(STATUSES, 0)
        self.checks = 0
        self.checks_failed = 0
        self.ttft: list[float] = []


def _utc_day(stamp: Any) -> str | None:
    if not isinstance(stamp, str) or len(stamp) < 10:
        return None
    if _UTC_STAMP.match(stamp):  # the common case: cut, don't parse
        return stamp[:10]
    moment = parse_timestamp(stamp)
    return moment.strftime("%Y-%m-%d") if moment else None


def _run_day(run_dir: Path, info: dict[str, Any]) -> str:
    day = _utc_day(info.get("started_at"))
    if day:
        return day
    m = _RUN_ID_DAY.match(str(info.get("run_id") or run_dir.name))
    return f"{m[1]}-{m[2]}-{m[3]}" if m else "unknown"


def build_trend(root: Path) -> Trend:
    """Read every run under ``root`` (an outputs folder) and group its turns."""
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder; pass the outputs folder, e.g. outputs/")
    groups: dict[tuple[str, str, str], _Group] = {}
    runs = turns = unreadable = superseded = 0
    loads = json.loads
    for run_dir in sorted(p for p in root.iterdir() if (p / "transcript.jsonl").is_file()):
        runs += 1
        info = read_run_info(run_dir)
        run_id = run_dir.name
        fallback_day = _run_day(run_dir, info)
        settings = info.get("settings")
        if not isinstance(settings, dict):
            settings = {}
        run_model = str(settings.get("model") or "-")
        run_provider = settings.get("provider") or NO_PROVIDER
        with (run_dir / "transcript.jsonl").open("rb") as fh:
            for line in fh:
                try:
                    rec = loads(line)
                    status = rec["status"]
                    if status not in STATUSES:
                        raise ValueError(status)
                except (ValueError, KeyError, TypeError):
                    if line.strip():
                        unreadable += 1
                    continue
                if rec.get("superseded") is True:
                    superseded += 1
                    continue
                turns += 1
                t = rec.get("timing")
                t = t if isinstance(t, dict) else {}
                day = _utc_day(t.get("started_at")) or fallback_day
                req = rec.get("request")
                if isinstance(req, dict):
                    model = str(req.get("model") or run_model)
                    provider = str(req.get("provider") or NO_PROVIDER)
                else:
                    model, provider = run_model, str(run_provider)
                key = (provider, model, day)
                g = groups.get(key)
                if g is None:
                    g = groups[key] = _Group()
                g.runs.add(run_id)
                g.counts[status] += 1
                checks = rec.get("checks")
                if checks:
                    for c in checks:
                        g.checks += 1
                        if not (isinstance(c, dict) and c.get("passed") is True):
                            g.checks_failed += 1
                if status == "ok":
                    ttft = t.get("ttft_ms")
                    if isinstance(ttft, (int, float)) and not isinstance(ttft, bool):
                        g.ttft.append(ttft)

    rows = []
    for (provider, model, day), g in sorted(groups.items()):
        g.ttft.sort()
        c = g.counts
        rows.append(
            TrendRow(
                day=day,
                provider=provider,
                model=model,
                runs=len(g.runs),
                turns=sum(c.values()),
                ok=c["ok"],
                error=c["error"],
                skipped=c["skipped"],
                error_rate=ratio(c["error"], c["ok"] + c["error"]),
                checks=g.checks,
                checks_failed=g.checks_failed,
                check_failure_rate=ratio(g.checks_failed, g.checks),
                ttft_p50=percentile_sorted(g.ttft, 50),
                ttft_p95=percentile_sorted(g.ttft, 95),
            )
        )
    return Trend(
        root=str(root),
        rows=tuple(rows),
        days=tuple(sorted({r.day for r in rows})),
        runs=runs,
        turns=turns,
        unreadable=unreadable,
        superseded=superseded,
    )


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def write_csv(trend: Trend, path: Path) -> None:
    """One row per (day, provider, model); rates are fractions, empty when undefined."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for row in trend.rows:
            writer.writerow([_csv_value(getattr(row, col)) for col in _ROW_FIELDS])


def render_text(trend: Trend) -> str:
    """The trend as plain text for a terminal."""
    head = f"{trend.runs} run(s), {trend.turns} turn(s) under {trend.root}"
    notes = []
    if trend.unreadable:
        notes.append(f"{trend.unreadable} unreadable line(s) skipped")
    if trend.superseded:
        notes.append(f"{trend.superseded} superseded line(s) ignored")
    if not trend.rows:
        return head + "\nNo turns found.\n"
    rows = [
        [
            r.day,
            r.provider,
            r.model,
            str(r.runs),
            str(r.turns),
            fmt_pct(r.error_rate),
            fmt_pct(r.check_failure_rate),
            fmt_ms(r.ttft_p50),
            fmt_ms(r.ttft_p95),
        ]
        for r in trend.rows
    ]
    headers = ["day", "provider", "model", "runs", "turns", "errors", "checks failed"]
    body = table([*headers, "TTFT p50", "TTFT p95"], rows, left=3)
    tail = f"\nNote: {'; '.join(notes)}.\n" if notes else ""
    return f"{head}\n\n{body}\n{tail}"


def render_json(trend: Trend) -> dict[str, Any]:
    """The trend as JSON-able data (``--json``)."""
    return {"schema": "convo-runner/trend@1", **asdict(trend)}


_PALETTE = ("#2563eb", "#7c3aed", "#dc2626", "#d97706")


def render_trend_html(trend: Trend) -> str:
    """The trend as one self-contained HTML page: a pair of line charts per provider/model."""
    sub = Html(
        f"{trend.runs} run(s), {trend.turns} turn(s) under <code>{esc(trend.root)}</code>"
        f" · {len(trend.days)} day(s)"
    )
    body: list[str] = []
    if trend.unreadable or trend.superseded:
        body.append(
            f"<div class='note'>{trend.unreadable} unreadable line(s) skipped; "
            f"{trend.superseded} superseded line(s) ignored.</div>"
        )
    if not trend.rows:
        body.append("<p class='muted'>No turns found.</p>")
        return page("Trend", sub, body)
    series: dict[tuple[str, str], dict[str, TrendRow]] = {}
    for r in trend.rows:
        series.setdefault((r.provider, r.model), {})[r.day] = r
    days = list(trend.days)
    for (provider, model), by_day in series.items():
        rows = [by_day.get(d) for d in days]
        turns = sum(r.turns for r in rows if r)
        body.append(
            f"<h2>{esc(model)} <span class='muted'>via {esc(provider)}</span> "
            f"<span class='muted'>· {turns} turns</span></h2>"
        )
        body.append(legend([("TTFT p50", _PALETTE[0]), ("TTFT p95", _PALETTE[1])]))
        body.append(
            line_chart_svg(
                days,
                [
                    Series("TTFT p50", _PALETTE[0], tuple(r.ttft_p50 if r else None for r in rows)),
                    Series(
                        "TTFT p95",
                        _PALETTE[1],
                        tuple(r.ttft_p95 if r else None for r in rows),
                        dashed=True,
                    ),
                ],
                y_label="TTFT (ms)",
                height=230,
            )
        )
        body.append(legend([("error rate", _PALETTE[2]), ("check failure rate", _PALETTE[3])]))
        body.append(
            line_chart_svg(
                days,
                [
                    Series("error rate", _PALETTE[2], tuple(_pct(r, "error_rate") for r in rows)),
                    Series(
                        "check failure rate",
                        _PALETTE[3],
                        tuple(_pct(r, "check_failure_rate") for r in rows),
                    ),
                ],
                y_label="rate (%)",
                y_fmt=lambda v: f"{v:.0f}%",
                y_max=None,
                height=200,
            )
        )
    body.append("<h2>All groups</h2>")
    headers = ["day", "provider", "model", "runs", "turns", "errors", "checks failed"]
    body.append(
        html_table(
            [*headers, "TTFT p50", "TTFT p95"],
            [
                [
                    r.day,
                    r.provider,
                    r.model,
                    r.runs,
                    r.turns,
                    fmt_pct(r.error_rate),
                    fmt_pct(r.check_failure_rate),
                    fmt_ms(r.ttft_p50),
                    fmt_ms(r.ttft_p95),
                ]
                for r in trend.rows
            ],
            numeric=range(3, 9),
        )
    )
    return page("Trend", sub, body)


def _pct(row: TrendRow | None, name: str) -> float | None:
    value = getattr(row, name) if row else None
    return None if value is None else value * 100
