"""The run directory: ``transcript.jsonl`` and ``run.json``.

Durability rules:

* one writer appends whole lines to ``transcript.jsonl`` with a single
  ``os.write`` on an ``O_APPEND`` descriptor: no user-space buffer, so a line
  handed to the kernel survives the process being killed, and a kill can tear
  at most the line being written (readers skip a torn last line);
* ``fsync`` in groups (at most every ``fsync_interval`` seconds) and at close,
  or after every line when asked;
* ``run.json`` is replaced atomically (write a temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runner.errors import RunnerError

__all__ = [
    "TranscriptWriter",
    "create_run_dir",
    "iter_records",
    "new_run_id",
    "read_run_json",
    "utc_now",
    "write_json_atomic",
]

TRANSCRIPT = "transcript.jsonl"
RUN_JSON = "run.json"


# One encoder for every record: json.dumps(..., ensure_ascii=False) builds a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False).encode

# utc_now() runs several times per turn; the date and time to the second change once a second.
_second: tuple[int, str] = (-1, "")


def utc_now() -> str:
    """An RFC 3339 UTC timestamp with milliseconds, e.g. ``2026-11-26T14:05:12.345Z``."""
    global _second
    micros = time.time_ns() // 1000
    seconds, micros = divmod(micros, 1_000_000)
    cached_second, prefix = _second
    if seconds != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second = (seconds, prefix)
    return f"{prefix}.{micros // 1000:03d}Z"


def new_run_id(now: datetime | None = None) -> str:
    """Sortable (UTC time first) and unique: ``20261126T140512Z-3f9a1c``."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}Z-{secrets.token_hex(3)}"


def create_run_dir(out: Path) -> tuple[str, Path]:
    """Make ``out/<run_id>/``; never reuses an existing folder."""
    out.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        run_id = new_run_id()
        path = out / run_id
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return run_id, path
    raise OSError(f"could not create a new run folder in {out}")


def read_run_json(run_dir: Path, error: type[RunnerError], what: str) -> dict[str, Any]:
    """``run_dir``'s run.json, or ``error`` with a one-line message starting with ``what``."""
    path = run_dir / RUN_JSON
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what}: {run_dir} is not a run directory (no {RUN_JSON})") from None
    except (OSError, ValueError) as exc:
        raise error(f"{what}: cannot read {path}: {exc}") from None
    if not isinstance(record, dict):
        raise error(f"{what}: {path} is not a run record")
    return record


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class TranscriptWriter:
    """Thread-safe appender of JSON lines."""

    def __init__(
        self, path: Path, *, fsync_every_line: bool = False, fsync_interval: float = 0.2
    ) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()
        self._every = fsync_every_line
        self._interval = fsync_interval
        self._last_sync = time.monotonic()
        self._dirty = False
        self.lines = 0

    def write(self, record: Mapping[str, Any]) -> None:
        data = (_encode(record) + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                raise ValueError("transcript is closed")
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            self.lines += 1
            self._dirty = True
            now = time.monotonic()
            if self._every or now - self._last_sync >= self._interval:
                os.fsync(self._fd)
                self._last_sync = now
                self._dirty = False

    def close(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            if self._dirty:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> TranscriptWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a transcript, skipping a torn (unparseable) line."""
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj
