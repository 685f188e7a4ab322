"""``runner diff BASE_RUN NEW_RUN``: what changed between two runs, and is it worse.

Turns are aligned by (scenario, turn, repeat), and when a key occurs twice the later
line wins. When only one of the runs used ``--repeat``, the other run's turns are
aligned with its first repeat. Superseded and
unreadable lines are skipped as in the report.

A *regression* is any of:

- a turn that was ok and is now error or skipped, or was skipped and is now error;
- a check that passed (or did not exist) and now fails;
- a reply whose similarity to the base reply is below ``min_similarity`` (off by
  default: reply changes are only reported);
- a scenario's (or the whole run's) TTFT or duration p50 that grew by more than
  ``max_latency_ratio``, when the base p50 is at least ``min_latency_base_ms``
  (small numbers are mostly noise);
- an error rate (errors / (ok + error)) that rose by more than
  ``max_error_rate_increase`` (default 5 points: each newly failing turn is already a
  status regression; the rate catches drift in runs that do not align turn by turn).

Latency p50s are over ok turns. Similarity is ``difflib.SequenceMatcher`` over
characters; its cheap ``quick_ratio`` upper bound is used alone when it already
proves the reply is below the threshold, or when the replies are very long.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runner.htmlreport import (
    Html,
    PairRow,
    badge,
    cards,
    esc,
    html_table,
    legend,
    page,
    paired_bars_svg,
)
from runner.report import (
    Transcript,
    checks_of,
    fmt_ms,
    fmt_pct,
    problems_of,
    read_run_info,
    table,
    timing,
    transcript_path,
    turn_key,
    turn_label,
)
from runner.stats import percentile, ratio

__all__ = [
    "DIFF_SCHEMA",
    "CheckChange",
    "Diff",
    "DiffThresholds",
    "ErrorRateChange",
    "LatencyShift",
    "ReplyChange",
    "StatusChange",
    "build_diff",
    "render_diff_html",
    "render_json",
    "render_text",
]

DIFF_SCHEMA = "convo-runner/diff@1"
DIFF_LINES = 20
TEXT_REPLIES = 10  # reply diffs shown in text; JSON has them all
HTML_REPLIES = 50
LONG_REPLY_CHARS = 20_000  # both replies together; above this only quick_ratio is used
ALL = "(all)"
_KIND_ORDER = {"regression": 0, "improvement": 1, "change": 2}

Key = tuple[str, int, int | None]


@dataclass(frozen=True)
class DiffThresholds:
    """When a change counts as a regression. Each is a ``runner diff`` flag."""

    max_latency_ratio: float = 1.5
    min_latency_base_ms: float = 50.0
    min_similarity: float = 0.0
    max_error_rate_increase: float = 0.05


@dataclass(frozen=True)
class StatusChange:
    scenario: str
    turn: int
    repeat: int | None
    base: str
    new: str
    kind: str  # "regression" | "improvement" | "change"
    detail: tuple[str, ...]  # what went wrong in the new turn (or in the base one)


@dataclass(frozen=True)
class CheckChange:
    scenario: str
    turn: int
    repeat: int | None
    check: str  # the check name, with "#2", "#3"... for repeated names in one turn
    base_passed: bool | None  # None: the check is not in the base turn
    new_passed: bool | None
    kind: str
    detail: str


@dataclass(frozen=True)
class ReplyChange:
    scenario: str
    turn: int
    repeat: int | None
    similarity: float
    approximate: bool  # True when similarity is quick_ratio's upper bound
    diff: tuple[str, ...]
    regression: bool


@dataclass(frozen=True)
class LatencyShift:
    scenario: str  # ALL for the whole run
    metric: str  # "ttft" | "duration"
    base_p50: float | None
    new_p50: float | None
    ratio: float | None  # new / base
    regression: bool


@dataclass(frozen=True)
class ErrorRateChange:
    scenario: str
    base_rate: float | None
    new_rate: float | None
    delta: float | None
    regression: bool


@dataclass(frozen=True)
class Diff:
    base_run_id: str
    new_run_id: str
    thresholds: DiffThresholds
    scenarios_added: tuple[str, ...]
    scenarios_removed: tuple[str, ...]
    turns_added: tuple[Key, ...]  # in scenarios both runs have
    turns_removed: tuple[Key, ...]
    status_changes: tuple[StatusChange, ...]
    check_changes: tuple[CheckChange, ...]
    reply_changes: tuple[ReplyChange, ...]
    latency: tuple[LatencyShift, ...]
    error_rates: tuple[ErrorRateChange, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def regressions(self) -> int:
        return (
            sum(c.kind == "regression" for c in self.status_changes)
            + sum(c.kind == "regression" for c in self.check_changes)
            + sum(c.regression for c in self.reply_changes)
            + sum(s.regression for s in self.latency)
            + sum(e.regression for e in self.error_rates)
        )

    @property
    def improvements(self) -> int:
        return sum(c.kind == "improvement" for c in self.status_changes) + sum(
            c.kind == "improvement" for c in self.check_changes
        )


# ---------------------------------------------------------------------------
# Loading


@dataclass
class _Turn:
    status: str
    reply: str
    checks: dict[str, tuple[bool, str]]
    problems: tuple[str, ...]
    ttft_ms: float | None
    duration_ms: float | None


@dataclass
class _Run:
    run_id: str
    turns: dict[Key, _Turn]
    scenarios: dict[str, None]  # in order of first appearance
    ttft: dict[str, list[float]]
    duration: dict[str, list[float]]
    warnings: list[str]


def _load(run_dir: Path, label: str) -> _Run:
    transcript = Transcript(transcript_path(run_dir))
    run = _Run(
        run_id=str(read_run_info(run_dir).get("run_id") or run_dir.name),
        turns={},
        scenarios={},
        ttft={},
        duration={},
        warnings=[],
    )
    for rec in transcript:
        key = turn_key(rec)
        run.scenarios.setdefault(key[0])
        checks: dict[str, tuple[bool, str]] = {}
        seen: dict[str, int] = {}
        for c in checks_of(rec):
            n = seen[c["name"]] = seen.get(c["name"], 0) + 1
            name = c["name"] if n == 1 else f"{c['name']}#{n}"
            detail = c.get("detail")
            checks[name] = (c.get("passed") is True, detail if isinstance(detail, str) else "")
        reply = rec.get("reply")
        ttft, duration, _ = timing(rec)
        run.turns[key] = _Turn(
            status=rec["status"],
            reply=reply if isinstance(reply, str) else "",
            checks=checks,
            problems=problems_of(rec),
            ttft_ms=ttft,
            duration_ms=duration,
        )
    for (scenario, _, _), t in run.turns.items():
        if t.status != "ok":
            continue
        if t.ttft_ms is not None:
            run.ttft.setdefault(scenario, []).append(t.ttft_ms)
        if t.duration_ms is not None:
            run.duration.setdefault(scenario, []).append(t.duration_ms)
    run.warnings = [f"{label}: {w}" for w in transcript.warnings()]
    return run


# ---------------------------------------------------------------------------
# Comparing


def _status_kind(base: str, new: str) -> str:
    if base == "ok" and new in ("error", "skipped"):
        return "regression"
    if base == "skipped" and new == "error":
        return "regression"
    if new == "ok":
        return "improvement"
    return "change"


def _similarity(a: str, b: str, threshold: float) -> tuple[float, bool]:
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    upper = matcher.quick_ratio()
    if upper < threshold or len(a) + len(b) > LONG_REPLY_CHARS:
        return upper, True
    return matcher.ratio(), False


def _unified(a: str, b: str) -> tuple[str, ...]:
    lines = list(
        difflib.unified_diff(a.splitlines(), b.splitlines(), "base", "new", lineterm="", n=1)
    )
    if len(lines) > DIFF_LINES:
        more = len(lines) - DIFF_LINES
        lines = [*lines[:DIFF_LINES], f"… ({more} more diff lines)"]
    return tuple(lines)


def _p50(values: Iterable[float]) -> float | None:
    return percentile(values, 50)


def _shift(
    scenario: str, metric: str, base: list[float], new: list[float], th: DiffThresholds
) -> LatencyShift:
    b, n = _p50(base), _p50(new)
    r = n / b if b and n is not None and b > 0 else None
    regression = (
        r is not None and b is not None and b >= th.min_latency_base_ms and r > th.max_latency_ratio
    )
    return LatencyShift(scenario, metric, b, n, r, regression)


def _error_rate(turns: Iterable[_Turn]) -> float | None:
    ok = err = 0
    for t in turns:
        ok += t.status == "ok"
        err += t.status == "error"
    return ratio(err, ok + err)


def _align_repeats(a: _Run, b: _Run) -> None:
    """When one run has no repeat numbers and the other does, use the other's first."""
    a_reps = {k[2] for k in a.turns}
    b_reps = {k[2] for k in b.turns}
    for plain, numbered in ((a, b_reps), (b, a_reps)):
        numbers = [r for r in numbered if r is not None]
        if numbers and {k[2] for k in plain.turns} == {None}:
            first = min(numbers)
            plain.turns = {(s, t, first): v for (s, t, _), v in plain.turns.items()}


