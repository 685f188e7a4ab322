"""The runner through LiteLLM's proxy: runner -> ``litellm`` proxy -> built-in endpoint.

The proxy serves one model per fault profile (see ``LITELLM_PROFILES`` in
``conftest.py``); each model's upstream is a built-in endpoint with that fault
plan, so the failures LiteLLM reports are real. LiteLLM's own retries are
turned off so that every attempt is the runner's.

LiteLLM passes the request's ``conversation_id`` on to the upstream (unknown
body fields reach an OpenAI-compatible upstream), so the upstream tells the
runner's conversations apart; it drops gpt4free's ``conversation`` field from
the reply, so ``history: server`` has no handle to carry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.interop.conftest import LITELLM_MOCK_REPLY, LiteLLM
from tests.interop.harness import RunResult, pinned_version, run_runner, write_scenario

pytestmark = pytest.mark.interop

KEY_VAR = "INTEROP_LITELLM_KEY"


def run(
    litellm: LiteLLM, tmp_path: Path, paths: list[Path], *args: str, key: str | None = None
) -> RunResult:
    return run_runner(
        paths,
        "--endpoint",
        litellm.endpoint,
        "--api-key-env",
        KEY_VAR,
        *args,
        out=tmp_path / "out",
        env={KEY_VAR: litellm.api_key if key is None else key},
    )


def bodies_for(litellm: LiteLLM, model: str, conversation_id: str) -> list[dict[str, Any]]:
    """What the upstream behind ``model`` received for one of the runner's conversations."""
    return [
        r.body
        for r in litellm.upstreams[model].requests
        if r.method == "POST" and r.conversation_id == conversation_id
    ]


def test_the_tested_version_is_the_pinned_one(litellm: LiteLLM) -> None:
    assert litellm.version == pinned_version("litellm", "litellm")


def test_client_history_resends_the_dialogue(litellm: LiteLLM, tmp_path: Path) -> None:
    turns = ["first question", "second question", "third question"]
    path = write_scenario(
        tmp_path, "client", model="echo", history="client", system="You are terse.", turns=turns
    )

    result = run(litellm, tmp_path, [path], "--include-usage")

    assert result.returncode == 0, result.explain()
    records = result.turns("client")
    cid = records[0]["conversation_id"]
    for n, (rec, text) in enumerate(zip(records, turns, strict=True), 1):
        assert rec["status"] == "ok"
        # LiteLLM passed the runner's conversation_id on: the upstream knows the turn.
        assert rec["reply"].startswith(f"turn {n} of conversation {cid[:8]}: ")
        assert f"received {2 * n} messages" in rec["reply"]
        assert rec["reply"].endswith(f"you said: {text}")
        assert rec["finish_reason"] == "stop"
        assert rec["usage"]["total_tokens"] > 0  # asked for with --include-usage
        assert rec["server"]["model"] == "echo"
        assert rec["server"]["conversation"] is None  # LiteLLM drops gpt4free's field
    bodies = bodies_for(litellm, "echo", cid)
    assert [len(b["messages"]) for b in bodies] == [2, 4, 6]
    assert bodies[2]["messages"][3] == {"role": "user", "content": turns[1]}


def test_usage_only_when_asked_for(litellm: LiteLLM, tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "nousage", model="echo", turns=["hello"])

    result = run(litellm, tmp_path, [path])

    (rec,) = result.turns("nousage")
    assert rec["status"] == "ok", result.explain()
    assert rec["usage"] is None  # unlike gpt4free, which always reports it


def test_server_history_loses_the_context(litellm: LiteLLM, tmp_path: Path) -> None:
    path = write_scenario(
        tmp_path,
        "server",
        model="echo",
        history="server",
        system="Remember everything.",
        turns=["my name is Heiner", "what is my name?"],
    )

    result = run(litellm, tmp_path, [path])

    assert result.returncode == 0, result.explain()
    first, second = result.turns("server")
    # No handle comes back, so turn 2 reaches the upstream alone, without one:
    # with LiteLLM (as with any plain OpenAI server) use history: client.
    assert "received 2 messages;" in first["reply"]
    assert "received 1 messages; you said: what is my name?" in second["reply"]
    bodies = bodies_for(litellm, "echo", first["conversation_id"])
    assert [("conversation" in b) for b in bodies] == [False, False]


def test_mock_model_answers_without_an_upstream(litellm: LiteLLM, tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "mock", model="mock", turns=["hi", "again"])

    result = run(litellm, tmp_path, [path])

    assert result.returncode == 0, result.explain()
    assert [r["reply"] for r in result.turns("mock")] == [LITELLM_MOCK_REPLY] * 2


