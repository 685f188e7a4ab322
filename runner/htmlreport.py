"""Self-contained HTML pages with inline-SVG charts for the report, the diff and the trend.

A page is one file: inline CSS, inline SVG, no script, no font or image fetched from
anywhere. A Content-Security-Policy meta tag (``default-src 'none'``) makes the
browser enforce that, so even text that slipped through escaping could not run or
call out. All text that comes from transcripts goes through ``esc``.

Chart helpers return SVG fragments; tooltips are SVG ``<title>`` elements.
``render_report_html`` builds the page for ``runner report``; ``runner.diff`` and
``runner.trend`` build theirs from the same pieces.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from runner._version import __version__
from runner.report import (
    SCENARIO_HEADERS,
    Report,
    TimelineBar,
    TurnRef,
    fmt_ms,
    fmt_pct,
    fmt_rate,
    scenario_row,
    turn_label,
)

__all__ = [
    "BarRow",
    "Html",
    "PairRow",
    "Series",
    "badge",
    "bar_list_svg",
    "cards",
    "esc",
    "histogram_svg",
    "html_table",
    "legend",
    "line_chart_svg",
    "page",
    "paired_bars_svg",
    "render_report_html",
    "timeline_svg",
]

WIDTH = 1040  # viewBox width of full-width charts

_CSS = """
:root{--fg:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#fff;--panel:#f9fafb;
--ok:#16a34a;--error:#dc2626;--skipped:#9ca3af;--warn:#d97706;--accent:#2563eb;
--accent2:#7c3aed;--grid:#eef0f3}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1100px;margin:0 auto;padding:28px 28px 48px}
header h1{font-size:22px;margin:0 0 4px}
header .sub{color:var(--muted);font-size:13px}
header .sub code{font-size:12px}
h2{font-size:16px;margin:32px 0 10px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:18px 0 6px}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(112px,1fr));gap:10px;
margin:18px 0 6px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .k{color:var(--muted);font-size:12px}
.card .v{font-size:20px;font-weight:600;font-variant-numeric:tabular-nums}
.card.bad .v{color:var(--error)} .card.good .v{color:var(--ok)}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600;background:var(--panel)}
td.n,th.n{text-align:right;white-space:nowrap}
td:first-child{white-space:nowrap}
tr.total td{font-weight:600;border-top:2px solid var(--fg)}
tbody tr:hover td{background:#f3f4f6}
.badge{display:inline-block;padding:1px 8px;border-radius:999px;font-size:12px;font-weight:600;
background:var(--panel);border:1px solid var(--line)}
.badge.ok,.badge.improvement{color:var(--ok);border-color:var(--ok)}
.badge.error,.badge.regression{color:var(--error);border-color:var(--error)}
.badge.skipped{color:var(--muted)}
.badge.warn{color:var(--warn);border-color:var(--warn)}
.note{background:#fffbeb;border:1px solid #fcd34d;border-radius:8px;padding:8px 12px;margin:12px 0}
.muted{color:var(--muted)}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:18px}
@media (max-width:800px){.grid2{grid-template-columns:1fr}}
figure{margin:0}
figcaption{font-size:13px;font-weight:600;margin-bottom:4px}
svg{width:100%;height:auto;display:block}
svg text{font-family:inherit;fill:var(--muted);font-size:11px}
svg .title{fill:var(--fg);font-size:12px;font-weight:600}
svg .axis{stroke:#9ca3af;stroke-width:1}
svg .gridline{stroke:var(--grid);stroke-width:1}
svg .ok{fill:var(--ok)} svg .error{fill:var(--error)} svg .skipped{fill:var(--skipped)}
svg .checkfail{fill:var(--warn)} svg .accent{fill:var(--accent)} svg .base{fill:#cbd5e1}
svg .marker{stroke:var(--fg);stroke-width:1;stroke-dasharray:4 3}
svg rect:hover,svg circle:hover{opacity:.75}
svg .lbl{fill:var(--fg)}
.legend{display:flex;flex-wrap:wrap;gap:14px;font-size:12px;color:var(--muted);margin:4px 0 8px}
.legend span::before{content:"";display:inline-block;width:10px;height:10px;border-radius:2px;
margin-right:5px;vertical-align:-1px;background:var(--c)}
pre.diff{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:8px;
overflow-x:auto;margin:4px 0;font-size:12px;line-height:1.35;white-space:pre-wrap}
pre.diff .add{color:var(--ok)} pre.diff .del{color:var(--error)} pre.diff .hunk{color:var(--accent)}
ul.problems{margin:0;padding-left:16px}
footer{margin-top:40px;color:var(--muted);font-size:12px}
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


class Html(str):
    """Markup that is already safe; ``esc`` leaves it alone."""


def esc(text: object) -> Html:
    """Escape any value for HTML text or attribute context."""
    if isinstance(text, Html):
        return text
    return Html(html.escape(str(text), quote=True))


def page(title: str, subtitle: Html, body: Iterable[str]) -> str:
    """A complete, self-contained HTML document."""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title>",
            f"<style>{_CSS}</style>",
            "</head><body><main>",
            f"<header><h1>{esc(title)}</h1><div class='sub'>{subtitle}</div></header>",
            *body,
            f"<footer>Generated by convo-runner {esc(__version__)}.</footer>",
            "</main></body></html>",
            "",
        ]
    )


def html_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    numeric: Iterable[int] = (),
    row_classes: Sequence[str] | None = None,
) -> Html:
    """A table; cells are escaped unless they are ``Html``; ``numeric`` right-aligns."""
    num = set(numeric)
    head = "".join(
        f"<th class='n'>{esc(h)}</th>" if i in num else f"<th>{esc(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for r, row in enumerate(rows):
        cls = row_classes[r] if row_classes and r < len(row_classes) else ""
        cells = "".join(
            f"<td class='n'>{esc(c)}</td>" if i in num else f"<td>{esc(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr class='{esc(cls)}'>{cells}</tr>" if cls else f"<tr>{cells}</tr>")
    return Html(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def cards(items: Iterable[tuple[str, str, str]]) -> Html:
    """Summary tiles: (label, value, tone) with tone '', 'good' or 'bad'."""
    tiles = "".join(
        f"<div class='card {esc(tone)}'><div class='k'>{esc(k)}</div>"
        f"<div class='v'>{esc(v)}</div></div>"
        for k, v, tone in items
    )
    return Html(f"<div class='cards'>{tiles}</div>")


def badge(text: str, kind: str = "") -> Html:
    return Html(f"<span class='badge {esc(kind)}'>{esc(text)}</span>")


def legend(items: Iterable[tuple[str, str]]) -> Html:
    """A legend row: (label, CSS colour or var(--name))."""
    spans = "".join(f"<span style='--c:{esc(c)}'>{esc(label)}</span>" for label, c in items)
    return Html(f"<div class='legend'>{spans}</div>")


# ---------------------------------------------------------------------------
# Scales and axes


def nice_step(span: float, target: int) -> float:
    """A 1/2/5 x 10^k step that cuts ``span`` into about ``target`` pieces."""
    if span <= 0:
        return 1.0
    raw = span / max(1, target)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return float(m * mag)
    return float(10 * mag)


def _ticks(hi: float, target: int = 5) -> tuple[float, list[float]]:
    """(rounded-up top, ticks from 0) for an axis showing 0..hi."""
    step = nice_step(hi, target)
    top = step * max(1, math.ceil(hi / step - 1e-9))
    n = round(top / step)
    return top, [i * step for i in range(n + 1)]


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:g}"


def _ms_unit(hi_ms: float) -> tuple[float, str]:
    """Divisor and unit for an axis of milliseconds: seconds once values are large."""
    return (1000.0, "s") if hi_ms >= 5000 else (1.0, "ms")


def _svg(width: float, height: float, parts: Iterable[str], label: str) -> Html:
    return Html(
        f"<svg viewBox='0 0 {width:.0f} {height:.0f}' role='img' aria-label='{esc(label)}' "
        f"xmlns='http://www.w3.org/2000/svg'>{''.join(parts)}</svg>"
    )


def _empty(width: float, message: str) -> Html:
    return _svg(
        width,
        60,
        [f"<text x='{width / 2:.0f}' y='34' text-anchor='middle'>{esc(message)}</text>"],
        message,
    )


# ---------------------------------------------------------------------------
# Charts


def histogram_svg(
    values: Sequence[float],
    *,
    label: str,
    css_class: str = "accent",
    markers: Sequence[tuple[str, float | None]] = (),
    width: float = 500,
    height: float = 240,
) -> Html:
    """A histogram of millisecond values from 0, with dashed markers (e.g. p50, p95)."""
    if not values:
        return _empty(width, f"No {label} values")
    hi = max(values)
    div, unit = _ms_unit(hi)
    top, _ = _ticks(hi / div if hi > 0 else 1)
    target_bins = min(40, max(12, round(2 * math.sqrt(len(values)))))
    step = nice_step(top, target_bins)
    nbins = max(1, math.ceil(top / step - 1e-9))
    counts = [0] * nbins
    for v in values:
        counts[min(nbins - 1, int(v / div / step))] += 1
    ml, mr, mt, mb = 44, 14, 14, 42
    pw, ph = width - ml - mr, height - mt - mb
    ytop, yticks = _ticks(max(counts), 4)
    x_of = _scale(0, nbins * step, ml, ml + pw)
    y_of = _scale(0, ytop, mt + ph, mt)
    parts = _grid_y(yticks, y_of, ml, ml + pw, _num)
    for i, c in enumerate(counts):
        if not c:
            continue
        x0, x1 = x_of(i * step), x_of((i + 1) * step)
        y = y_of(c)
        rng = f"{_num(i * step)}–{_num((i + 1) * step)} {unit}"
        parts.append(
            f"<rect class='{esc(css_class)}' x='{x0 + 0.5:.1f}' y='{y:.1f}' "
            f"width='{max(1.0, x1 - x0 - 1):.1f}' height='{mt + ph - y:.1f}'>"
            f"<title>{esc(rng)}: {c} turn{'s' if c != 1 else ''}</title></rect>"
        )
    _, xticks = _ticks(nbins * step, 6)
    parts += _axis_x(xticks, x_of, mt + ph, _num)
    for name, value in markers:
        if value is None:
            continue
        x = x_of(min(value / div, nbins * step))
        parts.append(
            f"<line class='marker' x1='{x:.1f}' x2='{x:.1f}' y1='{mt}' y2='{mt + ph}'>"
            f"<title>{esc(name)} {esc(fmt_ms(value))}</title></line>"
            f"<text class='lbl' x='{x + 3:.1f}' y='{mt + 10}'>{esc(name)}</text>"
        )
    parts.append(
        f"<text x='{ml + pw / 2:.0f}' y='{height - 6}' text-anchor='middle'>"
        f"{esc(label)} ({unit})</text>"
        f"<text x='12' y='{mt + ph / 2:.0f}' text-anchor='middle' "
        f"transform='rotate(-90 12 {mt + ph / 2:.0f})'>turns</text>"
    )
    return _svg(width, height, parts, f"histogram of {label}")


def _scale(d0: float, d1: float, r0: float, r1: float) -> Callable[[float], float]:
    span = (d1 - d0) or 1.0
    return lambda v: r0 + (v - d0) * (r1 - r0) / span


def _grid_y(
    ticks: Sequence[float],
    y_of: Callable[[float], float],
    x0: float,
    x1: float,
    fmt: Callable[[float], str],
) -> list[str]:
    out = []
    for t in ticks:
        y = y_of(t)
        out.append(
            f"<line class='gridline' x1='{x0}' x2='{x1}' y1='{y:.1f}' y2='{y:.1f}'/>"
            f"<text x='{x0 - 6}' y='{y + 4:.1f}' text-anchor='end'>{esc(fmt(t))}</text>"
        )
    return out


def _axis_x(
    ticks: Sequence[float], x_of: Callable[[float], float], y: float, fmt: Callable[[float], str]
) -> list[str]:
    x_lo, x_hi = x_of(ticks[0]), x_of(ticks[-1])
    out = [f"<line class='axis' x1='{x_lo:.1f}' x2='{x_hi:.1f}' y1='{y}' y2='{y}'/>"]
    for t in ticks:
        x = x_of(t)
        out.append(
            f"<line class='axis' x1='{x:.1f}' x2='{x:.1f}' y1='{y}' y2='{y + 4}'/>"
            f"<text x='{x:.1f}' y='{y + 16}' text-anchor='middle'>{esc(fmt(t))}</text>"
        )
    return out


def _status_class(status: str, checks_failed: int) -> str:
    if status == "ok":
        return "checkfail" if checks_failed else "ok"
    return "error" if status == "error" else "skipped"


def timeline_svg(bars: Sequence[TimelineBar], *, width: float = WIDTH) -> Html:
    """Turns of one scenario as bars; one lane per repeat, time from the lane's start."""
    if not bars:
        return _empty(width, "No timed turns")
    lanes: dict[int | None, list[TimelineBar]] = {}
    for bar in bars:
        lanes.setdefault(bar.repeat, []).append(bar)
    starts = {k: min(b.start_ms for b in v) for k, v in lanes.items()}
    end = max(b.start_ms - starts[b.repeat] + (b.duration_ms or 0) for b in bars)
    div, unit = _ms_unit(end)
    top, xticks = _ticks(end / div if end > 0 else 1, 8)
    lane_h, gap = 22, 8
    ml, mr, mt, mb = 84, 16, 8, 40
    height = mt + len(lanes) * (lane_h + gap) + mb
    x_of = _scale(0, top, ml, width - mr)
    parts: list[str] = []
    for t in xticks:
        x = x_of(t)
        parts.append(
            f"<line class='gridline' x1='{x:.1f}' x2='{x:.1f}' y1='{mt}' y2='{height - mb}'/>"
        )
    for row, (repeat, lane) in enumerate(sorted(lanes.items(), key=lambda kv: kv[0] or 0)):
        y = mt + row * (lane_h + gap)
        name = f"repeat {repeat}" if repeat is not None else "turns"
        parts.append(
            f"<text class='lbl' x='{ml - 8}' y='{y + lane_h / 2 + 4:.1f}' "
            f"text-anchor='end'>{esc(name)}</text>"
        )
        for bar in lane:
            start = (bar.start_ms - starts[repeat]) / div
            dur = (bar.duration_ms or 0) / div
            x0 = x_of(start)
            w = max(3.0, x_of(start + dur) - x0)
            cls = _status_class(bar.status, bar.checks_failed)
            what = bar.status + (
                f", {bar.checks_failed} check(s) failed" if bar.checks_failed else ""
            )
            offset = fmt_ms(bar.start_ms - starts[repeat])
            tip = (
                f"{turn_label(bar.scenario, bar.turn, bar.repeat)}: {what}; "
                f"duration {fmt_ms(bar.duration_ms)}; starts +{offset}"
            )
            parts.append(
                f"<rect class='{cls}' x='{x0:.1f}' y='{y}' width='{w:.1f}' height='{lane_h}' "
                f"rx='3'><title>{esc(tip)}</title></rect>"
            )
            if w > 26:
                parts.append(
                    f"<text x='{x0 + w / 2:.1f}' y='{y + lane_h / 2 + 4:.1f}' "
                    f"text-anchor='middle' style='fill:#fff'>{bar.turn}</text>"
                )
    parts += _axis_x(xticks, x_of, height - mb + 4, _num)
    parts.append(
        f"<text x='{ml + (width - ml - mr) / 2:.0f}' y='{height - 6}' text-anchor='middle'>"
        f"time since the conversation started ({unit})</text>"
    )
    return _svg(width, height, parts, "timeline of turns")


@dataclass(frozen=True)
class BarRow:
    """One row of a horizontal bar list: segments are (value, css class, tooltip)."""

    label: str
    segments: tuple[tuple[float, str, str], ...]
    note: str = ""


def bar_list_svg(rows: Sequence[BarRow], *, width: float = WIDTH, label: str = "") -> Html:
    """Horizontal stacked bars, one row per label, with a note to the right."""
    if not rows:
        return _empty(width, "Nothing to show")
    row_h, gap, ml, mr, mt = 18, 8, 200, 190, 6
    height = mt + len(rows) * (row_h + gap) + 6
    hi = max(sum(v for v, _, _ in r.segments) for r in rows) or 1
    x_of = _scale(0, hi, ml, width - mr)
    parts: list[str] = []
    for i, row in enumerate(rows):
        y = mt + i * (row_h + gap)
        parts.append(
            f"<text class='lbl' x='{ml - 8}' y='{y + row_h / 2 + 4:.1f}' text-anchor='end'>"
            f"{esc(_short(row.label, 30))}<title>{esc(row.label)}</title></text>"
        )
        acc = 0.0
        for value, cls, tip in row.segments:
            if value <= 0:
                continue
            x0, x1 = x_of(acc), x_of(acc + value)
            parts.append(
                f"<rect class='{esc(cls)}' x='{x0:.1f}' y='{y}' width='{max(1.0, x1 - x0):.1f}' "
                f"height='{row_h}' rx='2'><title>{esc(tip)}</title></rect>"
            )
            acc += value
        parts.append(
            f"<text x='{x_of(acc) + 6:.1f}' y='{y + row_h / 2 + 4:.1f}'>{esc(row.note)}</text>"
        )
    return _svg(width, height, parts, label or "bar chart")


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class PairRow:
    """Base and new value (milliseconds) of one measure, side by side."""

    label: str
    base: float | None
    new: float | None
    note: str
    regression: bool = False


def paired_bars_svg(rows: Sequence[PairRow], *, width: float = WIDTH, label: str = "") -> Html:
    """Two thin bars per row - base (grey) over new (blue, red when a regression)."""
    values = [v for r in rows for v in (r.base, r.new) if v is not None]
    if not values:
        return _empty(width, "No latency to compare")
    hi = max(values)
    div, unit = _ms_unit(hi)
    top, ticks = _ticks(hi / div if hi > 0 else 1, 6)
    bar_h, gap, ml, mr, mt, mb = 11, 12, 150, 90, 6, 36
    row_h = 2 * bar_h + 2
    height = mt + len(rows) * (row_h + gap) + mb
    x_of = _scale(0, top, ml, width - mr)
    parts = [
        f"<line class='gridline' x1='{x_of(t):.1f}' x2='{x_of(t):.1f}' y1='{mt}' "
        f"y2='{height - mb}'/>"
        for t in ticks
    ]
    for i, row in enumerate(rows):
        y = mt + i * (row_h + gap)
        parts.append(
            f"<text class='lbl' x='{ml - 8}' y='{y + row_h / 2 + 4:.1f}' text-anchor='end'>"
            f"{esc(_short(row.label, 22))}<title>{esc(row.label)}</title></text>"
        )
        for j, (value, cls, who) in enumerate(
            ((row.base, "base", "base"), (row.new, "error" if row.regression else "accent", "new"))
        ):
            if value is None:
                continue
            yy = y + j * (bar_h + 2)
            w = max(1.0, x_of(value / div) - ml)
            parts.append(
                f"<rect class='{cls}' x='{ml}' y='{yy}' width='{w:.1f}' "
                f"height='{bar_h}' rx='2'><title>{esc(row.label)} {who}: "
                f"{esc(fmt_ms(value))}</title></rect>"
            )
        end = x_of(max(v for v in (row.base, row.new, 0.0) if v is not None) / div)
        parts.append(f"<text x='{end + 6:.1f}' y='{y + row_h / 2 + 4:.1f}'>{esc(row.note)}</text>")
    parts += _axis_x(ticks, x_of, height - mb + 4, _num)
    parts.append(
        f"<text x='{ml + (width - ml - mr) / 2:.0f}' y='{height - 4}' text-anchor='middle'>"
        f"p50 ({unit})</text>"
    )
    return _svg(width, height, parts, label or "base and new")


@dataclass(frozen=True)
class Series:
    """One line of a line chart; ``None`` leaves a gap."""

    name: str
    color: str
    values: tuple[float | None, ...]
    dashed: bool = False


def line_chart_svg(
    x_labels: Sequence[str],
    series: Sequence[Series],
    *,
    y_label: str,
    y_fmt: Callable[[float], str] = _num,
    y_max: float | None = None,
    width: float = WIDTH,
    height: float = 260,
) -> Html:
    """Lines over evenly spaced categories (days), with a dot and tooltip per point."""
    points = [v for s in series for v in s.values if v is not None]
    if not x_labels or not points:
        return _empty(width, f"No {y_label} values")
    top, yticks = _ticks(y_max if y_max is not None else (max(points) or 1), 5)
    ml, mr, mt, mb = 64, 20, 12, 46
    n = len(x_labels)
    x_of = _scale(0, max(1, n - 1), ml + 10, width - mr - 10)
    y_of = _scale(0, top, height - mb, mt)
    parts = _grid_y(yticks, y_of, ml, width - mr, y_fmt)
    every = max(1, math.ceil(n / 12))
    for i, lab in enumerate(x_labels):
        if i % every == 0 or i == n - 1:
            parts.append(
                f"<text x='{x_of(i):.1f}' y='{height - mb + 16}' text-anchor='middle'>"
                f"{esc(lab)}</text>"
            )
    parts.append(
        f"<line class='axis' x1='{ml}' x2='{width - mr}' y1='{height - mb}' y2='{height - mb}'/>"
    )
    for s in series:
        segments: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(s.values):
            if v is None:
                segments.append([])
            else:
                segments[-1].append((x_of(i), y_of(v)))
        dash = " stroke-dasharray='6 4'" if s.dashed else ""
        for seg in segments:
            if len(seg) > 1:
                pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in seg)
                parts.append(
                    f"<polyline points='{pts}' fill='none' stroke='{esc(s.color)}' "
                    f"stroke-width='2'{dash}/>"
                )
        for i, v in enumerate(s.values):
            if v is not None:
                parts.append(
                    f"<circle cx='{x_of(i):.1f}' cy='{y_of(v):.1f}' r='3.5' "
                    f"style='fill:{esc(s.color)}'><title>{esc(s.name)} on {esc(x_labels[i])}: "
                    f"{esc(y_fmt(v))}</title></circle>"
                )
    parts.append(
        f"<text x='14' y='{mt + (height - mt - mb) / 2:.0f}' text-anchor='middle' "
        f"transform='rotate(-90 14 {mt + (height - mt - mb) / 2:.0f})'>{esc(y_label)}</text>"
        f"<text x='{ml + (width - ml - mr) / 2:.0f}' y='{height - 8}' text-anchor='middle'>"
        "day (UTC)</text>"
    )
    return _svg(width, height, parts, f"{y_label} per day")


