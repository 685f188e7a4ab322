"""The pure SSE decoder: hand cases, real captures, and chunking properties."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from runner.sse import ServerSentEvent, SSEDecoder

DATA = Path(__file__).parent / "data"


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.flush())
    return events


def datas(*chunks: bytes) -> list[str]:
    return [e.data for e in decode(*chunks)]


def test_single_event() -> None:
    assert decode(b'data: {"a":1}\n\n') == [ServerSentEvent('{"a":1}')]


def test_each_line_ending() -> None:
    for nl in (b"\n", b"\r\n", b"\r"):
        assert datas(b"data: a" + nl + nl + b"data: b" + nl + nl) == ["a", "b"], nl


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    assert datas(b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n") == ["a", "b"]


def test_cr_alone_at_chunk_end_dispatches_without_waiting() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\r") == [ServerSentEvent("a")]
    # The "\n" that follows completes the earlier "\r", it is not an empty line.
    assert decoder.feed(b"\ndata: b\n\n") == [ServerSentEvent("b")]


def test_multibyte_utf8_split_across_chunks() -> None:
    raw = 'data: {"c":"héllo ✓ 😀"}\n\n'.encode()
    for cut in range(len(raw) + 1):
        assert datas(raw[:cut], raw[cut:]) == ['{"c":"héllo ✓ 😀"}'], cut


def test_comments_and_unknown_fields_are_ignored() -> None:
    assert datas(b": ping\n\nfoo: bar\ndata: x\n: mid\n\n") == ["x"]


def test_event_id_retry_fields() -> None:
    events = decode(b"event: error\nid: 7\nretry: 1500\ndata: x\n\ndata: y\n\n")
    assert events[0] == ServerSentEvent("x", "error", "7", 1500)
    # id persists, event type and retry do not.
    assert events[1] == ServerSentEvent("y", "message", "7", None)


def test_field_without_space_and_without_colon() -> None:
    assert datas(b"data:x\n\ndata\n\n") == ["x", ""]


def test_multiline_data_is_joined_with_newline() -> None:
    assert datas(b"data: a\ndata: b\ndata:\n\n") == ["a\nb\n"]


def test_missing_final_blank_line_still_dispatches() -> None:
    assert datas(b"data: a\n\ndata: [DONE]") == ["a", "[DONE]"]
    assert datas(b"data: a\n\ndata: [DONE]\n") == ["a", "[DONE]"]


def test_block_without_data_dispatches_nothing() -> None:
    assert decode(b"event: x\n\nid: 1\n\n") == []


def test_invalid_utf8_is_replaced_and_counted() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"data: \xff\xfe ok\n\n")
    assert events == [ServerSentEvent("\ufffd\ufffd ok")]
    assert decoder.decode_errors == 1


def test_pending_bytes_reports_an_unterminated_line() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: " + b"x" * 1000)
    assert decoder.pending_bytes == 1006


def test_real_gpt4free_captures() -> None:
    for name, texts in {
        "01_success_url_provider.sse": 4,
        "03_upstream_error_midstream.sse": 3,
        "09_reasoning_stream.sse": 7,
    }.items():
        body = (DATA / "g4f" / name).read_bytes()
        events = decode(body)
        assert len(events) == texts + (1 if body.rstrip().endswith(b"[DONE]") else 0), name
        one_by_one = decode(*(body[i : i + 1] for i in range(len(body))))
        assert one_by_one == events, name


def _stream() -> st.SearchStrategy[bytes]:
    line = st.one_of(
        st.sampled_from([b"", b": ping", b"event: e", b"id: 3", b"retry: 10", b"data"]),
        st.binary(max_size=20).map(lambda b: b"data: " + b.replace(b"\r", b"").replace(b"\n", b"")),
        st.text(max_size=10).map(lambda t: ("data: " + t).encode()),
    )
    end = st.sampled_from([b"\n", b"\r\n", b"\r"])
    return st.lists(st.tuples(line, end), max_size=30).map(
        lambda pairs: b"".join(a + b for a, b in pairs)
    )


@settings(max_examples=400, deadline=None)
@given(_stream(), st.data())
def test_any_chunking_gives_the_same_events(body: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=12)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert decode(*chunks) == decode(body)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.data())
def test_never_raises_on_arbitrary_bytes(body: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=8)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert decode(*chunks) == decode(body)


def reference(body: bytes) -> tuple[list[ServerSentEvent], int]:
    """The event-stream algorithm written plainly over the whole stream: what the
    incremental decoder, with its fast paths, must agree with."""
    lines = re.split(rb"\r\n|\r|\n", body)
    last = lines.pop()  # an unterminated last line: the stream's end completes it
    if last:
        lines.append(last)
    lines.append(b"")  # the end of the stream dispatches a last event
    events: list[ServerSentEvent] = []
    data: list[str] = []
    event, last_id, retry, bad = "", "", None, 0
    for line in lines:
        if not line:
            if data:
                events.append(ServerSentEvent("\n".join(data), event or "message", last_id, retry))
                data, retry = [], None
            event = ""
            continue
        if line.startswith(b":"):
            continue
        name, colon, raw = line.partition(b":")
        if colon and raw.startswith(b" "):
            raw = raw[1:]
        try:
            value = raw.decode()
        except UnicodeDecodeError:
            value, bad = raw.decode(errors="replace"), bad + 1
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value
        elif name == b"id" and "\0" not in value:
            last_id = value
        elif name == b"retry" and value.isascii() and value.isdigit():
            retry = int(value)
    return events, bad


def _messy_stream() -> st.SearchStrategy[bytes]:
    line = st.one_of(
        st.sampled_from(
            [b"", b": ping", b"event: e", b"id: 3", b"retry: 10", b"data", b"data:x", b"id: a\0b"]
        ),
        st.binary(max_size=20).map(lambda b: b"data: " + b.replace(b"\r", b"").replace(b"\n", b"")),
        st.text(max_size=10).map(lambda t: ("data: " + t).encode()),
        st.sampled_from([b"data: \xff", b"event: \xc3", b'data: {"a": "\xe2\x9c\x93"}']),
    )
    end = st.sampled_from([b"\n", b"\n", b"\n", b"\r\n", b"\r"])
    return st.lists(st.tuples(line, end), max_size=30).map(
        lambda pairs: b"".join(a + b for a, b in pairs)
    )


@settings(max_examples=500, deadline=None)
@given(_messy_stream(), st.data())
def test_decoder_agrees_with_the_plain_algorithm(body: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=12)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.flush())
    assert (events, decoder.decode_errors) == reference(body)


def test_fields_of_an_event_split_across_feeds_reach_the_fast_path_block() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: delta\nid: 9\n") == []
    # This block looks like the one-line fast path, but the event's fields came earlier.
    assert decoder.feed(b"data: x\n\ndata: y\n\n") == [
        ServerSentEvent("x", "delta", "9"),
        ServerSentEvent("y", "message", "9"),
    ]


def test_many_events_in_one_feed_with_one_bad_line() -> None:
    good = b'data: {"a": 1}\n\n' * 50
    events = SSEDecoder().feed(good + b"data: \xff\n\n" + good)
    assert len(events) == 101 and events[50].data == "\ufffd"


def test_an_error_field_becomes_an_error_event() -> None:
    # llama.cpp reports failures as `error: {json}`, then sends [DONE].
    events = decode(b'data: {"a":1}\n\nerror: {"message":"too big"}\n\ndata: [DONE]\n\n')
    assert events[1] == ServerSentEvent('{"message":"too big"}', "error")
    assert events[2].data == "[DONE]"
