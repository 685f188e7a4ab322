"""Pure accumulation of replies: lists of events in, a Reply or a typed error out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.accumulate import Accumulator, Reply, error_message
from runner.errors import InBandError, IncompleteStreamError, ProtocolError
from runner.sse import ServerSentEvent, SSEDecoder

G4F = Path(__file__).parent / "data" / "g4f"


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> str:
    delta: dict[str, Any] = {"role": "assistant"}
    if content is not None:
        delta["content"] = content
    delta.update(extra.pop("delta", {}))
    obj = {
        "id": "c1",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    obj.update(extra)
    return json.dumps(obj)


def run(*datas: str) -> Reply:
    acc = Accumulator()
    for d in datas:
        acc.add_event(ServerSentEvent(d))
    return acc.finish()


def replay(name: str) -> Reply:
    decoder = SSEDecoder()
    acc = Accumulator()
    for event in decoder.feed((G4F / name).read_bytes()) + decoder.flush():
        acc.add_event(event)
    return acc.finish()


def test_text_is_assembled_and_done_ends_the_stream() -> None:
    reply = run(chunk("Hel"), chunk("lo"), chunk("", "stop"), "[DONE]", chunk("ignored"))
    assert reply.text == "Hello"
    assert reply.finish_reason == "stop"
    assert reply.done and reply.chunks == 3


def test_finish_reason_without_done_is_complete() -> None:
    assert run(chunk("a"), chunk(None, "length")).finish_reason == "length"


def test_neither_done_nor_finish_reason_is_incomplete() -> None:
    with pytest.raises(IncompleteStreamError, match="1 chunk"):
        run(chunk("a"))


def test_role_only_delta_and_empty_choices_are_fine() -> None:
    reply = run(
        json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
        json.dumps({"choices": [], "usage": {"total_tokens": 3}}),
        chunk("x", "stop"),
    )
    assert reply.text == "x"
    assert reply.usage == {"total_tokens": 3}


def test_add_event_reports_text_bearing_events() -> None:
    acc = Accumulator()
    assert acc.add_event(ServerSentEvent(chunk(None))) is False
    assert acc.add_event(ServerSentEvent(chunk("t"))) is True
    assert acc.text_so_far == "t"


def test_in_band_error_in_a_200_stream() -> None:
    acc = Accumulator()
    acc.add_event(ServerSentEvent(chunk("partial")))
    with pytest.raises(InBandError, match="Request execution failed") as info:
        acc.add_event(ServerSentEvent('{"error": {"message": "Request execution failed"}}'))
    assert info.value.in_band and info.value.retryable
    assert acc.text_so_far == "partial"


def test_event_named_error_is_in_band() -> None:
    with pytest.raises(InBandError, match="boom"):
        Accumulator().add_event(ServerSentEvent('{"message": "boom"}', event="error"))


def test_malformed_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="not JSON"):
        Accumulator().add_event(ServerSentEvent('{"choices": ['))
    with pytest.raises(ProtocolError, match="not a JSON object"):
        Accumulator().add_event(ServerSentEvent("[1, 2]"))


def test_reasoning_kept_apart_from_text() -> None:
    reply = run(
        chunk(delta={"reasoning_content": "think "}),
        chunk(delta={"reasoning": "more"}),
        chunk("answer", "stop"),
    )
    assert reply.text == "answer"
    assert reply.reasoning == "think more"


def test_tool_call_deltas_are_merged() -> None:
    calls = [
        {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "get", "arguments": '{"ci'},
        },
        {"index": 0, "function": {"arguments": 'ty": "Oslo"}'}},
    ]
    reply = run(
        chunk(delta={"tool_calls": calls[:1]}),
        chunk(delta={"tool_calls": calls[1:]}),
        chunk(None, "tool_calls"),
    )
    assert reply.tool_calls == [
        {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "get", "arguments": '{"city": "Oslo"}'},
        }
    ]


def test_multiple_choices_keep_choice_zero() -> None:
    reply = run(
        json.dumps({"choices": [{"index": 1, "delta": {"content": "B"}}]}),
        json.dumps({"choices": [{"index": 0, "delta": {"content": "A"}, "finish_reason": "stop"}]}),
    )
    assert (reply.text, reply.choices) == ("A", 2)


def test_server_metadata_and_conversation_handle() -> None:
    reply = run(
        chunk("a", provider="Copilot"),
        chunk(None, "stop", conversation={"h": 1}, usage={"total_tokens": 2}),
    )
    assert (reply.id, reply.model, reply.provider) == ("c1", "m", "Copilot")
    assert reply.conversation == {"h": 1}


def test_non_streamed_completion() -> None:
    acc = Accumulator()
    acc.add_completion(json.loads((G4F / "08_nonstream_success.json").read_text()))
    reply = acc.finish()
    assert reply.text == "echo: nonstream"
    assert reply.conversation == {"upstream_conv": "conv-17", "turns_seen": 1}


def test_g4f_success_capture() -> None:
    reply = replay("01_success_url_provider.sse")
    assert reply.text == "echo: hello there [turns=1]"
    assert reply.provider == "127001:8080"
    assert reply.usage is not None and reply.usage["total_tokens"] == 18
    assert reply.conversation == {"upstream_conv": "conv-1", "turns_seen": 1}


def test_g4f_reasoning_capture() -> None:
    reply = replay("09_reasoning_stream.sse")
    assert reply.text == "echo: REASON please [turns=1]"
    assert reply.reasoning == "thinking step 1. thinking step 2.\n"


def test_g4f_midstream_error_capture() -> None:
    with pytest.raises(InBandError, match="Request execution failed"):
        replay("03_upstream_error_midstream.sse")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("02_upstream_500_before_stream.json", "Request execution failed"),
        ("04_unknown_provider.json", "Provider not found: NoSuchProvider123"),
        ("05b_missing_messages.json", "body.messages: Field required"),
        ("05c_wrong_types.json", "body.stream: Input should be a valid boolean"),
    ],
)
def test_error_message_of_every_g4f_error_body(name: str, message: str) -> None:
    assert message in error_message(json.loads((G4F / name).read_text()))


def test_error_message_fallbacks() -> None:
    assert error_message({"error": "plain"}) == "plain"
    assert error_message({"detail": "Not Found"}) == "Not Found"
    assert error_message({"message": "m"}) == "m"
    assert error_message([1]) == "[1]"


def test_add_events_takes_a_batch_in_order() -> None:
    acc = Accumulator()
    events = [ServerSentEvent(d) for d in (chunk(None), chunk("a"), chunk("b", "stop"))]
    assert acc.add_events(events) is True
    assert acc.add_events([ServerSentEvent(chunk(None))]) is False
    assert acc.add_events([ServerSentEvent("[DONE]"), ServerSentEvent(chunk("late"))]) is False
    reply = acc.finish()
    assert reply.text == "ab" and reply.chunks == 4 and reply.done


def test_an_error_in_a_batch_keeps_the_events_before_it() -> None:
    acc = Accumulator()
    with pytest.raises(ProtocolError):
        acc.add_events([ServerSentEvent(chunk("kept")), ServerSentEvent("{oops")])
    assert acc.text_so_far == "kept"


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.text(max_size=5), _json_values, max_size=4),
    st.sampled_from(["", " ", "\n\t ", " x", "}", ",{}", "\x00"]),
)
def test_chunk_data_is_read_exactly_as_json_loads_reads_it(obj: dict[str, Any], tail: str) -> None:
    from runner.accumulate import _parse

    data = json.dumps(obj, separators=(",", ":")) + tail
    try:
        expected = json.loads(data)
    except ValueError:
        with pytest.raises(ProtocolError, match="not JSON"):
            _parse(data)
        with pytest.raises(ProtocolError, match="not JSON"):
            Accumulator().add_event(ServerSentEvent(data))
        return
    assert _parse(data) == expected