# ---------------------------------------------------------------------------
# The report page

_STATUS_LEGEND = [
    ("ok", "var(--ok)"),
    ("ok, a check failed", "var(--warn)"),
    ("error", "var(--error)"),
    ("skipped", "var(--skipped)"),
]


def _run_subtitle(report: Report) -> Html:
    bits = [f"run <code>{esc(report.run_id)}</code>"]
    if report.run_status:
        kind = {"complete": "ok", "running": "warn", "interrupted": "error"}.get(
            report.run_status, ""
        )
        bits.append(badge(report.run_status, kind))
    if report.endpoint:
        bits.append(f"endpoint <code>{esc(report.endpoint)}</code>")
    if report.models:
        bits.append("model " + ", ".join(f"<code>{esc(m)}</code>" for m in report.models))
    if report.started_at:
        span = f"started {esc(report.started_at)}"
        if report.ended_at:
            span += f", ended {esc(report.ended_at)}"
        bits.append(span)
    return Html(" · ".join(bits))


def _problems_html(problems: Sequence[str]) -> Html:
    return Html("<ul class='problems'>" + "".join(f"<li>{esc(p)}</li>" for p in problems) + "</ul>")


def _ref_row(ref: TurnRef) -> list[object]:
    return [
        ref.scenario,
        ref.turn,
        "" if ref.repeat is None else ref.repeat,
        badge(ref.status, ref.status),
        fmt_ms(ref.ttft_ms),
        fmt_ms(ref.duration_ms),
        ref.user,
    ]


