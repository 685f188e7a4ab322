"""Merging the runs of a sharded suite into one run directory.

``merge_runs([dir1, dir2, ...], out)`` checks that the runs belong together,
then writes ``out/<new run_id>/`` with:

* ``transcript.jsonl``: every line of every source, sources in shard order (K
  ascending; runs without a shard in the order given), lines in their original
  order. Each line's ``run_id`` becomes the merged run's, the source's is kept
  in ``shard_run_id`` and its shard (``"K/N"``) in ``shard``. A torn last line
  of a source (a killed writer) is left out, as readers skip it anyway;
* ``run.json``: the sources' common settings, the union of their files, their
  scenarios in shard order, summed counts and checks, the earliest start and
  the latest end, and ``shards``: one entry per source (directory, run_id,
  shard, status, counts, times).

Refused with a one-line :class:`~runner.errors.UsageError`, before anything is
written:

* a directory that is not a run (no readable ``run.json``), or a run still
  ``running`` (in progress, or killed: resume it first);
* the same run twice, the same shard twice, or shards of different N;
* mixed suites or settings: different runner versions, endpoints (unless every
  run used its own built-in ``--local`` endpoint), settings that change what is
  sent or how a turn is judged, or one scenario file with two different sha256;
* the same scenario in two runs;
* missing shards (say 3 of 4 runs), unless ``allow_partial`` (``--allow-partial``):
  the merged run is then marked ``"status": "partial"`` and lists ``missing_shards``.

Settings that only change how fast or where a shard ran (concurrency, rate,
paths, fsync cadence, max runtime) may differ; each source's own settings
stay in its ``shards`` entry.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import UsageError
from runner.exitcodes import ExitStatus
from runner.records import RUN_SCHEMA
from runner.transcript import (
    RUN_JSON,
    TRANSCRIPT,
    create_run_dir,
    read_run_json,
    utc_now,
    write_json_atomic,
)

__all__ = ["merge_runs"]

# Settings that may differ between shards: they change how fast or from where a
# shard ran, not what was sent or how a turn was judged.
OPERATIONAL = frozenset(
    {"concurrency", "rate", "paths", "fsync_every_line", "max_runtime", "local", "api_key_env"}
)


@dataclass
class _Source:
    dir: Path
    record: dict[str, Any]
    shard: tuple[int, int] | None
    order: int

    @property
    def run_id(self) -> str:
        return str(self.record.get("run_id") or self.dir.name)

    @property
    def label(self) -> str:
        return (
            f"{self.dir} (shard {self.shard[0]}/{self.shard[1]})" if self.shard else str(self.dir)
        )


def _shard(value: Any, where: Path) -> tuple[int, int] | None:
    if value is None:
        return None
    parts = str(value).split("/")
    try:
        k, n = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise UsageError(f"merge: {where / RUN_JSON} has an unreadable shard {value!r}") from None
    if len(parts) != 2 or not 1 <= k <= n:
        raise UsageError(f"merge: {where / RUN_JSON} has an unreadable shard {value!r}")
    return k, n


def _load(run_dir: Path, order: int) -> _Source:
    record = read_run_json(run_dir, UsageError, "merge")
    if record.get("status") == "running":
        raise UsageError(
            f"merge: run {record.get('run_id')} in {run_dir} is still running or was killed; "
            f"let it finish, or finish it with `runner run --resume {run_dir}`, then merge"
        )
    if not (run_dir / TRANSCRIPT).is_file():
        raise UsageError(f"merge: {run_dir} has no {TRANSCRIPT}")
    settings = record.get("settings")
    shard = _shard(record.get("shard", (settings or {}).get("shard")), run_dir)
    return _Source(run_dir, record, shard, order)


def _judging(settings: Any) -> dict[str, Any]:
    if not isinstance(settings, dict):
        return {}
    return {k: v for k, v in settings.items() if k not in OPERATIONAL and k != "shard"}


def _check(sources: list[_Source], allow_partial: bool) -> list[int]:
    """Refuse sources that do not belong together; return the missing shard numbers."""
    seen_dirs: dict[Path, _Source] = {}
    seen_ids: dict[str, _Source] = {}
    for src in sources:
        real = src.dir.resolve()
        if real in seen_dirs:
            raise UsageError(f"merge: {src.dir} is given twice")
        seen_dirs[real] = src
        if src.run_id in seen_ids:
            raise UsageError(
                f"merge: {src.dir} and {seen_ids[src.run_id].dir} are the same run "
                f"({src.run_id}); give each shard's run once"
            )
        seen_ids[src.run_id] = src

    sharded = [s for s in sources if s.shard is not None]
    if sharded and len(sharded) != len(sources):
        plain = next(s for s in sources if s.shard is None)
        raise UsageError(
            f"merge: {plain.dir} was not run with --shard but {sharded[0].label} was; "
            "merge the shards of one sharded run"
        )
    missing: list[int] = []
    if sharded:
        counts = {s.shard[1] for s in sharded if s.shard}
        if len(counts) > 1:
            low, high = sorted(counts)[:2]
            raise UsageError(
                f"merge: shards of different splits (N={low} and N={high}); "
                "merge the shards of one --shard K/N run"
            )
        by_k: dict[int, _Source] = {}
        for s in sharded:
            assert s.shard is not None
            k, n = s.shard
            if k in by_k:
                raise UsageError(
                    f"merge: shard {k}/{n} given twice ({by_k[k].dir} and {s.dir}); "
                    "give each shard once"
                )
            by_k[k] = s
        n = counts.pop()
        missing = [k for k in range(1, n + 1) if k not in by_k]
        if missing and not allow_partial:
            have = ", ".join(f"{k}/{n}" for k in sorted(by_k))
            lost = ", ".join(f"{k}/{n}" for k in missing)
            raise UsageError(
                f"merge: shard {lost} missing (have {have}); merge all {n} shards, "
                "or allow a partial merge (runner merge --allow-partial)"
            )

    first = sources[0]
    for src in sources[1:]:
        for key, what in (("runner_version", "runner versions"), ("schema", "run schemas")):
            if src.record.get(key) != first.record.get(key):
                raise UsageError(
                    f"merge: different {what}: {first.record.get(key)} in {first.dir}, "
                    f"{src.record.get(key)} in {src.dir}; merge runs of one runner version"
                )
        local = all((s.record.get("settings") or {}).get("local") for s in (first, src))
        if not local and src.record.get("endpoint") != first.record.get("endpoint"):
            raise UsageError(
                f"merge: different endpoints: {first.record.get('endpoint')} in {first.dir}, "
                f"{src.record.get('endpoint')} in {src.dir}; merge runs of one endpoint"
            )
        a, b = _judging(first.record.get("settings")), _judging(src.record.get("settings"))
        if a != b:
            key = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))[0]
            raise UsageError(
                f"merge: different settings: {key} is {a.get(key)!r} in {first.dir} but "
                f"{b.get(key)!r} in {src.dir}; merge runs made with the same settings"
            )

    sha: dict[str, tuple[str, _Source]] = {}
    owner: dict[str, _Source] = {}
    for src in sources:
        for entry in src.record.get("files") or []:
            path, digest = entry.get("path"), entry.get("sha256")
            if path in sha and sha[path][0] != digest:
                raise UsageError(
                    f"merge: {path} differs between {sha[path][1].dir} and {src.dir} "
                    f"(sha256 {str(sha[path][0])[:12]}… vs {str(digest)[:12]}…); "
                    "merge runs of one version of the suite"
                )
            sha.setdefault(path, (digest, src))
        for name in src.record.get("scenarios") or []:
            if name in owner:
                raise UsageError(
                    f"merge: scenario {name!r} is in both {owner[name].label} and {src.label}; "
                    "shards of one run never share a scenario"
                )
            owner[name] = src
    return missing


def _status(sources: list[_Source], missing: list[int]) -> tuple[str, int]:
    errors = sum((s.record.get("counts") or {}).get("error", 0) for s in sources)
    failed = sum((s.record.get("checks") or {}).get("failed", 0) for s in sources)
    unfinished = [s for s in sources if s.record.get("status") != "complete"]
    if unfinished:
        status = str(unfinished[0].record.get("status"))
        exit_status = unfinished[0].record.get("exit_status")
        code = int(exit_status) if isinstance(exit_status, int) else int(ExitStatus.INTERRUPTED)
    elif errors:
        status, code = "complete", int(ExitStatus.TURN_ERRORS)
    elif failed:
        status, code = "complete", int(ExitStatus.CHECKS_FAILED)
    else:
        status, code = "complete", int(ExitStatus.OK)
    if missing:
        status = "partial"
    return status, code


def merge_runs(run_dirs: list[Path], out: Path, *, allow_partial: bool = False) -> Path:
    """Merge the runs in ``run_dirs`` into a new run directory under ``out``; return it."""
    if not run_dirs:
        raise UsageError("merge: give the run directories of the shards to merge")
    sources = [_load(Path(d), i) for i, d in enumerate(run_dirs)]
    missing = _check(sources, allow_partial)
    sources.sort(key=lambda s: (s.shard[0] if s.shard else 0, s.order))

    run_id, path = create_run_dir(out)
    try:
        torn = _write_transcript(sources, run_id, path / TRANSCRIPT)
        write_json_atomic(path / RUN_JSON, _record(sources, run_id, missing, torn))
    except BaseException:
        for name in (TRANSCRIPT, RUN_JSON):
            (path / name).unlink(missing_ok=True)
        path.rmdir()
        raise
    return path


def _write_transcript(sources: list[_Source], run_id: str, target: Path) -> int:
    encode = json.JSONEncoder(ensure_ascii=False).encode
    torn = 0
    with open(target, "wb") as out:
        for src in sources:
            shard = f"{src.shard[0]}/{src.shard[1]}" if src.shard else None
            with open(src.dir / TRANSCRIPT, "rb") as f:
                for raw in f:
                    if not raw.strip():
                        continue
                    try:
                        rec = json.loads(raw)
                    except ValueError:
                        torn += 1  # a torn line: readers skip it, so does the merge
                        continue
                    if not isinstance(rec, dict):
                        torn += 1
                        continue
                    rec["shard_run_id"] = rec.get("run_id", src.run_id)
                    rec["run_id"] = run_id
                    if shard is not None:
                        rec["shard"] = shard
                    out.write((encode(rec) + "\n").encode("utf-8"))
        out.flush()
        os.fsync(out.fileno())
    return torn


def _record(sources: list[_Source], run_id: str, missing: list[int], torn: int) -> dict[str, Any]:
    first = sources[0].record
    files: dict[str, str] = {}
    scenarios: list[str] = []
    counts = {"ok": 0, "error": 0, "skipped": 0}
    checks = {"run": 0, "failed": 0}
    for src in sources:
        for entry in src.record.get("files") or []:
            files.setdefault(entry["path"], entry["sha256"])
        scenarios.extend(src.record.get("scenarios") or [])
        for key in counts:
            counts[key] += int((src.record.get("counts") or {}).get(key, 0))
        for key in checks:
            checks[key] += int((src.record.get("checks") or {}).get(key, 0))
    starts = [s.record["started_at"] for s in sources if s.record.get("started_at")]
    ends = [s.record["ended_at"] for s in sources if s.record.get("ended_at")]
    endpoints = {s.record.get("endpoint") for s in sources}
    status, exit_status = _status(sources, missing)
    record: dict[str, Any] = {
        "schema": first.get("schema", RUN_SCHEMA),
        "run_id": run_id,
        "status": status,
        "started_at": min(starts) if starts else None,
        "ended_at": max(ends) if ends else None,
        "merged_at": utc_now(),
        "runner_version": first.get("runner_version"),
        "endpoint": first.get("endpoint") if len(endpoints) == 1 else "local",
        "settings": first.get("settings"),
        "files": [{"path": p, "sha256": h} for p, h in files.items()],
        "scenarios": scenarios,
        "counts": counts,
        "checks": checks,
        "exit_status": exit_status,
        "shards": [
            {
                "dir": str(s.dir),
                "run_id": s.run_id,
                "shard": f"{s.shard[0]}/{s.shard[1]}" if s.shard else None,
                "status": s.record.get("status"),
                "counts": s.record.get("counts"),
                "started_at": s.record.get("started_at"),
                "ended_at": s.record.get("ended_at"),
                "endpoint": s.record.get("endpoint"),
                "settings": s.record.get("settings"),
            }
            for s in sources
        ],
    }
    if missing:
        n = next(s.shard[1] for s in sources if s.shard)
        record["missing_shards"] = [f"{k}/{n}" for k in missing]
    if torn:
        record["torn_lines_dropped"] = torn
    return record
