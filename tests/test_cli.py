"""The command line: exit codes, output streams, secrets, signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.cli import main
from runner.server import LocalServer

ROOT = Path(__file__).resolve().parent.parent
HEINER = """\
name: heiner
provider: Copilot
model: ""
history: server
turns:
  - Hello, i am Heiner. How are you?
  - user: Tell me somethings about my name
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def runner(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--version"],
        ["--help"],
        ["run", "--help"],
        ["validate", "--help"],
        ["serve", "--help"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0, argv
    assert "runner" in capsys.readouterr().out


def test_usage_error_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "x.yaml", "--concurrency", "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--concurrency" in err and len(err.strip().splitlines()) == 1


def test_validate_ok_and_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "h.yaml", HEINER)
    assert main(["validate", str(good)]) == 0
    assert "1 scenario(s), 2 turn(s)" in capsys.readouterr().out
    bad = write(tmp_path, "bad.yaml", "turns:\n  - ok\n  - [1, 2]\n")
    assert main(["validate", str(good), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"runner: {bad}:3: turns[1]:")
    assert len(err.splitlines()) == 1


def test_bad_scenario_sends_nothing(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "turns: []\n")
    good = write(tmp_path, "h.yaml", HEINER)
    with LocalServer() as server:
        code = main(
            [
                "run",
                str(good),
                str(bad),
                "--endpoint",
                server.url,
                "--out",
                str(tmp_path / "out"),
                "--progress",
                "off",
            ]
        )
        assert server.requests == []
    assert code == 2
    assert not (tmp_path / "out").exists()


def test_bad_input_in_a_subprocess_has_no_traceback(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "name: [unclosed\n")
    proc = runner("run", str(bad), "--local")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"runner: {bad}:")


def test_run_local_json_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "h.yaml", HEINER)
    code = main(
        ["run", str(good), "--local", "--json", "--out", str(tmp_path / "out"), "--progress", "off"]
    )
    out = capsys.readouterr().out
    summary = json.loads(out)
    assert code == 0 and summary["exit_status"] == 0
    assert summary["ok"] == 2 and summary["turns"] == 2
    transcript = Path(summary["transcript"])
    assert transcript.parent.parent == tmp_path / "out"
    assert len(transcript.read_text().splitlines()) == 2


def test_endpoint_base_url_and_env_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write(tmp_path, "h.yaml", HEINER)
    with LocalServer() as server:
        assert (
            main(
                [
                    "run",
                    str(good),
                    "--endpoint",
                    server.base_url,
                    "--out",
                    str(tmp_path),
                    "--progress",
                    "off",
                ]
            )
            == 0
        )
        monkeypatch.setenv("RUNNER_ENDPOINT", server.url)
        assert main(["run", str(good), "--out", str(tmp_path), "--progress", "off"]) == 0
        assert len(server.requests) == 4


def test_nothing_listening_exit_3_with_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, "h.yaml", HEINER)
    url = f"http://127.0.0.1:{free_port()}/v1"
    code = main(
        [
            "run",
            str(good),
            "--endpoint",
            url,
            "--max-attempts",
            "1",
            "--out",
            str(tmp_path),
            "--progress",
            "off",
        ]
    )
    err = capsys.readouterr().err
    assert code == 3
    assert "nothing is listening" in err and "--local" in err


def test_local_and_endpoint_conflict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "h.yaml", HEINER)
    assert main(["run", str(good), "--local", "--endpoint", "http://127.0.0.1:1/v1"]) == 2
    assert "--local" in capsys.readouterr().err


def test_api_key_is_sent_but_never_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = "sk-canary-5f1e2d"
    monkeypatch.setenv("MY_KEY", canary)
    good = write(tmp_path, "h.yaml", HEINER)
    with LocalServer() as server:
        code = main(
            [
                "run",
                str(good),
                "--endpoint",
                server.url,
                "--api-key-env",
                "MY_KEY",
                "--out",
                str(tmp_path / "out"),
                "--progress",
                "on",
            ]
        )
        auth = {
            r.headers.get("authorization") or r.headers.get("Authorization")
            for r in server.requests
        }
    assert code == 0 and auth == {f"Bearer {canary}"}
    captured = capsys.readouterr()
    written = "".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert "MY_KEY" in written  # the variable's name is recorded ...
    for text in (written, captured.out, captured.err):
        assert canary not in text  # ... its value never


def test_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "h.yaml", HEINER)
    assert main(["run", str(good), "--local", "--out", str(tmp_path), "--progress", "on"]) == 0
    captured = capsys.readouterr()
    assert "turn" in captured.err
    assert len(captured.out.strip().splitlines()) == 1


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_stop_gracefully(tmp_path: Path, sig: int, code: int) -> None:
    sc = write(tmp_path, "slow.yaml", "turns: [a, b, c, d, e, f]\n")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner",
            "run",
            str(sc),
            "--local",
            "--local-token-delay",
            "0.05",
            "--out",
            str(out),
            "--progress",
            "off",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        transcript: list[Path] = []
        while time.monotonic() < deadline:
            transcript = list(out.glob("*/transcript.jsonl"))
            if transcript and transcript[0].read_text().count("\n") >= 1:
                break
            time.sleep(0.02)  # polling a file another process writes, bounded by the deadline
        assert transcript, "the run never wrote its first line"
        proc.send_signal(sig)
        proc.wait(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == code
    records = [json.loads(line) for line in transcript[0].read_text().splitlines()]
    assert len(records) == 6
    assert records[0]["status"] == "ok"
    assert {r["status"] for r in records[1:]} <= {"ok", "skipped"}
    assert records[-1]["status"] == "skipped" and records[-1]["skip_reason"] == "interrupted"
    run = json.loads((transcript[0].parent / "run.json").read_text())
    assert run["status"] == "interrupted" and run["exit_status"] == code


def test_bundled_scenarios_run_locally(tmp_path: Path) -> None:
    proc = runner("run", str(ROOT / "scenarios"), "--local", "--out", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["turns"] >= 7 and summary["ok"] == summary["turns"]


def test_report_diff_trend_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "h.yaml", HEINER)
    out = tmp_path / "out"
    common = ["--out", str(out), "--progress", "off", "--json", "--max-attempts", "1"]
    assert main(["run", str(good), "--local", *common]) == 0
    base = json.loads(capsys.readouterr().out)["run_dir"]
    assert main(["run", str(good), "--local", "--local-faults", "turn=2:status=503", *common]) == 3
    new = json.loads(capsys.readouterr().out)["run_dir"]

    assert main(["report", base, "--html", str(tmp_path / "r.html")]) == 0
    assert "heiner" in capsys.readouterr().out
    assert "<svg" in (tmp_path / "r.html").read_text()
    assert main(["report", base, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)

    assert main(["diff", base, base]) == 0
    capsys.readouterr()
    assert main(["diff", base, new, "--json"]) == 1  # ok -> error is a regression
    assert json.loads(capsys.readouterr().out)["regressions"]

    assert main(["trend", str(out), "--csv", str(tmp_path / "t.csv")]) == 0
    assert (tmp_path / "t.csv").read_text().count("\n") >= 2
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "runner: error:" in capsys.readouterr().err


def test_shards_in_parallel_processes_merge_into_one_run(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "scenarios:\n" + "".join(f"  - {{name: s{i}, turns: [a{i}, b{i}]}}\n" for i in range(12))
    )
    out = tmp_path / "shards"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runner",
                "run",
                str(suite),
                "--local",
                "--shard",
                f"{k}/3",
                "--out",
                str(out),
                "--json",
                "--progress",
                "off",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (1, 2, 3)
    ]
    dirs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
        dirs.append(json.loads(stdout)["run_dir"])
    shards = [json.loads((Path(d) / "run.json").read_text())["shard"] for d in dirs]
    assert shards == ["1/3", "2/3", "3/3"]
    proc = runner("merge", *dirs, "--out", str(tmp_path / "merged"), "--json")
    assert proc.returncode == 0, proc.stderr
    merged = Path(json.loads(proc.stdout)["run_dir"])
    records = [json.loads(x) for x in (merged / "transcript.jsonl").read_text().splitlines()]
    assert sorted((r["scenario"], r["turn"]) for r in records) == sorted(
        (f"s{i}", t) for i in range(12) for t in (1, 2)
    )
    assert {r["run_id"] for r in records} == {merged.name}
    assert runner("report", str(merged)).returncode == 0
    # The same shard twice is refused, with one line and exit 2.
    proc = runner("merge", dirs[0], dirs[0], "--out", str(tmp_path / "m2"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_prints_its_url_and_stops_on_signals(sig: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1/chat/completions")
        import requests

        models = requests.get(url.replace("chat/completions", "models"), timeout=5).json()
        assert models["data"][0]["id"] == "local-echo"
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
