"""The OpenAI protocol family: recorded stream bodies through the decoder and the accumulator.

Every ``.sse`` file under ``tests/data/streams/`` is a byte-exact stream body of a
real server (OpenAI, Ollama's /v1, vLLM, llama.cpp's server, LiteLLM, gpt4free,
OpenRouter, sse-starlette based servers); ``index.yaml`` says where each comes
from and what it must decode to. Each body is fed whole, one byte at a time and
in seeded random pieces, so that chunk boundaries fall inside CRLF pairs,
multi-byte characters and JSON tokens.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.accumulate import Accumulator, Reply
from runner.errors import StreamError
from runner.sse import ServerSentEvent, SSEDecoder

STREAMS = Path(__file__).parent / "data" / "streams"
INDEX: list[dict[str, Any]] = yaml.safe_load((STREAMS / "index.yaml").read_text("utf-8"))
ERROR_TYPES = {"in_band_error", "incomplete_stream", "protocol_error"}


def whole(body: bytes) -> Iterator[bytes]:
    yield body


def bytewise(body: bytes) -> Iterator[bytes]:
    for i in range(len(body)):
        yield body[i : i + 1]


def random_pieces(seed: int) -> Callable[[bytes], Iterator[bytes]]:
    def split(body: bytes) -> Iterator[bytes]:
        rng = random.Random(seed)
        start = 0
        while start < len(body):
            end = start + rng.randint(1, 64)
            yield body[start:end]
            start = end

    return split


SPLITS: dict[str, Callable[[bytes], Iterator[bytes]]] = {
    "whole": whole,
    "bytewise": bytewise,
    **{f"random{seed}": random_pieces(seed) for seed in (1, 2, 3)},
}


def decode(body: bytes, split: Callable[[bytes], Iterator[bytes]]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for piece in split(body):
        events.extend(decoder.feed(piece))
    events.extend(decoder.flush())
    assert decoder.decode_errors == 0
    return events


def accumulate(events: list[ServerSentEvent]) -> tuple[Accumulator, Reply | StreamError]:
    acc = Accumulator()
    try:
        for event in events:
            acc.add_event(event)
        return acc, acc.finish()
    except StreamError as exc:
        return acc, exc


def case_params() -> list[Any]:
    params = []
    for case in INDEX:
        marks = []
        if case.get("gap"):
            marks.append(pytest.mark.xfail(reason=case["gap"], strict=True))
        for name in SPLITS:
            params.append(pytest.param(case, name, id=f"{case['file']}-{name}", marks=marks))
    return params


def test_the_index_lists_every_file_and_each_file_once() -> None:
    files = [case["file"] for case in INDEX]
    assert len(files) == len(set(files))
    assert sorted(files) == sorted(p.name for p in STREAMS.glob("*.sse"))
    for case in INDEX:
        assert case["kind"] in {"recorded", "constructed"}, case["file"]
        assert case["source"] and case["server"] and case["version"], case["file"]


def test_the_family_covers_what_it_claims() -> None:
    """The corpus keeps the variants it exists for (a guard against pruning it)."""
    bodies = {case["file"]: (STREAMS / case["file"]).read_bytes() for case in INDEX}
    everything = b"".join(bodies.values())
    assert any(b"\r\n" in body for body in bodies.values())  # CRLF line ends
    assert b'"choices":[]' in everything  # usage-only final chunks
    assert b'"reasoning_content"' in everything and b'"reasoning":"' in everything
    assert b": OPENROUTER PROCESSING" in everything and b": ping" in everything  # comments
    assert b'"timings"' in everything  # llama.cpp's extra fields
    assert any(case["expect"].get("choices", 1) > 1 for case in INDEX)  # n > 1
    assert any(len(case["expect"].get("tool_calls") or []) > 1 for case in INDEX)
    servers = " ".join(case["server"] for case in INDEX)
    for name in ("OpenAI", "Ollama", "vLLM", "llama.cpp", "LiteLLM", "gpt4free"):
        assert name in servers


@pytest.mark.parametrize(("case", "split"), case_params())
def test_stream_decodes_to_the_recorded_reply(case: dict[str, Any], split: str) -> None:
    body = (STREAMS / case["file"]).read_bytes()
    expect = case["expect"]

    events = decode(body, SPLITS[split])
    if split != "whole":
        assert events == decode(body, whole), "chunk boundaries changed the events"
    acc, outcome = accumulate(events)

    assert len(events) == expect["events"]
    if "error" in expect:
        assert expect["error"] in ERROR_TYPES
        assert isinstance(outcome, StreamError), f"expected {expect['error']}, got a reply"
        assert outcome.type == expect["error"]
        assert expect["message"] in outcome.message
        assert acc.text_so_far == expect["partial_text"]
        return
    assert isinstance(outcome, Reply), f"unexpected {outcome!r}"
    reply = outcome
    assert reply.text == expect["text"]
    assert reply.reasoning == expect["reasoning"]
    assert reply.finish_reason == expect["finish_reason"]
    if expect["usage"] is None:
        assert reply.usage is None
    else:
        assert reply.usage is not None
        assert {k: reply.usage.get(k) for k in expect["usage"]} == expect["usage"]
    assert reply.tool_calls == expect["tool_calls"]
    assert reply.choices == expect["choices"]
    assert reply.done is expect["done"]
