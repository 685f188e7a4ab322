"""Progress on stderr: a tqdm bar on a terminal, periodic one-line logs elsewhere.

stdout stays machine-readable; nothing here writes to it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol, TextIO

from runner.records import TurnRecord

__all__ = ["Progress", "make_progress"]


class Progress(Protocol):
    def update(self, rec: TurnRecord) -> None: ...
    def close(self) -> None: ...


class _Counts:
    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.ok = 0
        self.error = 0
        self.skipped = 0
        self.lock = threading.Lock()

    def add(self, rec: TurnRecord) -> None:
        with self.lock:
            self.done += 1
            status = rec["status"]
            if status == "ok":
                self.ok += 1
            elif status == "error":
                self.error += 1
            else:
                self.skipped += 1


class NullProgress:
    def update(self, rec: TurnRecord) -> None:
        pass

    def close(self) -> None:
        pass


class BarProgress:
    def __init__(self, total: int, stream: TextIO) -> None:
        from tqdm import tqdm

        self._counts = _Counts(total)
        self._bar: Any = tqdm(total=total, unit="turn", file=stream, dynamic_ncols=True)

    def update(self, rec: TurnRecord) -> None:
        c = self._counts
        c.add(rec)
        with c.lock:
            self._bar.set_postfix(ok=c.ok, error=c.error, skipped=c.skipped, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


class LogProgress:
    """One line every ``interval`` seconds (cron mail stays readable), and one at the end."""

    def __init__(self, total: int, stream: TextIO, interval: float) -> None:
        self._counts = _Counts(total)
        self._stream = stream
        self._interval = interval
        self._started = time.monotonic()
        self._next = self._started + interval

    def _line(self) -> None:
        c = self._counts
        elapsed = time.monotonic() - self._started
        self._stream.write(
            f"runner: {c.done}/{c.total} turns ({c.ok} ok, {c.error} error, "
            f"{c.skipped} skipped) after {elapsed:.0f}s\n"
        )
        self._stream.flush()

    def update(self, rec: TurnRecord) -> None:
        self._counts.add(rec)
        now = time.monotonic()
        if now >= self._next:
            with self._counts.lock:
                if now < self._next:
                    return
                self._next = now + self._interval
            self._line()

    def close(self) -> None:
        if time.monotonic() - self._started >= self._interval:
            self._line()


def make_progress(mode: str, total: int, stream: TextIO, interval: float = 30.0) -> Progress:
    """``on``: bar; ``off``: nothing; ``auto``: bar on a terminal, else periodic log lines."""
    if mode == "off":
        return NullProgress()
    if mode == "on" or (mode == "auto" and stream.isatty()):
        return BarProgress(total, stream)
    return LogProgress(total, stream, interval)
