"""Progress on stderr: a bar on a terminal, periodic lines elsewhere, nothing when off."""

from __future__ import annotations

import io
from typing import Any

from runner.progress import BarProgress, LogProgress, NullProgress, make_progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def rec(status: str) -> Any:
    return {"status": status}


def test_mode_selection() -> None:
    assert isinstance(make_progress("off", 3, Tty()), NullProgress)
    assert isinstance(make_progress("auto", 3, Tty()), BarProgress)
    assert isinstance(make_progress("auto", 3, io.StringIO()), LogProgress)
    assert isinstance(make_progress("on", 3, io.StringIO()), BarProgress)


def test_log_lines_come_every_interval_not_every_turn(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import runner.progress as progress

    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = io.StringIO()
    log = LogProgress(10, out, interval=30)
    for i, status in enumerate(["ok", "ok", "error", "skipped", "ok"]):
        clock.now = i * 10.0  # 0, 10, 20, 30, 40 s
        log.update(rec(status))
    clock.now = 65.0
    log.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "runner: 4/10 turns (2 ok, 1 error, 1 skipped) after 30s",
        "runner: 5/10 turns (3 ok, 1 error, 1 skipped) after 65s",
    ]


def test_bar_counts_on_the_given_stream() -> None:
    out = Tty()
    bar = BarProgress(2, out)
    bar.update(rec("ok"))
    bar.update(rec("error"))
    bar.close()
    text = out.getvalue()
    assert "2/2" in text and "error=1" in text and "ok=1" in text
