"""The run engine against real servers on 127.0.0.1: bodies, history, retries, records."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from runner.client import Timeouts
from runner.engine import Run, RunSettings, build_body
from runner.records import TurnRecord
from runner.retry import RetryPolicy
from runner.scenario import Scenario, Turn
from runner.server import LocalServer
from tests.rawserver import Request, raw_server, send_chunked, send_length, sse_events


def scenario(name: str = "s", *turns: str, **kw: Any) -> Scenario:
    texts = turns or ("one", "two")
    return Scenario(
        name=name,
        file=f"{name}.yaml",
        line=1,
        turns=tuple(Turn(user=t, line=i + 2) for i, t in enumerate(texts)),
        sha256="0" * 64,
        **kw,
    )


def read(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]


def settings(tmp_path: Path, endpoint: str, **kw: Any) -> RunSettings:
    kw.setdefault("retry", RetryPolicy(max_attempts=3))
    return RunSettings(endpoint=endpoint, out_dir=tmp_path, **kw)


def test_server_history_sends_the_original_example_bodies(tmp_path: Path) -> None:
    heiner = scenario(
        "heiner",
        "Hello, i am Heiner. How are you?",
        "Tell me somethings about my name",
        provider="Copilot",
        history="server",
    )
    with LocalServer() as server:
        summary = Run([heiner], settings(tmp_path, server.url)).execute()
        bodies = [r.body for r in server.requests]
    assert summary.exit_status == 0 and summary.ok == 2
    cid = bodies[0]["conversation_id"]
    assert uuid.UUID(cid).version == 4
    assert bodies[0] == {
        "model": "",
        "provider": "Copilot",
        "stream": True,
        "messages": [{"role": "user", "content": "Hello, i am Heiner. How are you?"}],
        "conversation_id": cid,
    }
    # Turn 2: only the new user turn, the same conversation id, and the handle sent back.
    assert list(bodies[1]) == [
        "model",
        "provider",
        "stream",
        "messages",
        "conversation_id",
        "conversation",
    ]
    assert bodies[1]["messages"] == [
        {"role": "user", "content": "Tell me somethings about my name"}
    ]
    assert bodies[1]["conversation_id"] == cid
    records = read(summary.run_dir)
    assert records[1]["reply"].startswith("turn 2 of conversation")
    assert "handle ok" in records[1]["reply"]


def test_client_history_sends_the_whole_dialogue(tmp_path: Path) -> None:
    sc = scenario("c", "a", "b", "c", system="Be terse.", params={"temperature": 0})
    with LocalServer() as server:
        summary = Run([sc], settings(tmp_path, server.url)).execute()
        bodies = [r.body for r in server.requests]
    records = read(summary.run_dir)
    assert [len(b["messages"]) for b in bodies] == [2, 4, 6]
    assert bodies[2]["messages"][:4] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": records[0]["reply"]},
        {"role": "user", "content": "b"},
    ]
    assert all(b["temperature"] == 0 and "provider" not in b for b in bodies)
    assert [r["request"]["messages_sent"] for r in records] == [2, 4, 6]


def test_server_history_sends_the_system_prompt_on_turn_one_only(tmp_path: Path) -> None:
    sc = scenario("s", "a", "b", system="sys", history="server")
    with LocalServer() as server:
        Run([sc], settings(tmp_path, server.url)).execute()
        bodies = [r.body for r in server.requests]
    assert [m["role"] for m in bodies[0]["messages"]] == ["system", "user"]
    assert [m["role"] for m in bodies[1]["messages"]] == ["user"]


def test_settings_override_provider_model_history(tmp_path: Path) -> None:
    sc = scenario("s", "a", "b", provider="Copilot", model="m1", history="server")
    with LocalServer() as server:
        Run(
            [sc], settings(tmp_path, server.url, provider="Other", model="m2", history="client")
        ).execute()
        bodies = [r.body for r in server.requests]
    assert {(b["provider"], b["model"]) for b in bodies} == {("Other", "m2")}
    assert len(bodies[1]["messages"]) == 3


def test_build_body_params_cannot_override_owned_keys() -> None:
    body = build_body(
        model="",
        provider=None,
        messages=[],
        conversation_id="c",
        params={"stream": False, "messages": 1, "conversation_id": "x", "top_p": 1},
    )
    assert body == {"model": "", "stream": True, "messages": [], "conversation_id": "c", "top_p": 1}


def test_one_record_per_turn_with_every_field(tmp_path: Path) -> None:
    scs = [scenario(f"s{i}", "x", "y", "z") for i in range(6)]
    with LocalServer() as server:
        summary = Run(scs, settings(tmp_path, server.url, concurrency=3)).execute()
    records = read(summary.run_dir)
    assert len(records) == 18 == summary.ok
    keys = {
        "schema",
        "run_id",
        "scenario",
        "scenario_file",
        "conversation_id",
        "turn",
        "user",
        "reply",
        "status",
        "error",
        "attempts",
        "finish_reason",
        "usage",
        "reasoning",
        "server",
        "request",
        "timing",
    }
    for rec in records:
        assert keys <= set(rec)
        assert rec["schema"] == "convo-runner/turn@1" and rec["run_id"] == summary.run_id
        assert set(rec["timing"]) == {
            "started_at",
            "ttft_ms",
            "duration_ms",
            "chunks",
            "max_gap_ms",
        }
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_scenario.setdefault(rec["scenario"], []).append(rec)
    for recs in by_scenario.values():
        assert [r["turn"] for r in recs] == [1, 2, 3]
        assert len({r["conversation_id"] for r in recs}) == 1
    assert len({r["conversation_id"] for r in records}) == 6
    run = json.loads((summary.run_dir / "run.json").read_text())
    assert run["status"] == "complete" and run["exit_status"] == 0
    assert run["counts"] == {"ok": 18, "error": 0, "skipped": 0}
    assert run["files"][0]["sha256"] == "0" * 64


def _flaky(failures: dict[int, Any]):  # type: ignore[no-untyped-def]
    """A handler whose n-th request (1-based) fails as ``failures[n]`` says."""
    count = {"n": 0}
    lock = threading.Lock()

    def handler(sock: socket.socket, req: Request) -> bool:
        with lock:
            count["n"] += 1
            n = count["n"]
        kind = failures.get(n)
        if kind == "503":
            send_length(
                sock,
                b'{"error": {"message": "busy"}}',
                status=b"503 Service Unavailable",
                ctype=b"application/json",
            )
        elif kind == "429":
            send_length(
                sock,
                b"{}",
                status=b"429 Too Many Requests",
                ctype=b"application/json",
                headers=b"Retry-After: 3\r\n",
            )
        elif kind == "404":
            send_length(
                sock,
                b'{"error": {"message": "Provider not found: X"}}',
                status=b"404 Not Found",
                ctype=b"application/json",
            )
        elif kind == "inband":
            send_chunked(
                sock,
                [
                    *sse_events("GARBAGE ", finish=None, done=False),
                    b'data: {"error": {"message": "upstream failed"}}\n\n',
                ],
            )
        else:
            user = req.json()["messages"][-1]["content"]
            send_chunked(sock, sse_events(f"reply to {user}"))
        return True

    return handler


def test_a_retried_turn_keeps_failed_text_out_of_the_reply(tmp_path: Path) -> None:
    waits: list[float] = []
    with raw_server(_flaky({1: "inband", 2: "429"})) as server:
        summary = Run(
            [scenario("s", "a", "b")],
            settings(tmp_path, server.url),
            sleep=waits.append,
            rand=lambda: 0.5,
        ).execute()
    first = read(summary.run_dir)[0]
    assert first["status"] == "ok" and first["reply"] == "reply to a"
    assert [a["outcome"] for a in first["attempts"]] == ["error", "error", "ok"]
    assert first["attempts"][0]["partial_reply"] == "GARBAGE "
    assert first["attempts"][0]["error"]["type"] == "in_band_error"
    assert first["attempts"][0]["error"]["in_band"] is True
    assert first["attempts"][1]["http_status"] == 429
    # Full jitter after attempt 1 (0.5 * 1 s), then the server's Retry-After.
    assert waits == [0.5, 3.0]
    assert [a["wait_s"] for a in first["attempts"]] == [0.5, 3.0, None]


def test_persistent_failure_skips_later_turns_only_in_that_scenario(tmp_path: Path) -> None:
    failing = {n: "503" for n in range(1, 4)}  # the first scenario's first turn, 3 attempts
    with raw_server(_flaky(failing)) as server:
        summary = Run(
            [scenario("bad", "a", "b", "c"), scenario("good", "x")],
            settings(tmp_path, server.url, concurrency=1),
            sleep=lambda s: None,
        ).execute()
    records = {(r["scenario"], r["turn"]): r for r in read(summary.run_dir)}
    assert records["bad", 1]["status"] == "error"
    assert records["bad", 1]["error"] == {
        "type": "http_status",
        "message": records["bad", 1]["error"]["message"],
        "http_status": 503,
        "in_band": False,
        "retryable": True,
    }
    assert len(records["bad", 1]["attempts"]) == 3
    assert records["bad", 2]["status"] == records["bad", 3]["status"] == "skipped"
    assert records["bad", 2]["skip_reason"] == "previous_turn_failed"
    assert records["good", 1]["status"] == "ok"
    assert (summary.error, summary.skipped, summary.ok, summary.exit_status) == (1, 2, 1, 3)


def test_non_retryable_status_is_tried_once(tmp_path: Path) -> None:
    with raw_server(_flaky({1: "404"})) as server:
        summary = Run(
            [scenario("s", "a")], settings(tmp_path, server.url), sleep=lambda s: None
        ).execute()
    rec = read(summary.run_dir)[0]
    assert rec["status"] == "error" and len(rec["attempts"]) == 1
    assert "Provider not found: X" in rec["error"]["message"]


def test_stop_records_remaining_turns_as_interrupted(tmp_path: Path) -> None:
    with LocalServer() as server:
        run: Run

        def on_record(rec: TurnRecord) -> None:
            if rec["turn"] == 1:
                run.stop("interrupted", 130)

        run = Run(
            [scenario("s", "a", "b", "c")],
            settings(tmp_path, server.url, concurrency=1),
            on_record=on_record,
        )
        summary = run.execute()
    records = read(summary.run_dir)
    assert [r["status"] for r in records] == ["ok", "skipped", "skipped"]
    assert records[1]["skip_reason"] == "interrupted"
    assert summary.exit_status == 130 and summary.status == "interrupted"
    assert json.loads((summary.run_dir / "run.json").read_text())["status"] == "interrupted"


def test_connection_refused_is_an_error_per_scenario(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/chat/completions"
    sock.close()
    summary = Run(
        [scenario("s", "a", "b")],
        settings(tmp_path, url, retry=RetryPolicy(max_attempts=2), timeouts=Timeouts(connect=1)),
        sleep=lambda s: None,
    ).execute()
    records = read(summary.run_dir)
    assert records[0]["error"]["type"] == "connect_error"
    assert "nothing is listening" in records[0]["error"]["message"]
    assert records[1]["status"] == "skipped"


@pytest.mark.parametrize("n", [1, 8])
def test_concurrency_runs_every_scenario(tmp_path: Path, n: int) -> None:
    scs = [scenario(f"s{i}", "a", "b") for i in range(8)]
    with LocalServer() as server:
        summary = Run(scs, settings(tmp_path, server.url, concurrency=n)).execute()
    assert summary.ok == 16 and summary.exit_status == 0


def test_api_key_echoed_by_the_server_is_redacted(tmp_path: Path) -> None:
    key = "sk-canary-echo-9c1d"

    def echo(sock: socket.socket, req: Request) -> bool:
        auth = req.headers["authorization"]
        if len(echo.seen) == 0:  # type: ignore[attr-defined]
            echo.seen.append(1)  # type: ignore[attr-defined]
            body = json.dumps({"error": {"message": f"bad header {auth}"}}).encode()
            send_length(sock, body, status=b"500 Internal Server Error", ctype=b"application/json")
        else:
            send_chunked(sock, sse_events(f"you sent {auth}"))
        return True

    echo.seen = []  # type: ignore[attr-defined]
    seen: list[TurnRecord] = []
    with raw_server(echo) as server:
        summary = Run(
            [scenario("s", "a")],
            settings(tmp_path, server.url, api_key=key),
            sleep=lambda s: None,
            on_record=seen.append,
        ).execute()
    text = (summary.run_dir / "transcript.jsonl").read_text()
    assert key not in text and key not in json.dumps(seen)
    rec = json.loads(text)
    assert rec["attempts"][0]["error"]["message"].endswith("bad header Bearer [REDACTED]")
    assert rec["reply"] == "you sent Bearer [REDACTED]"


def test_expectations_and_captures_are_recorded(tmp_path: Path) -> None:
    from runner.checks import parse_captures, parse_checks

    turns = (
        Turn(
            user="capital of France",
            line=2,
            expect=parse_checks([{"contains": "France"}, {"regex": "^turn 1 "}]),
            capture=parse_captures({"word": r"you said: (\w+)"}),
        ),
        Turn(user="about {word}", line=3, expect=parse_checks([{"contains": "nowhere"}])),
    )
    sc = Scenario(
        name="c",
        file="c.yaml",
        line=1,
        turns=turns,
        sha256="0" * 64,
        expect_all_turns=parse_checks([{"max_chars": 1000}]),
    )
    with LocalServer() as server:
        summary = Run([sc], settings(tmp_path, server.url)).execute()
        bodies = [r.body for r in server.requests]
    records = read(summary.run_dir)
    assert bodies[1]["messages"][-1]["content"] == "about capital"
    assert records[1]["user"] == "about capital"
    assert [c["name"] for c in records[0]["checks"]] == [
        "contains",
        "regex",
        "max_chars",
        "capture:word",
    ]
    assert all(c["passed"] for c in records[0]["checks"])
    failed = [c for c in records[1]["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["contains"]
    assert "nowhere" in failed[0]["detail"]
    assert (summary.checks_run, summary.checks_failed, summary.exit_status) == (6, 1, 1)
    run = json.loads((summary.run_dir / "run.json").read_text())
    assert run["checks"] == {"run": 6, "failed": 1} and run["exit_status"] == 1


def test_failed_capture_fails_the_check_and_skips_turns_that_need_it(tmp_path: Path) -> None:
    from runner.checks import parse_captures

    turns = (
        Turn(user="x", line=2, capture=parse_captures({"code": r"code=(\d+)"})),
        Turn(user="use {code}", line=3),
    )
    sc = Scenario(name="c", file="c.yaml", line=1, turns=turns, sha256="0" * 64)
    with LocalServer() as server:
        summary = Run([sc], settings(tmp_path, server.url)).execute()
    records = read(summary.run_dir)
    assert records[0]["checks"][0]["name"] == "capture:code"
    assert records[0]["checks"][0]["passed"] is False
    assert records[1]["status"] == "skipped" and records[1]["skip_reason"] == "capture_failed"
    assert summary.exit_status == 1


def test_strict_openai_sends_no_gpt4free_extras(tmp_path: Path) -> None:
    sc = scenario("s", "a", "b", history="server")
    with LocalServer() as server:
        Run([sc], settings(tmp_path, server.url, strict_openai=True)).execute()
        bodies = [r.body for r in server.requests]
    assert all("conversation_id" not in b and "conversation" not in b for b in bodies)
    assert list(bodies[0]) == ["model", "stream", "messages"]


def test_each_attempt_says_which_it_is(tmp_path: Path) -> None:
    with raw_server(_flaky({1: "503"})) as server:
        Run(
            [scenario("s", "a", "b")], settings(tmp_path, server.url), sleep=lambda s: None
        ).execute()
        attempts = [r.headers["x-runner-attempt"] for r in server.requests]
    assert attempts == ["1", "2", "1"]
