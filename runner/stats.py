"""Small descriptive statistics shared by the report, the diff and the trend.

Percentiles use linear interpolation between closest ranks (the "linear" method of
numpy and the ``PERCENTILE.INC`` of spreadsheets, Hyndman & Fan type 7): for sorted
values ``x[0..n-1]`` the q-th percentile sits at rank ``h = (n - 1) * q / 100``, and
is ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``. So p50 of an
even count is the mean of the two middle values, p0 is the minimum and p100 the
maximum. With one value every percentile is that value; with none it is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone


def percentile_sorted(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of already sorted ``values``; ``None`` if empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    n = len(values)
    if n == 0:
        return None
    h = (n - 1) * q / 100
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    return float(values[lo] + (h - lo) * (values[hi] - values[lo]))


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of ``values`` in any order; ``None`` if empty."""
    return percentile_sorted(sorted(values), q)


@dataclass(frozen=True)
class Spread:
    """Count, extremes and the usual percentiles of a set of measurements."""

    count: int
    min: float | None
    p50: float | None
    p95: float | None
    max: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        data = sorted(values)
        if not data:
            return cls(0, None, None, None, None)
        return cls(
            count=len(data),
            min=float(data[0]),
            p50=percentile_sorted(data, 50),
            p95=percentile_sorted(data, 95),
            max=float(data[-1]),
        )


def ratio(part: int, whole: int) -> float | None:
    """``part / whole``, or ``None`` when there is nothing to divide by."""
    return part / whole if whole else None


def parse_timestamp(text: object) -> datetime | None:
    """An ISO 8601 timestamp as an aware UTC datetime; ``None`` when absent or unreadable.

    Python 3.10's ``fromisoformat`` rejects a trailing ``Z`` and fractions other than
    3 or 6 digits, so both are normalised first.
    """
    if not isinstance(text, str) or not text:
        return None
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    head, dot, rest = s.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        frac, tail = rest[:digits], rest[digits:]
        s = f"{head}.{(frac + '000000')[:6]}{tail}"
    try:
        moment = datetime.fromisoformat(s)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)