# model (fault profile) -> (error type, HTTP status, retryable, words in the message).
# LiteLLM keeps the upstream's status (400, 401, 429, 500) and wraps the message;
# it drops Retry-After and reports failures after the first chunk in-band.
ERROR_CASES = {
    "fail-500": ("http_status", 500, True, "InternalServerError"),
    "fail-429": ("http_status", 429, True, "RateLimitError"),
    "fail-401": ("http_status", 401, False, "AuthenticationError"),
    "fail-400": ("http_status", 400, False, "BadRequestError"),
    "fail-midstream": ("in_band_error", 200, True, "in-band error after 2 chunks"),
    "malformed": ("in_band_error", 200, True, "APIConnectionError"),
}


@pytest.mark.parametrize("model", sorted(ERROR_CASES))
def test_upstream_failures_reach_the_transcript(
    litellm: LiteLLM, tmp_path: Path, model: str
) -> None:
    err_type, status, retryable, words = ERROR_CASES[model]
    path = write_scenario(tmp_path, model, model=model, turns=["hello"])

    result = run(litellm, tmp_path, [path], "--max-attempts", "2")

    assert result.returncode == 3, result.explain()
    (rec,) = result.turns(model)
    error = rec["error"]
    assert (error["type"], error["http_status"], error["retryable"]) == (
        err_type,
        status,
        retryable,
    )
    assert error["in_band"] is (err_type == "in_band_error")
    assert words in error["message"]
    attempts = rec["attempts"]
    assert len(attempts) == (2 if retryable else 1)
    # LiteLLM's retries are off: one upstream request per runner attempt.
    assert len(bodies_for(litellm, model, rec["conversation_id"])) == len(attempts)
    if model == "fail-429":
        # The upstream asked for 5 s, but LiteLLM sends it as llm_provider-retry-after,
        # not Retry-After: the runner fell back to its own (shorter) backoff.
        assert attempts[0]["wait_s"] < 5.0
    if model == "fail-midstream":
        assert attempts[0]["partial_reply"].startswith("turn 1 ")


def test_a_truncated_upstream_stream_looks_complete_through_litellm(
    litellm: LiteLLM, tmp_path: Path
) -> None:
    path = write_scenario(tmp_path, "truncated", model="no-done", turns=["cut short"])

    result = run(litellm, tmp_path, [path])

    # The upstream sent no finish_reason and no [DONE]; LiteLLM adds both.
    (rec,) = result.turns("truncated")
    assert rec["status"] == "ok", result.explain()
    assert rec["finish_reason"] == "stop"
    assert rec["reply"].endswith("you said: cut short")


def test_a_failed_first_attempt_is_retried_as_a_whole_turn(
    litellm: LiteLLM, tmp_path: Path
) -> None:
    path = write_scenario(tmp_path, "retry", model="retry-turn-2", turns=["one", "two", "three"])

    result = run(litellm, tmp_path, [path], "--max-attempts", "3")

    assert result.returncode == 0, result.explain()
    records = result.turns("retry")
    assert [len(r["attempts"]) for r in records] == [1, 2, 1]
    first, second = records[1]["attempts"]
    assert (first["outcome"], first["http_status"]) == ("error", 503)  # kept by LiteLLM
    assert (second["outcome"], second["http_status"]) == ("ok", 200)
    assert records[1]["reply"].endswith("you said: two")


def test_a_wrong_key_is_refused_and_not_retried(litellm: LiteLLM, tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "wrongkey", model="echo", turns=["hello"])

    result = run(litellm, tmp_path, [path], "--max-attempts", "3", key="sk-not-the-key")

    assert result.returncode == 3, result.explain()
    (rec,) = result.turns("wrongkey")
    # Without a database LiteLLM 1.106 answers a bad key with 400 "No connected db."
    assert rec["error"]["http_status"] == 400
    assert "No connected db" in rec["error"]["message"]
    assert rec["error"]["retryable"] is False
    assert len(rec["attempts"]) == 1


def test_eight_conversations_at_once(litellm: LiteLLM, tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(8)]
    paths = [
        write_scenario(
            tmp_path,
            name,
            model="echo",
            history="client",
            system="Same system prompt for all.",
            turns=[f"{name} hello", f"{name} more", f"{name} bye"],
        )
        for name in names
    ]

    result = run(litellm, tmp_path, paths, "--concurrency", "8")

    assert result.returncode == 0, result.explain()
    assert result.summary["ok"] == 24
    for name in names:
        records = result.turns(name)
        cid = records[0]["conversation_id"]
        for n, (rec, said) in enumerate(zip(records, ["hello", "more", "bye"], strict=True), 1):
            assert rec["reply"].startswith(f"turn {n} of conversation {cid[:8]}:"), rec["reply"]
            assert rec["reply"].endswith(f"you said: {name} {said}")
        assert len(bodies_for(litellm, "echo", cid)) == 3
