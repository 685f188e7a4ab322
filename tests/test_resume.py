"""--resume: torn lines, kept and rerun scenarios, superseded lines, and a SIGKILL loop."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from runner.engine import Run, RunSettings
from runner.errors import ResumeError
from runner.records import TurnRecord
from runner.resume import plan_resume
from runner.scenario import load_paths
from runner.server import LocalServer

SUITE = """\
defaults: {history: client}
scenarios:
  - {name: alpha, turns: [a1, a2, a3]}
  - {name: beta, turns: [b1, b2]}
  - {name: gamma, turns: [g1, g2, g3, g4]}
  - {name: delta, turns: [d1]}
"""
TURNS = {"alpha": 3, "beta": 2, "gamma": 4, "delta": 1}


def lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "transcript.jsonl").read_text().splitlines()]


def counting(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in lines(run_dir) if not r.get("superseded")]


def assert_one_line_per_turn(run_dir: Path) -> None:
    seen = Counter((r["scenario"], r["turn"]) for r in counting(run_dir))
    expected = {(name, t) for name, n in TURNS.items() for t in range(1, n + 1)}
    assert set(seen) == expected
    assert set(seen.values()) == {1}


def interrupted_run(tmp_path: Path, server: LocalServer, after: int) -> Path:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    scenarios = load_paths([str(suite)])
    settings = RunSettings(
        endpoint=server.url, out_dir=tmp_path / "out", concurrency=1, paths=(str(suite),)
    )
    run: Run
    written = []

    def on_record(rec: TurnRecord) -> None:
        written.append(rec)
        if len(written) == after:
            run.stop("interrupted", 130)

    run = Run(scenarios, settings, on_record=on_record)
    return run.execute().run_dir


def resume(run_dir: Path, server: LocalServer, *, force: bool = False) -> Any:
    plan = plan_resume(run_dir, force=force)
    settings = RunSettings(
        endpoint=server.url,
        out_dir=run_dir.parent,
        concurrency=2,
        paths=tuple(plan.record["settings"]["paths"]),
    )
    return plan, Run(plan.scenarios, settings, units=plan.todo).execute(plan)


def test_resume_keeps_finished_scenarios_and_reruns_the_rest(tmp_path: Path) -> None:
    with LocalServer() as server:
        run_dir = interrupted_run(tmp_path, server, after=4)  # alpha done, beta half-way
        before = lines(run_dir)
        assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
        plan, summary = resume(run_dir, server)
    assert [(sc.name, r) for sc, r in plan.todo] == [
        ("beta", None),
        ("gamma", None),
        ("delta", None),
    ]
    assert summary.exit_status == 0 and summary.run_id == plan.run_id
    after = lines(run_dir)
    # Lines already written are still there, in order; alpha's are untouched.
    assert [(r["scenario"], r["turn"]) for r in after[: len(before)]] == [
        (r["scenario"], r["turn"]) for r in before
    ]
    assert after[:3] == before[:3]
    superseded = [r for r in after if r.get("superseded")]
    assert {r["scenario"] for r in superseded} == {"beta", "gamma", "delta"}
    assert_one_line_per_turn(run_dir)
    beta = [r for r in counting(run_dir) if r["scenario"] == "beta"]
    old_beta = [r for r in superseded if r["scenario"] == "beta"]
    assert beta[0]["conversation_id"] != old_beta[0]["conversation_id"]
    assert beta[0]["reply"].startswith("turn 1 of conversation")
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "complete" and run["exit_status"] == 0
    assert run["counts"] == {"ok": 10, "error": 0, "skipped": 0}
    assert run["resumed"][0]["scenarios"] == ["beta", "gamma", "delta"]


def test_torn_last_line_is_repaired(tmp_path: Path) -> None:
    with LocalServer() as server:
        run_dir = interrupted_run(tmp_path, server, after=2)
        with open(run_dir / "transcript.jsonl", "ab") as f:
            f.write(b'{"schema": "convo-runner/turn@1", "scen')
        plan, _ = resume(run_dir, server)
    assert plan.torn_bytes == len(b'{"schema": "convo-runner/turn@1", "scen')
    assert_one_line_per_turn(run_dir)


def test_changed_scenario_file_is_refused_unless_forced(tmp_path: Path) -> None:
    with LocalServer() as server:
        run_dir = interrupted_run(tmp_path, server, after=1)
        suite = tmp_path / "suite.yaml"
        suite.write_text(SUITE + "# edited\n")
        with pytest.raises(ResumeError, match="changed since the run started"):
            plan_resume(run_dir)
        _, summary = resume(run_dir, server, force=True)
    assert summary.exit_status == 0


def test_complete_run_and_non_run_dir_are_refused(tmp_path: Path) -> None:
    with LocalServer() as server:
        run_dir = interrupted_run(tmp_path, server, after=1)
        resume(run_dir, server)
    with pytest.raises(ResumeError, match="complete"):
        plan_resume(run_dir)
    with pytest.raises(ResumeError, match="not a run directory"):
        plan_resume(tmp_path)


def test_cli_resume_exit_2_on_changed_file(tmp_path: Path) -> None:
    with LocalServer() as server:
        run_dir = interrupted_run(tmp_path, server, after=1)
    (tmp_path / "suite.yaml").write_text(SUITE.replace("a1", "A1"))
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "run", "--resume", str(run_dir), "--local"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "changed since the run started" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_sigkill_loop_loses_nothing_and_resume_completes(tmp_path: Path) -> None:
    """At least 20 SIGKILLs at random moments: every line written parses, at most the
    last is torn, and resume finishes with exactly one counting line per turn."""
    rng = random.Random(20261126)
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    base = [
        sys.executable,
        "-m",
        "runner",
        "run",
        "--local",
        "--local-token-delay",
        "0.003",
        "--concurrency",
        "2",
        "--progress",
        "off",
        "--out",
        str(tmp_path / "out"),
    ]
    kills = torn = lines_seen = runs = 0
    deadline = time.monotonic() + 120
    while kills < 20 and time.monotonic() < deadline:
        runs += 1
        dirs = sorted((tmp_path / "out").glob("*/run.json")) if (tmp_path / "out").exists() else []
        pending = [d.parent for d in dirs if json.loads(d.read_text())["status"] != "complete"]
        cmd = [*base, "--resume", str(pending[-1])] if pending else [*base, str(suite)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.25, 0.9))  # a random moment to kill at, not a wait for state
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
        for transcript in (tmp_path / "out").glob("*/transcript.jsonl"):
            raw = transcript.read_bytes().split(b"\n")
            for i, line in enumerate(raw):
                if not line:
                    continue
                try:
                    json.loads(line)
                    lines_seen += 1
                except ValueError:
                    assert i == len(raw) - 1, f"a line before the last is damaged in {transcript}"
                    torn += 1
    assert kills >= 20, f"only {kills} kills in {runs} runs"
    # Finish every interrupted run and check the invariant on each.
    for run_json in sorted((tmp_path / "out").glob("*/run.json")):
        run_dir = run_json.parent
        if json.loads(run_json.read_text())["status"] != "complete":
            proc = subprocess.run(
                [*base, "--resume", str(run_dir)], capture_output=True, text=True, timeout=60
            )
            assert proc.returncode == 0, proc.stderr
        assert_one_line_per_turn(run_dir)
        assert json.loads(run_json.read_text())["counts"]["ok"] == sum(TURNS.values())
    print(f"kills={kills} runs={runs} lines_checked={lines_seen} torn_last_lines={torn}")


def test_max_runtime_skips_the_rest_and_exits_3(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "runner",
            "run",
            str(suite),
            "--local",
            "--local-token-delay",
            "0.05",
            "--concurrency",
            "1",
            "--max-runtime",
            "0.5",
            "--out",
            str(tmp_path / "out"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    run_dir = Path(json.loads(proc.stdout)["run_dir"])
    records = lines(run_dir)
    assert len(records) == sum(TURNS.values())
    assert records[0]["status"] == "ok"
    skipped = [r for r in records if r["status"] == "skipped"]
    assert skipped and {r["skip_reason"] for r in skipped} == {"max_runtime"}
    assert not [r for r in records if r["status"] == "error"]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "max_runtime" and run["exit_status"] == 3
    # The rest can be finished later with --resume.
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "run", "--resume", str(run_dir), "--local"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert_one_line_per_turn(run_dir)


def test_no_traceback_on_resume_of_missing_dir(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "run", "--resume", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert proc.returncode == 2 and "not a run directory" in proc.stderr


def test_repeat_runs_each_scenario_n_times_and_resumes_per_repeat(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    with LocalServer() as server:
        settings = RunSettings(
            endpoint=server.url,
            out_dir=tmp_path / "out",
            concurrency=1,
            paths=(str(suite),),
            repeat=3,
        )
        run: Run

        def on_record(rec: TurnRecord) -> None:
            if rec["scenario"] == "beta" and rec.get("repeat") == 2 and rec["turn"] == 1:
                run.stop("interrupted", 130)

        run = Run(load_paths([str(suite)]), settings, on_record=on_record)
        run_dir = run.execute().run_dir
        first = lines(run_dir)
        assert {r["repeat"] for r in first} == {1, 2, 3}
        assert len(first) == 3 * sum(TURNS.values())
        plan, summary = resume(run_dir, server)
    assert ("alpha", 2) not in [(sc.name, r) for sc, r in plan.todo]
    assert ("beta", 2) in [(sc.name, r) for sc, r in plan.todo]
    assert summary.exit_status == 0
    final = counting(run_dir)
    keys = Counter((r["scenario"], r["repeat"], r["turn"]) for r in final)
    assert len(keys) == 3 * sum(TURNS.values()) and set(keys.values()) == {1}
    per_conversation = {(r["scenario"], r["repeat"]): r["conversation_id"] for r in final}
    assert len(set(per_conversation.values())) == 12
