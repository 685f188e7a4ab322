"""``--lock PATH``: one run at a time, for cron.

The lock is an ``flock`` on PATH, so the kernel releases it when the holder
dies, however it dies. The file holds the holder's pid and start time for the
message a second run prints. A clean exit empties the file; a file found
non-empty by a process that could take the lock was left by a process that
died holding it, and the new holder says so.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from runner.errors import LockHeldError, UsageError
from runner.transcript import utc_now

__all__ = ["RunLock"]


class RunLock:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.took_over: dict[str, Any] | None = None  # what a dead holder left

    def acquire(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"--lock: cannot open {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read(fd)
            os.close(fd)
            pid = holder.get("pid")
            since = holder.get("started_at", "an unknown time")
            raise LockHeldError(
                f"another run holds the lock {self.path} (pid {pid}, started {since}); "
                "exiting without running",
                pid=pid if isinstance(pid, int) else None,
            ) from None
        left = _read(fd)
        if left:
            self.took_over = left
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "started_at": utc_now()}
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        obj = json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {"pid": None}
    return obj if isinstance(obj, dict) else {"pid": None}
