"""``runner run --resume OUT/<run_id>``: finish an interrupted run.

* A torn last line (the process was killed mid-write) is cut off.
* A scenario is *finished* when every one of its turns has a counting line and
  none was skipped because the run stopped (``interrupted``, ``max_runtime``).
  Finished scenarios are kept as they are, failures included.
* Every other scenario runs again from its first turn with a new
  ``conversation_id``: half a conversation cannot be continued safely. Its
  earlier lines stay in the transcript, marked ``"superseded": true``, so the
  history is honest and each scripted turn has exactly one line that counts.
* The scenario files must be byte-identical to the ones the run started with
  (sha256 in ``run.json``), unless ``--force``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import ResumeError, ScenarioError
from runner.scenario import Scenario, load_paths
from runner.transcript import RUN_JSON, TRANSCRIPT, read_run_json

__all__ = ["STOP_REASONS", "ResumePlan", "plan_resume"]

# Skip reasons that mean "the run stopped", not "the scenario failed".
STOP_REASONS = frozenset({"interrupted", "max_runtime"})


@dataclass
class ResumePlan:
    run_id: str
    run_dir: Path
    record: dict[str, Any]  # run.json as found
    scenarios: list[Scenario]  # every scenario of the run, in order
    todo: list[tuple[Scenario, int | None]]  # conversations to run again (scenario, repeat)
    kept: dict[str, int]  # ok/error/skipped (and checks_run/_failed) of the lines kept
    torn_bytes: int  # bytes cut from a torn last line
    superseded: int  # lines newly marked superseded


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _repair(path: Path) -> int:
    """Cut a torn last line; return the bytes removed."""
    if not path.exists():
        path.touch()
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        # Look back for the last newline; a torn line can be up to the largest record.
        block = 65536
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                end = start + i + 1
                break
            pos = start
        else:
            end = 0
        if end < size:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
        return size - end


def plan_resume(run_dir: Path, *, force: bool = False) -> ResumePlan:
    run_json = run_dir / RUN_JSON
    record = read_run_json(run_dir, ResumeError, "--resume")
    if record.get("status") == "complete":
        raise ResumeError(f"--resume: run {record.get('run_id')} is complete; nothing to resume")
    if record.get("status") == "running" and _pid_alive(record.get("pid")) and not force:
        raise ResumeError(
            f"--resume: run {record.get('run_id')} is still in progress (pid {record['pid']}); "
            "use --force if that process is not a runner"
        )
    settings = record.get("settings") or {}
    paths = settings.get("paths") or []
    if not paths:
        raise ResumeError(f"--resume: {run_json} does not say which scenario files it ran")
    for entry in record.get("files", []):
        path, want = entry["path"], entry["sha256"]
        try:
            got = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError as exc:
            raise ResumeError(
                f"--resume: cannot read scenario file {path}: {exc.strerror}"
            ) from None
        if got != want and not force:
            raise ResumeError(
                f"--resume: {path} changed since the run started (sha256 {got[:12]}… != "
                f"{want[:12]}…); resuming would mix two versions of the suite. "
                "Use --force to resume anyway"
            )
    try:
        loaded = load_paths(paths)
    except ScenarioError as exc:
        raise ResumeError(f"--resume: {exc}") from None
    names = record.get("scenarios") or [sc.name for sc in loaded]
    by_name = {sc.name: sc for sc in loaded}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ResumeError(f"--resume: scenario {missing[0]!r} is no longer in {', '.join(paths)}")
    scenarios = [by_name[n] for n in names]

    transcript = run_dir / TRANSCRIPT
    torn = _repair(transcript)
    lines = transcript.read_bytes().splitlines(keepends=True)
    parsed: list[dict[str, Any] | None] = []
    Key = tuple[str, Any]
    turns: dict[Key, set[int]] = {}
    stopped: set[Key] = set()
    for raw in lines:
        try:
            obj = json.loads(raw)
        except ValueError:
            parsed.append(None)
            continue
        if not isinstance(obj, dict):
            parsed.append(None)
            continue
        parsed.append(obj)
        if obj.get("superseded"):
            continue
        name = obj.get("scenario")
        if not isinstance(name, str):
            continue
        key = (name, obj.get("repeat"))
        turns.setdefault(key, set()).add(obj.get("turn", 0))
        if obj.get("status") == "skipped" and obj.get("skip_reason") in STOP_REASONS:
            stopped.add(key)
    repeat = settings.get("repeat") or 1
    units: list[tuple[Scenario, int | None]] = (
        [(sc, r) for r in range(1, repeat + 1) for sc in scenarios]
        if repeat > 1
        else [(sc, None) for sc in scenarios]
    )
    finished = {
        (sc.name, r)
        for sc, r in units
        if (sc.name, r) not in stopped
        and turns.get((sc.name, r)) == set(range(1, len(sc.turns) + 1))
    }
    todo = [(sc, r) for sc, r in units if (sc.name, r) not in finished]
    kept = {"ok": 0, "error": 0, "skipped": 0, "checks_run": 0, "checks_failed": 0}
    superseded = 0
    out: list[bytes] = []
    for raw, obj in zip(lines, parsed, strict=True):
        if obj is None or obj.get("superseded"):
            out.append(raw)
            continue
        if (obj.get("scenario"), obj.get("repeat")) in finished:
            status = obj.get("status")
            if status in ("ok", "error", "skipped"):
                kept[status] += 1
            checks = obj.get("checks") or []
            kept["checks_run"] += len(checks)
            kept["checks_failed"] += sum(1 for c in checks if not c.get("passed"))
            out.append(raw)
        else:
            obj["superseded"] = True
            superseded += 1
            out.append((json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8"))
    if superseded:
        tmp = transcript.with_name(f".{TRANSCRIPT}.resume.tmp")
        with open(tmp, "wb") as f:
            f.writelines(out)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, transcript)
    return ResumePlan(
        run_id=str(record.get("run_id")),
        run_dir=run_dir,
        record=record,
        scenarios=scenarios,
        todo=todo,
        kept=kept,
        torn_bytes=torn,
        superseded=superseded,
    )