def render_report_html(report: Report) -> str:
    """The run report as one self-contained HTML page."""
    t = report.total
    body: list[str] = []
    if report.warnings:
        body.append(f"<div class='note'>{esc('; '.join(report.warnings))}.</div>")
    body.append(
        cards(
            [
                ("Turns", str(t.turns), ""),
                ("OK", str(t.ok), "good" if t.ok == t.turns and t.turns else ""),
                ("Errors", str(t.error), "bad" if t.error else ""),
                ("Skipped", str(t.skipped), ""),
                (
                    "Checks failed",
                    f"{t.checks_failed}/{t.checks}",
                    "bad" if t.checks_failed else "",
                ),
                ("TTFT p50", fmt_ms(t.ttft.p50), ""),
                ("Duration p50", fmt_ms(t.duration.p50), ""),
                ("Output tok/s", fmt_rate(t.tokens_per_s), ""),
            ]
        )
    )
    body.append("<h2>Scenarios</h2>")
    if report.scenarios:
        rows = [scenario_row(s) for s in [*report.scenarios, t]]
        classes = [""] * len(report.scenarios) + ["total"]
        body.append(html_table(SCENARIO_HEADERS, rows, numeric=range(1, 11), row_classes=classes))
    else:
        body.append("<p class='muted'>No turns recorded yet.</p>")

    body.append(
        "<h2>Latency</h2><p class='muted'>Turns with status ok; percentiles by linear "
        "interpolation.</p><div class='grid2'>"
    )
    for name, values, spread, cls in (
        ("TTFT", report.ttft_values, t.ttft, "accent"),
        ("Duration", report.duration_values, t.duration, "accent"),
    ):
        body.append(
            f"<figure><figcaption>{name} distribution</figcaption>"
            + histogram_svg(
                values,
                label=name,
                css_class=cls,
                markers=[("p50", spread.p50), ("p95", spread.p95)],
            )
            + "</figure>"
        )
    body.append("</div>")

    if report.checks:
        body.append("<h2>Checks</h2>")
        body.append(legend([("passed", "var(--ok)"), ("failed", "var(--error)")]))
        rows_ = [
            BarRow(
                c.name,
                (
                    (c.passed, "ok", f"{c.name}: {c.passed} passed"),
                    (c.failed, "error", f"{c.name}: {c.failed} failed"),
                ),
                f"{c.passed} passed, {c.failed} failed",
            )
            for c in report.checks
        ]
        body.append(bar_list_svg(rows_, label="checks passed and failed"))

    if report.timeline:
        body.append("<h2>Timeline</h2>")
        body.append(legend(_STATUS_LEGEND))
        by_scenario: dict[str, list[TimelineBar]] = {}
        for bar in report.timeline:
            by_scenario.setdefault(bar.scenario, []).append(bar)
        for name, bars in by_scenario.items():
            body.append(f"<h3>{esc(name)}</h3>" + timeline_svg(bars))

    flaky = [s for s in report.scenarios if s.repeats is not None]
    if flaky:
        body.append("<h2>Repeats</h2>")
        body.append(
            "<p class='muted'>A repeat passes when every turn is ok and every check passes. "
            "Duration spread is over ok turns.</p>"
        )
        rows2: list[list[object]] = []
        for s in flaky:
            r = s.repeats
            assert r is not None
            tone = "ok" if r.pass_rate == 1 else ("error" if r.pass_rate == 0 else "warn")
            rows2.append(
                [
                    Html(f"<b>{esc(s.name)}</b>"),
                    "",
                    r.repeats,
                    r.passed,
                    badge(fmt_pct(r.pass_rate), tone),
                    "",
                    "",
                    "",
                ]
            )
            for ts in r.turns:
                rows2.append(
                    [
                        "",
                        f"turn {ts.turn}",
                        ts.count,
                        "",
                        "",
                        fmt_ms(ts.min),
                        fmt_ms(ts.p50),
                        fmt_ms(ts.max),
                    ]
                )
        headers = ["scenario", "turn", "repeats", "passed", "pass rate", "min", "p50", "max"]
        body.append(html_table(headers, rows2, numeric=range(2, 8)))

    if report.slowest:
        body.append("<h2>Slowest turns</h2>")
        headers = ["scenario", "turn", "repeat", "status", "TTFT", "duration", "user"]
        body.append(
            html_table(headers, [_ref_row(r) for r in report.slowest], numeric=(1, 2, 4, 5))
        )

    body.append(f"<h2>Failing turns ({report.failing_total})</h2>")
    if report.failing:
        headers = [
            "scenario",
            "turn",
            "repeat",
            "status",
            "TTFT",
            "duration",
            "user",
            "what failed",
        ]
        rows3 = [[*_ref_row(r), _problems_html(r.problems)] for r in report.failing]
        body.append(html_table(headers, rows3, numeric=(1, 2, 4, 5)))
        if report.failing_total > len(report.failing):
            more = report.failing_total - len(report.failing)
            body.append(f"<p class='muted'>… and {more} more (see the text report).</p>")
    else:
        body.append("<p class='muted'>None: every turn is ok and every check passed.</p>")
    return page(f"Run report {report.run_id}", _run_subtitle(report), body)
