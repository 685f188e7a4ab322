"""Merging shard runs: real shard runs merged, and every refusal with nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from runner.engine import Run, RunSettings
from runner.errors import UsageError
from runner.merge import merge_runs
from runner.retry import RetryPolicy
from runner.scenario import Scenario, Turn
from runner.server import LocalServer
from runner.shard import select
from runner.transcript import iter_records

SUITE = [
    Scenario(
        name=f"s{i}",
        file="suite.yaml" if i % 2 else "more.yaml",
        line=i + 1,
        turns=(Turn(f"hello {i}", i + 2), Turn("again", i + 3)),
        sha256=("a" if i % 2 else "b") * 64,
    )
    for i in range(12)
]


def shard_run(out: Path, endpoint: str, k: int, n: int) -> Path:
    """Run shard K/N of SUITE and record the shard in run.json, as ``runner run --shard`` does."""
    settings = RunSettings(endpoint=endpoint, out_dir=out, retry=RetryPolicy(max_attempts=1))
    summary = Run(select(SUITE, k, n), settings).execute()
    path = summary.run_dir / "run.json"
    record = json.loads(path.read_text())
    record["shard"] = f"{k}/{n}"
    path.write_text(json.dumps(record))
    return summary.run_dir


def test_merging_real_shard_runs(tmp_path: Path) -> None:
    with LocalServer() as server:
        dirs = [shard_run(tmp_path / "shards", server.url, k, 3) for k in (1, 2, 3)]
    sources = [json.loads((d / "run.json").read_text()) for d in dirs]
    merged = merge_runs(list(reversed(dirs)), tmp_path / "merged")

    assert merged.parent == tmp_path / "merged"
    record = json.loads((merged / "run.json").read_text())
    assert record["run_id"] == merged.name not in {s["run_id"] for s in sources}
    assert record["status"] == "complete" and record["exit_status"] == 0
    assert record["counts"] == {"ok": 24, "error": 0, "skipped": 0}
    assert sorted(record["scenarios"]) == sorted(sc.name for sc in SUITE)
    assert record["scenarios"] == [name for s in sources for name in s["scenarios"]]
    assert {f["path"]: f["sha256"] for f in record["files"]} == {
        "suite.yaml": "a" * 64,
        "more.yaml": "b" * 64,
    }
    assert [s["shard"] for s in record["shards"]] == ["1/3", "2/3", "3/3"]
    assert [s["run_id"] for s in record["shards"]] == [s["run_id"] for s in sources]
    assert record["started_at"] == min(s["started_at"] for s in sources)
    assert record["ended_at"] == max(s["ended_at"] for s in sources)

    lines = list(iter_records(merged / "transcript.jsonl"))
    assert len(lines) == 24
    assert {line["run_id"] for line in lines} == {record["run_id"]}
    expected: list[tuple[str, str, int]] = []
    for k, (d, source) in enumerate(zip(dirs, sources, strict=True), 1):
        for line in iter_records(d / "transcript.jsonl"):
            expected.append((source["run_id"], line["scenario"], line["turn"]))
            assert line["status"] == "ok"
        assert all(
            line["shard"] == f"{k}/3" for line in lines if line["shard_run_id"] == source["run_id"]
        )
    assert [(x["shard_run_id"], x["scenario"], x["turn"]) for x in lines] == expected


# -- hand-made runs for the refusals ---------------------------------------------------


def make_run(
    root: Path,
    name: str,
    *,
    shard: str | None = "1/2",
    scenarios: tuple[str, ...] = ("a",),
    lines: list[dict[str, Any]] | None = None,
    torn: bool = False,
    **fields: Any,
) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    settings = {"concurrency": 4, "max_attempts": 4, "history": None, "local": False}
    settings.update(fields.pop("settings", {}))
    record: dict[str, Any] = {
        "schema": "convo-runner/run@1",
        "run_id": name,
        "status": "complete",
        "started_at": "2026-11-26T10:00:00.000Z",
        "ended_at": "2026-11-26T10:01:00.000Z",
        "runner_version": "1.0",
        "endpoint": "http://127.0.0.1:1337/v1/chat/completions",
        "settings": settings,
        "files": [{"path": "suite.yaml", "sha256": "a" * 64}],
        "scenarios": list(scenarios),
        "counts": {"ok": len(scenarios), "error": 0, "skipped": 0},
        "exit_status": 0,
    }
    if shard is not None:
        record["shard"] = shard
    record.update(fields)
    (run_dir / "run.json").write_text(json.dumps(record))
    if lines is None:
        lines = [{"run_id": name, "scenario": s, "turn": 1, "status": "ok"} for s in scenarios]
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (run_dir / "transcript.jsonl").write_text(text + ('{"run_id": "' if torn else ""))
    return run_dir


def refuse(tmp_path: Path, dirs: list[Path], message: str, **kw: Any) -> None:
    out = tmp_path / "merged"
    with pytest.raises(UsageError, match=message) as info:
        merge_runs(dirs, out, **kw)
    assert "\n" not in str(info.value)
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_not_a_run_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    refuse(tmp_path, [tmp_path / "empty"], "not a run directory")
    refuse(tmp_path, [], "give the run directories")


def test_a_run_still_running_is_refused_with_the_way_out(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", status="running")
    refuse(tmp_path, [a], "--resume")


def test_the_same_run_twice(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a")
    refuse(tmp_path, [a, a], "given twice")
    shutil.copytree(a, tmp_path / "copy")
    refuse(tmp_path, [a, tmp_path / "copy"], "same run")


def test_the_same_shard_twice(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", shard="1/2", scenarios=("a",))
    b = make_run(tmp_path, "b", shard="1/2", scenarios=("b",))
    refuse(tmp_path, [a, b], "shard 1/2 given twice")


def test_shards_of_different_splits(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", shard="1/2", scenarios=("a",))
    b = make_run(tmp_path, "b", shard="2/3", scenarios=("b",))
    refuse(tmp_path, [a, b], "different splits")


def test_sharded_and_unsharded_runs(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", shard="1/2", scenarios=("a",))
    b = make_run(tmp_path, "b", shard=None, scenarios=("b",))
    refuse(tmp_path, [a, b], "not run with --shard")


def test_a_scenario_in_two_runs(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", shard="1/2", scenarios=("x", "y"))
    b = make_run(tmp_path, "b", shard="2/2", scenarios=("y",))
    refuse(tmp_path, [a, b], "'y' is in both")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"endpoint": "http://other:1/v1/chat/completions"}, "different endpoints"),
        ({"runner_version": "2.0"}, "different runner versions"),
        ({"settings": {"max_attempts": 1}}, "max_attempts is 4 .* but 1"),
        ({"settings": {"history": "server"}}, "different settings: history"),
        ({"files": [{"path": "suite.yaml", "sha256": "f" * 64}]}, "suite.yaml differs"),
    ],
)
def test_mixed_suites_or_settings(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    a = make_run(tmp_path, "a", shard="1/2", scenarios=("a",))
    b = make_run(tmp_path, "b", shard="2/2", scenarios=("b",), **change)
    refuse(tmp_path, [a, b], message)


def test_how_fast_or_where_a_shard_ran_may_differ(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", shard="1/2", scenarios=("a",), settings={"local": True})
    b = make_run(
        tmp_path,
        "b",
        shard="2/2",
        scenarios=("b",),
        endpoint="http://127.0.0.1:40001/v1/chat/completions",
        settings={"local": True, "concurrency": 32, "paths": ["/ci/checkout/scenarios"]},
    )
    merged = merge_runs([a, b], tmp_path / "merged")
    record = json.loads((merged / "run.json").read_text())
    assert record["endpoint"] == "local"
    assert [s["settings"]["concurrency"] for s in record["shards"]] == [4, 32]


def test_missing_shards_are_refused_unless_a_partial_merge_is_asked(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", shard="1/3", scenarios=("a",))
    c = make_run(tmp_path, "c", shard="3/3", scenarios=("c",))
    refuse(tmp_path, [a, c], "shard 2/3 missing")
    merged = merge_runs([c, a], tmp_path / "merged", allow_partial=True)
    record = json.loads((merged / "run.json").read_text())
    assert record["status"] == "partial"
    assert record["missing_shards"] == ["2/3"]
    assert [line["scenario"] for line in iter_records(merged / "transcript.jsonl")] == ["a", "c"]


def test_status_and_exit_status_of_the_whole(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", shard="1/2", scenarios=("a",))
    b = make_run(
        tmp_path,
        "b",
        shard="2/2",
        scenarios=("b",),
        counts={"ok": 0, "error": 1, "skipped": 0},
        exit_status=3,
    )
    record = json.loads((merge_runs([a, b], tmp_path / "m1") / "run.json").read_text())
    assert (record["status"], record["exit_status"]) == ("complete", 3)
    assert record["counts"] == {"ok": 1, "error": 1, "skipped": 0}
    c = make_run(
        tmp_path, "c", shard="2/2", scenarios=("c",), status="interrupted", exit_status=130
    )
    record = json.loads((merge_runs([a, c], tmp_path / "m2") / "run.json").read_text())
    assert (record["status"], record["exit_status"]) == ("interrupted", 130)


def test_a_torn_last_line_is_left_out_and_counted(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", shard="1/2", scenarios=("a",), torn=True)
    b = make_run(tmp_path, "b", shard="2/2", scenarios=("b",))
    merged = merge_runs([a, b], tmp_path / "merged")
    record = json.loads((merged / "run.json").read_text())
    assert record["torn_lines_dropped"] == 1
    text = (merged / "transcript.jsonl").read_text()
    assert [json.loads(line)["scenario"] for line in text.splitlines()] == ["a", "b"]
