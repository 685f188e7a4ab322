"""The runner through gpt4free's API server: runner -> ``g4f api`` -> built-in endpoint.

Each test sends its requests to g4f with ``provider`` set to the base URL of its
own built-in endpoint, so g4f forwards them there as an OpenAI-compatible
upstream, and the upstream's fault plan makes g4f fail for real.

g4f drops the request's ``conversation_id`` before calling the upstream. Tests
that need the upstream to tell conversations apart pass one through
``params: {extra_body: {conversation_id: ...}}``, which g4f merges into the
upstream request body.

g4f keeps a process-wide cache of conversation handles keyed on the model and
the messages before the last exchange; tests put a fresh token in every system
prompt or opening turn so that they never share an opening (except the test
that shows the cache at work).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from runner.server import LocalServer
from tests.interop.conftest import G4F
from tests.interop.harness import RunResult, pinned_version, run_runner, write_scenario

pytestmark = pytest.mark.interop

Upstream = Callable[..., LocalServer]


def token() -> str:
    return uuid.uuid4().hex[:8]


def run(g4f: G4F, tmp_path: Path, paths: list[Path], *args: str) -> RunResult:
    return run_runner(paths, "--endpoint", g4f.endpoint, *args, out=tmp_path / "out")


def chat_bodies(server: LocalServer) -> list[dict[str, Any]]:
    return [r.body for r in server.requests if r.method == "POST"]


def test_the_tested_version_is_the_pinned_one(g4f: G4F) -> None:
    assert g4f.version == pinned_version("g4f", "g4f")


def test_client_history_resends_the_dialogue(g4f: G4F, upstream: Upstream, tmp_path: Path) -> None:
    up = upstream()
    system = f"You are terse. {token()}"
    turns = ["first question", "second question", "third question"]
    path = write_scenario(
        tmp_path,
        "client",
        model="local-echo",
        provider=up.base_url,
        history="client",
        system=system,
        turns=turns,
    )

    result = run(g4f, tmp_path, [path])

    assert result.returncode == 0, result.explain()
    records = result.turns("client")
    assert [r["status"] for r in records] == ["ok", "ok", "ok"]
    for n, (rec, text) in enumerate(zip(records, turns, strict=True), 1):
        # The upstream saw the system prompt and the whole dialogue so far.
        assert f"received {2 * n} messages" in rec["reply"]
        assert rec["reply"].endswith(f"you said: {text}")
        assert rec["finish_reason"] == "stop"
        assert rec["usage"]["total_tokens"] > 0  # g4f always reports usage
        assert rec["server"]["provider"] == f"127001:{up.port}"  # g4f's label for a URL
        assert rec["server"]["model"] == "local-echo"
    bodies = chat_bodies(up)
    assert len(bodies) == 3
    assert bodies[2]["messages"] == [
        {"role": "system", "content": system},
        {"role": "user", "content": turns[0]},
        {"role": "assistant", "content": records[0]["reply"]},
        {"role": "user", "content": turns[1]},
        {"role": "assistant", "content": records[1]["reply"]},
        {"role": "user", "content": turns[2]},
    ]
    # g4f never passes the runner's conversation_id on to the upstream.
    assert all("conversation_id" not in body for body in bodies)


def test_server_history_carries_the_conversation_handle(
    g4f: G4F, upstream: Upstream, tmp_path: Path
) -> None:
    up = upstream()
    cid = str(uuid.uuid4())
    path = write_scenario(
        tmp_path,
        "server",
        model="local-echo",
        provider=up.base_url,
        history="server",
        system=f"Remember everything. {token()}",
        params={"extra_body": {"conversation_id": cid}},
        turns=["my name is Heiner", "what is my name?", "and again?"],
    )

    result = run(g4f, tmp_path, [path])

    assert result.returncode == 0, result.explain()
    records = result.turns("server")
    replies = [r["reply"] for r in records]
    assert replies[0].startswith(f"turn 1 of conversation {cid[:8]}: received 2 messages;")
    # Only the new turn is sent, with the handle of the previous reply: the
    # upstream recognises the handle it delivered last ("handle ok").
    assert replies[1].startswith(
        f"turn 2 of conversation {cid[:8]}: received 1 messages, handle ok;"
    )
    assert replies[2].startswith(
        f"turn 3 of conversation {cid[:8]}: received 1 messages, handle ok;"
    )
    handles = [r["server"]["conversation"] for r in records]
    assert handles == [{"id": f"local-{cid[:8]}", "turns_seen": n} for n in (1, 2, 3)]
    bodies = chat_bodies(up)
    assert "conversation" not in bodies[0]
    assert [b.get("conversation") for b in bodies[1:]] == handles[:2]


def test_g4f_keeps_no_handle_per_conversation_id(g4f: G4F, upstream: Upstream) -> None:
    """Continuity needs the client: the same conversation_id alone brings back no handle."""
    up = upstream()
    url = g4f.process.url
    for text in (f"first {token()}", f"second {token()}"):
        body = {
            "model": "local-echo",
            "provider": up.base_url,
            "stream": True,
            "conversation_id": "same-id-both-times",
            "messages": [{"role": "user", "content": text}],
        }
        with requests.post(url, json=body, stream=True, timeout=30) as reply:
            assert reply.status_code == 200
            assert b'"conversation"' in b"".join(reply.iter_content(chunk_size=None))
    first, second = chat_bodies(up)
    assert "conversation" not in first
    assert "conversation" not in second  # g4f did not fill in the handle of the first reply


# Upstream fault -> what the runner records. g4f turns most upstream failures
# before the first chunk into 500 "Request execution failed"; it keeps 429 and
# 401, drops Retry-After, and reports a failure mid-stream in-band.
ERROR_CASES = {
    "upstream_500": ("status=500", "http_status", 500, True, "Request execution failed"),
    "upstream_503": ("status=503", "http_status", 500, True, "Request execution failed"),
    "upstream_400": ("status=400", "http_status", 500, True, "Request execution failed"),
    "upstream_429": ("status=429,retry_after=5", "http_status", 429, True, "Request execution"),
    "upstream_401": ("status=401", "http_status", 401, False, "MissingAuthError"),
    "midstream": ("inband_after=2", "in_band_error", 200, True, "Request execution failed"),
    "malformed_chunk": ("malformed_after=1", "in_band_error", 200, True, "Request execution"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_upstream_failures_reach_the_transcript(
    g4f: G4F, upstream: Upstream, tmp_path: Path, case: str
) -> None:
    faults, err_type, status, retryable, message = ERROR_CASES[case]
    up = upstream(faults)
    path = write_scenario(
        tmp_path, case, model="local-echo", provider=up.base_url, turns=[f"{case} {token()}"]
    )

    result = run(g4f, tmp_path, [path], "--max-attempts", "2")

    assert result.returncode == 3, result.explain()
    (rec,) = result.turns(case)
    assert rec["status"] == "error"
    error = rec["error"]
    assert (error["type"], error["http_status"], error["retryable"]) == (
        err_type,
        status,
        retryable,
    )
    assert error["in_band"] is (err_type == "in_band_error")
    assert message in error["message"]
    attempts = rec["attempts"]
    assert len(attempts) == (2 if retryable else 1)
    # g4f does not retry on its own: one upstream request per runner attempt.
    assert len(chat_bodies(up)) == len(attempts)
    if case == "upstream_429":
        # The upstream asked for 5 s; g4f does not pass Retry-After on, so the
        # runner fell back to its own (shorter) backoff.
        assert attempts[0]["wait_s"] < 5.0
    if case == "midstream":
        # The text before the in-band error is kept in the attempt, not the reply.
        assert attempts[0]["partial_reply"] == "turn 1 "
        assert rec["reply"] == ""


def test_a_truncated_upstream_stream_looks_complete_through_g4f(
    g4f: G4F, upstream: Upstream, tmp_path: Path
) -> None:
    up = upstream("no_done")  # all text, then EOF: no finish_reason, no [DONE]
    path = write_scenario(
        tmp_path, "truncated", model="local-echo", provider=up.base_url, turns=[f"cut {token()}"]
    )

    result = run(g4f, tmp_path, [path])

    # g4f ends the stream properly on the upstream's behalf, so the runner
    # cannot tell: a known difference from a direct connection.
    (rec,) = result.turns("truncated")
    assert rec["status"] == "ok", result.explain()
    assert rec["finish_reason"] == "stop"
    assert rec["reply"].endswith("you said: " + rec["user"])


def test_unknown_provider_is_a_404_and_not_retried(g4f: G4F, tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "noprov", model="m", provider="NoSuchProvider", turns=["hi"])

    result = run(g4f, tmp_path, [path], "--max-attempts", "3")

    assert result.returncode == 3, result.explain()
    (rec,) = result.turns("noprov")
    assert rec["error"]["http_status"] == 404
    assert rec["error"]["retryable"] is False
    assert "Provider not found: NoSuchProvider" in rec["error"]["message"]
    assert len(rec["attempts"]) == 1


def test_a_body_g4f_cannot_validate_is_a_422_with_the_field(
    g4f: G4F, upstream: Upstream, tmp_path: Path
) -> None:
    up = upstream()
    path = write_scenario(
        tmp_path,
        "badbody",
        model="local-echo",
        provider=up.base_url,
        params={"temperature": "warm"},
        turns=["hi"],
    )

    result = run(g4f, tmp_path, [path], "--max-attempts", "3")

    assert result.returncode == 3, result.explain()
    (rec,) = result.turns("badbody")
    assert rec["error"]["http_status"] == 422
    assert rec["error"]["retryable"] is False
    assert "temperature" in rec["error"]["message"]  # from FastAPI's {"detail": [...]}
    assert chat_bodies(up) == []


def test_a_failed_first_attempt_is_retried_as_a_whole_turn(
    g4f: G4F, upstream: Upstream, tmp_path: Path
) -> None:
    up = upstream("turn=2,attempt=1:status=503")
    path = write_scenario(
        tmp_path,
        "retry",
        model="local-echo",
        provider=up.base_url,
        turns=[f"one {token()}", "two", "three"],
    )

    result = run(g4f, tmp_path, [path], "--max-attempts", "3")

    assert result.returncode == 0, result.explain()
    records = result.turns("retry")
    assert [len(r["attempts"]) for r in records] == [1, 2, 1]
    first, second = records[1]["attempts"]
    assert (first["outcome"], first["http_status"]) == ("error", 500)
    assert (second["outcome"], second["http_status"]) == ("ok", 200)
    assert records[1]["reply"].endswith("you said: two")
    assert [r.fault for r in up.requests if r.method == "POST"].count(None) == 3


def test_eight_conversations_at_once(g4f: G4F, upstream: Upstream, tmp_path: Path) -> None:
    up = upstream(token_delay=0.01)
    cids = {f"c{i}": str(uuid.uuid4()) for i in range(8)}
    paths = [
        write_scenario(
            tmp_path,
            name,
            model="local-echo",
            provider=up.base_url,
            history="client",
            system=f"Conversation {name}. {token()}",
            params={"extra_body": {"conversation_id": cid}},
            turns=[f"{name} hello", f"{name} more", f"{name} bye"],
        )
        for name, cid in cids.items()
    ]

    result = run(g4f, tmp_path, paths, "--concurrency", "8")

    assert result.returncode == 0, result.explain()
    assert result.summary["ok"] == 24
    for name, cid in cids.items():
        records = result.turns(name)
        for n, (rec, said) in enumerate(zip(records, ["hello", "more", "bye"], strict=True), 1):
            # Each reply belongs to its own conversation, turn and text: no mix-ups.
            assert rec["reply"].startswith(f"turn {n} of conversation {cid[:8]}:"), rec["reply"]
            assert rec["reply"].endswith(f"you said: {name} {said}")
    assert len(chat_bodies(up)) == 24


def test_g4f_hands_one_conversation_the_handle_of_another_with_the_same_opening(
    g4f: G4F, upstream: Upstream, tmp_path: Path
) -> None:
    """g4f's handle cache, and the per-conversation marker that prevents it.

    g4f 8.8.6 caches the handle a reply returned under a hash of the model and
    every message except the last user message and the last assistant reply,
    and a hit replaces the handle the client sent. Two conversations with the
    same system prompt (and, later, the same first turns) therefore share
    handles. Making the system prompt unique per conversation keeps them apart.
    """
    up = upstream()
    shared = f"Shared system prompt {token()}"
    turns = ["same opening", "same second turn", "third"]

    def scenario(name: str, system: str) -> Path:
        return write_scenario(
            tmp_path / name,
            name,
            model="local-echo",
            provider=up.base_url,
            history="client",
            system=system,
            params={"extra_body": {"conversation_id": name + "-" + token()}},
            turns=turns,
        )

    first = run(g4f, tmp_path, [scenario("aaaaaaaa", shared)])
    second = run(g4f, tmp_path, [scenario("bbbbbbbb", shared)])
    marked = run(g4f, tmp_path, [scenario("cccccccc", f"{shared} [conversation cccccccc]")])

    assert first.returncode == second.returncode == marked.returncode == 0
    a = [r["reply"] for r in first.turns("aaaaaaaa")]
    b = [r["reply"] for r in second.turns("bbbbbbbb")]
    c = [r["reply"] for r in marked.turns("cccccccc")]
    assert [", handle" in x for x in a] == [False, True, True]
    assert "handle ok" in a[1] and "handle ok" in a[2]
    # Turn 1: the runner sent no handle, yet the upstream got conversation A's.
    # Turn 2: the runner sent B's own handle, and g4f replaced it with A's.
    assert ", handle stale" in b[0] and ", handle stale" in b[1]
    assert ", handle ok" in b[2]  # the dialogues differ from here on
    by_conversation: dict[str, list[dict[str, Any]]] = {}
    for rec in up.requests:
        if rec.method == "POST":
            by_conversation.setdefault(str(rec.conversation_id)[:8], []).append(rec.body)
    leaked = [body.get("conversation") for body in by_conversation["bbbbbbbb"][:2]]
    assert leaked == [
        {"id": "local-aaaaaaaa", "turns_seen": 1},
        {"id": "local-aaaaaaaa", "turns_seen": 2},
    ]
    # With a per-conversation marker in the system prompt nothing leaks.
    assert ", handle" not in c[0]
    assert ", handle ok" in c[1] and ", handle ok" in c[2]