def build_diff(base: Path, new: Path, *, thresholds: DiffThresholds | None = None) -> Diff:
    """Compare two run folders; ``thresholds`` say what counts as a regression."""
    th = thresholds or DiffThresholds()
    b, n = _load(base, "base"), _load(new, "new")
    _align_repeats(b, n)
    common = [s for s in n.scenarios if s in b.scenarios]
    added = tuple(s for s in n.scenarios if s not in b.scenarios)
    removed = tuple(s for s in b.scenarios if s not in n.scenarios)
    in_common = set(common)

    status: list[StatusChange] = []
    checks: list[CheckChange] = []
    replies: list[ReplyChange] = []
    for key, nt in n.turns.items():
        bt = b.turns.get(key)
        if bt is None:
            continue
        if bt.status != nt.status:
            kind = _status_kind(bt.status, nt.status)
            detail = nt.problems if nt.status != "ok" else bt.problems
            status.append(StatusChange(*key, bt.status, nt.status, kind, detail))
        # Checks are compared only between two ok turns: when the status changed, that
        # change is the news, and an errored turn has no checks to compare with.
        names = [*bt.checks, *(c for c in nt.checks if c not in bt.checks)]
        for name in names if bt.status == nt.status == "ok" else []:
            was, now = bt.checks.get(name), nt.checks.get(name)
            was_ok = None if was is None else was[0]
            now_ok = None if now is None else now[0]
            if was_ok == now_ok or now_ok is None:
                continue  # unchanged, or the check is gone (scenario edited)
            kind = "improvement" if now_ok else "regression"
            why = (now or was or (False, ""))[1]
            checks.append(CheckChange(*key, name, was_ok, now_ok, kind, why))
        if bt.status == nt.status == "ok" and bt.reply != nt.reply:
            sim, approx = _similarity(bt.reply, nt.reply, th.min_similarity)
            replies.append(
                ReplyChange(
                    *key,
                    similarity=sim,
                    approximate=approx,
                    diff=_unified(bt.reply, nt.reply),
                    regression=sim < th.min_similarity,
                )
            )

    latency: list[LatencyShift] = []
    rates: list[ErrorRateChange] = []
    groups = [(s, s) for s in common] + [(ALL, None)]
    for label, scenario in groups:
        for metric, bvals, nvals in (
            ("ttft", b.ttft, n.ttft),
            ("duration", b.duration, n.duration),
        ):
            if scenario is None:
                bl = [v for s in common for v in bvals.get(s, [])]
                nl = [v for s in common for v in nvals.get(s, [])]
            else:
                bl, nl = bvals.get(scenario, []), nvals.get(scenario, [])
            latency.append(_shift(label, metric, bl, nl, th))
        keep = in_common if scenario is None else {scenario}
        br = _error_rate(t for k, t in b.turns.items() if k[0] in keep)
        nr = _error_rate(t for k, t in n.turns.items() if k[0] in keep)
        delta = nr - br if br is not None and nr is not None else None
        rates.append(
            ErrorRateChange(
                label,
                br,
                nr,
                delta,
                delta is not None and delta > th.max_error_rate_increase + 1e-12,
            )
        )

    return Diff(
        base_run_id=b.run_id,
        new_run_id=n.run_id,
        thresholds=th,
        scenarios_added=added,
        scenarios_removed=removed,
        turns_added=tuple(k for k in n.turns if k[0] in in_common and k not in b.turns),
        turns_removed=tuple(k for k in b.turns if k[0] in in_common and k not in n.turns),
        status_changes=tuple(status),
        check_changes=tuple(checks),
        reply_changes=tuple(replies),
        latency=tuple(latency),
        error_rates=tuple(rates),
        warnings=tuple(b.warnings + n.warnings),
    )


# ---------------------------------------------------------------------------
# Rendering


def _most_changed(diff: Diff, limit: int) -> list[ReplyChange]:
    """Regressions first, then the least similar; stable within ties."""
    ranked = sorted(diff.reply_changes, key=lambda r: (not r.regression, r.similarity))
    return ranked[:limit]


def _ratio_text(r: float | None) -> str:
    return "-" if r is None else f"x{r:.2f}"


def _mark(regression: bool) -> str:
    return "REGRESSION" if regression else ""


def render_text(diff: Diff) -> str:
    """The diff as plain text for a terminal."""
    out = [
        f"Diff {diff.base_run_id} (base) -> {diff.new_run_id} (new)",
        f"Regressions: {diff.regressions}   Improvements: {diff.improvements}",
    ]
    if diff.scenarios_added or diff.scenarios_removed:
        out.append("")
        if diff.scenarios_added:
            out.append("Scenarios added: " + ", ".join(diff.scenarios_added))
        if diff.scenarios_removed:
            out.append("Scenarios removed: " + ", ".join(diff.scenarios_removed))
    if diff.turns_added or diff.turns_removed:
        out.append(
            f"Turns only in new: {len(diff.turns_added)}; only in base: {len(diff.turns_removed)}"
        )
    if diff.status_changes:
        out += ["", "Status changes"]
        for c in sorted(diff.status_changes, key=lambda c: _KIND_ORDER[c.kind]):
            out.append(
                f"  {c.kind.upper():<12} {turn_label(c.scenario, c.turn, c.repeat)}: "
                f"{c.base} -> {c.new}"
            )
            out += [f"      {p}" for p in c.detail]
    if diff.check_changes:
        out += ["", "Checks"]
        for k in sorted(diff.check_changes, key=lambda k: _KIND_ORDER[k.kind]):
            what = "now fails" if k.kind == "regression" else "now passes"
            if k.base_passed is None:
                what = "new check, fails" if k.kind == "regression" else "new check, passes"
            out.append(
                f"  {k.kind.upper():<12} {turn_label(k.scenario, k.turn, k.repeat)}: "
                f"{k.check} {what}: {k.detail}"
            )
    if diff.reply_changes:
        shown = _most_changed(diff, TEXT_REPLIES)
        out += ["", f"Replies changed ({len(diff.reply_changes)}; least similar first)"]
        for r in shown:
            approx = "<=" if r.approximate else ""
            out.append(
                f"  {_mark(r.regression):<12} {turn_label(r.scenario, r.turn, r.repeat)}: "
                f"similarity {approx}{r.similarity:.2f}"
            )
            out += [f"      {line}" for line in r.diff]
        if len(diff.reply_changes) > len(shown):
            out.append(f"  ... and {len(diff.reply_changes) - len(shown)} more (see --json)")
    rows = []
    by_key = {(s.scenario, s.metric): s for s in diff.latency}
    for scen in dict.fromkeys(s.scenario for s in diff.latency):
        t, d = by_key[(scen, "ttft")], by_key[(scen, "duration")]
        rows.append(
            [
                scen,
                fmt_ms(t.base_p50),
                fmt_ms(t.new_p50),
                _ratio_text(t.ratio),
                fmt_ms(d.base_p50),
                fmt_ms(d.new_p50),
                _ratio_text(d.ratio),
                "REGRESSION" if t.regression or d.regression else "",
            ]
        )
    out += ["", f"Latency p50, new/base (regression above x{diff.thresholds.max_latency_ratio:g})"]
    out.append(
        table(
            ["scenario", "TTFT base", "TTFT new", "ratio", "dur base", "dur new", "ratio", ""],
            rows,
        )
    )
    out += ["", "Error rate (errors / (ok + error))"]
    out.append(
        table(
            ["scenario", "base", "new", "change", ""],
            [
                [
                    e.scenario,
                    fmt_pct(e.base_rate),
                    fmt_pct(e.new_rate),
                    "-" if e.delta is None else f"{e.delta * 100:+.0f} pts",
                    _mark(e.regression),
                ]
                for e in diff.error_rates
            ],
        )
    )
    if diff.warnings:
        out += ["", "Note: " + "; ".join(diff.warnings) + "."]
    return "\n".join(out) + "\n"


def render_json(diff: Diff) -> dict[str, Any]:
    """The diff as JSON-able data (``--json``)."""
    return {
        "schema": DIFF_SCHEMA,
        "regressions": diff.regressions,
        "improvements": diff.improvements,
        **asdict(diff),
    }


def _diff_pre(lines: Iterable[str]) -> Html:
    out = []
    for line in lines:
        if line.startswith(("+++", "---")):
            cls = "muted"
        elif line.startswith("+"):
            cls = "add"
        elif line.startswith("-"):
            cls = "del"
        elif line.startswith("@@"):
            cls = "hunk"
        else:
            cls = ""
        out.append(f"<span class='{cls}'>{esc(line)}</span>" if cls else str(esc(line)))
    return Html("<pre class='diff'>" + "\n".join(out) + "</pre>")


def render_diff_html(diff: Diff) -> str:
    """The diff as one self-contained HTML page."""
    th = diff.thresholds
    sub = Html(
        f"base <code>{esc(diff.base_run_id)}</code> → new <code>{esc(diff.new_run_id)}</code>"
        f" · latency regression above ×{th.max_latency_ratio:g} (base p50 ≥ "
        f"{th.min_latency_base_ms:g} ms) · error-rate increase above "
        f"{th.max_error_rate_increase * 100:g} pts"
        + (f" · similarity below {th.min_similarity:g}" if th.min_similarity > 0 else "")
    )
    body: list[str] = []
    if diff.warnings:
        body.append(f"<div class='note'>{esc('; '.join(diff.warnings))}.</div>")
    body.append(
        cards(
            [
                ("Regressions", str(diff.regressions), "bad" if diff.regressions else "good"),
                ("Improvements", str(diff.improvements), "good" if diff.improvements else ""),
                ("Status changes", str(len(diff.status_changes)), ""),
                ("Checks changed", str(len(diff.check_changes)), ""),
                ("Replies changed", str(len(diff.reply_changes)), ""),
                ("Scenarios added", str(len(diff.scenarios_added)), ""),
                ("Scenarios removed", str(len(diff.scenarios_removed)), ""),
            ]
        )
    )
    if diff.scenarios_added or diff.scenarios_removed:
        items = [f"added: {', '.join(diff.scenarios_added) or 'none'}"]
        items.append(f"removed: {', '.join(diff.scenarios_removed) or 'none'}")
        body.append(f"<p>Scenarios {esc('; '.join(items))}.</p>")
    if diff.turns_added or diff.turns_removed:
        body.append(
            f"<p class='muted'>Turns only in new: {len(diff.turns_added)}; "
            f"only in base: {len(diff.turns_removed)}.</p>"
        )

    body.append("<h2>Latency p50</h2>")
    body.append(
        legend([("base", "#cbd5e1"), ("new", "var(--accent)"), ("new, regression", "var(--error)")])
    )
    body.append("<div class='grid2'>")
    for metric, title in (("ttft", "TTFT"), ("duration", "Duration")):
        rows = [
            PairRow(s.scenario, s.base_p50, s.new_p50, _ratio_text(s.ratio), s.regression)
            for s in diff.latency
            if s.metric == metric
        ]
        body.append(
            f"<figure><figcaption>{title}</figcaption>"
            + paired_bars_svg(rows, width=520, label=f"{title} p50, base and new")
            + "</figure>"
        )
    body.append("</div>")

    body.append(f"<h2>Status changes ({len(diff.status_changes)})</h2>")
    if diff.status_changes:
        rows_s = [
            [
                badge(c.kind, c.kind),
                c.scenario,
                c.turn,
                c.repeat,
                Html(f"{badge(c.base, c.base)} → {badge(c.new, c.new)}"),
                Html("<br>".join(esc(p) for p in c.detail)),
            ]
            for c in sorted(diff.status_changes, key=lambda c: _KIND_ORDER[c.kind])
        ]
        body.append(
            html_table(
                ["", "scenario", "turn", "repeat", "status", "detail"], rows_s, numeric=(2, 3)
            )
        )
    else:
        body.append("<p class='muted'>No turn changed status.</p>")

    body.append(f"<h2>Checks ({len(diff.check_changes)})</h2>")
    if diff.check_changes:

        def state(v: bool | None) -> Html:
            if v is None:
                return badge("absent", "skipped")
            return badge("pass", "ok") if v else badge("fail", "error")

        rows_c = [
            [
                badge(k.kind, k.kind),
                k.scenario,
                k.turn,
                k.repeat,
                k.check,
                Html(f"{state(k.base_passed)} → {state(k.new_passed)}"),
                k.detail,
            ]
            for k in sorted(diff.check_changes, key=lambda k: _KIND_ORDER[k.kind])
        ]
        body.append(
            html_table(
                ["", "scenario", "turn", "repeat", "check", "result", "detail"],
                rows_c,
                numeric=(2, 3),
            )
        )
    else:
        body.append("<p class='muted'>No check changed result.</p>")

    body.append(f"<h2>Replies changed ({len(diff.reply_changes)})</h2>")
    if not diff.reply_changes:
        body.append("<p class='muted'>Every aligned ok reply is identical.</p>")
    shown = _most_changed(diff, HTML_REPLIES)
    if diff.reply_changes:
        body.append("<p class='muted'>Least similar first.</p>")
    for r in shown:
        approx = "≤ " if r.approximate else ""
        flag = badge("regression", "regression") if r.regression else Html("")
        body.append(
            f"<h3>{esc(turn_label(r.scenario, r.turn, r.repeat))} · similarity "
            f"{approx}{r.similarity:.2f} {flag}</h3>" + _diff_pre(r.diff)
        )

    if len(diff.reply_changes) > len(shown):
        more = len(diff.reply_changes) - len(shown)
        body.append(f"<p class='muted'>… and {more} more (see the JSON output).</p>")

    body.append("<h2>Error rate</h2>")
    rows_e = [
        [
            e.scenario,
            fmt_pct(e.base_rate),
            fmt_pct(e.new_rate),
            "-" if e.delta is None else f"{e.delta * 100:+.0f} pts",
            badge("regression", "regression") if e.regression else "",
        ]
        for e in diff.error_rates
    ]
    body.append(html_table(["scenario", "base", "new", "change", ""], rows_e, numeric=(1, 2, 3)))
    return page(f"Diff {diff.base_run_id} → {diff.new_run_id}", sub, body)
