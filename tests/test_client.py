"""The HTTP client over real sockets: framings, errors, timeouts, keep-alive."""

from __future__ import annotations

import email.utils
import json
import socket
import time

import pytest

from runner.client import ChatClient, Timeouts, normalize_endpoint, parse_retry_after
from runner.errors import (
    ConnectError,
    FirstByteTimeout,
    HTTPStatusError,
    IdleTimeout,
    InBandError,
    IncompleteStreamError,
    ProtocolError,
    ReadError,
    TurnTimeout,
    UsageError,
)
from runner.server import LocalServer
from tests.rawserver import (
    Request,
    raw_server,
    send_chunked,
    send_close_delimited,
    send_length,
    sse_events,
)

BODY = {"model": "", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def test_against_the_built_in_endpoint() -> None:
    with LocalServer() as server:
        client = ChatClient(server.url)
        ex = client.send({**BODY, "conversation_id": "abc"})
        assert ex.http_status == 200
        assert ex.reply.text.endswith("you said: hi")
        assert ex.reply.finish_reason == "stop"
        assert ex.reply.conversation is not None
        assert ex.ttft_ms is not None and 0 < ex.ttft_ms <= ex.duration_ms
        assert ex.request_id


@pytest.mark.parametrize("framing", ["chunked", "close", "length"])
def test_every_framing_gives_the_same_reply(framing: str) -> None:
    events = sse_events("Hel", "lo ", "wörld")

    def handler(sock: socket.socket, req: Request) -> bool:
        if framing == "chunked":
            send_chunked(sock, events)
            return True
        if framing == "close":
            send_close_delimited(sock, events)
            return False
        send_length(sock, b"".join(events))
        return True

    with raw_server(handler) as server:
        client = ChatClient(server.url)
        for _ in range(2):
            ex = client.send(BODY)
            assert ex.reply.text == "Hello wörld"
            assert ex.reply.done and ex.chunks == 4
        # Keep-alive: a body read to its end gives the connection back.
        assert server.connections == (2 if framing == "close" else 1)


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_events_are_read_as_they_arrive(framing: str) -> None:
    events = sse_events("first", " second")

    def handler(sock: socket.socket, req: Request) -> bool:
        head, tail = events[:1], events[1:]
        if framing == "chunked":
            send_chunked(sock, head, end=False)
            time.sleep(0.3)  # the server's pacing
            for part in tail:
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            sock.sendall(b"0\r\n\r\n")
            return True
        send_close_delimited(sock, head)
        time.sleep(0.3)
        sock.sendall(b"".join(tail))
        return False

    with raw_server(handler) as server:
        ex = ChatClient(server.url).send(BODY)
    assert ex.reply.text == "first second"
    assert ex.ttft_ms is not None and ex.ttft_ms < 150
    assert ex.duration_ms >= 290
    assert ex.max_gap_ms is not None and ex.max_gap_ms >= 250


def test_crlf_stream_and_comments() -> None:
    body = b": ping\r\n\r\n" + b"".join(e.replace(b"\n", b"\r\n") for e in sse_events("a", "b"))
    with raw_server(lambda s, r: send_length(s, body) or True) as server:
        assert ChatClient(server.url).send(BODY).reply.text == "ab"


def test_request_bytes_and_headers() -> None:
    with raw_server(lambda s, r: send_length(s, b"".join(sse_events("x"))) or True) as server:
        ChatClient(server.url, api_key="sk-secret").send(BODY)
        req = server.requests[0]
    assert req.json() == BODY
    assert req.headers["authorization"] == "Bearer sk-secret"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["accept-encoding"] == "identity"


def test_no_authorization_header_without_key() -> None:
    with raw_server(lambda s, r: send_length(s, b"".join(sse_events("x"))) or True) as server:
        ChatClient(server.url).send(BODY)
        assert "authorization" not in server.requests[0].headers


@pytest.mark.parametrize(
    ("status", "body", "retryable", "message"),
    [
        (
            b"404 Not Found",
            b'{"error": {"message": "Provider not found: X"}}',
            False,
            "Provider not found: X",
        ),
        (
            b"422 Unprocessable Entity",
            b'{"detail":[{"loc":["body","messages"],"message":"Field required","type":"missing"}]}',
            False,
            "body.messages: Field required",
        ),
        (
            b"500 Internal Server Error",
            b'{"error": {"message": "Request execution failed"}}',
            True,
            "Request execution failed",
        ),
        (
            b"401 Unauthorized",
            b'{"error": {"message": "MissingAuthError"}}',
            False,
            "MissingAuthError",
        ),
        (b"408 Request Timeout", b"slow", True, "slow"),
        (b"409 Conflict", b"", True, "HTTP 409"),
        (b"502 Bad Gateway", b"<html><body>bad gateway</body></html>", True, "bad gateway"),
    ],
)
def test_http_errors_keep_status_and_message(
    status: bytes, body: bytes, retryable: bool, message: str
) -> None:
    with (
        raw_server(
            lambda s, r: send_length(s, body, status=status, ctype=b"application/json") or True
        ) as server,
        pytest.raises(HTTPStatusError) as info,
    ):
        ChatClient(server.url, api_key="sk-canary").send(BODY)
    err = info.value
    assert err.http_status == int(status.split()[0])
    assert err.retryable is retryable
    assert message in str(err)
    assert "sk-canary" not in str(err)


def test_retry_after_is_read_from_the_response() -> None:
    with (
        raw_server(
            lambda s, r: (
                send_length(
                    s, b"{}", status=b"429 Too Many Requests", headers=b"Retry-After: 7\r\n"
                )
                or True
            )
        ) as server,
        pytest.raises(HTTPStatusError) as info,
    ):
        ChatClient(server.url).send(BODY)
    assert info.value.retry_after == 7.0


def test_parse_retry_after_forms() -> None:
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_in_band_error_keeps_the_partial_text() -> None:
    parts = [
        *sse_events("par", "tial", finish=None, done=False),
        b'data: {"error": {"message": "Request execution failed"}}\n\n',
    ]
    with raw_server(lambda s, r: send_chunked(s, parts) or True) as server:
        with pytest.raises(InBandError) as info:
            ChatClient(server.url).send(BODY)
    assert info.value.partial == "partial"
    assert info.value.http_status == 200


def test_stream_without_done_or_finish_reason_is_incomplete() -> None:
    parts = sse_events("a", finish=None, done=False)
    with raw_server(lambda s, r: send_chunked(s, parts) or True) as server:
        with pytest.raises(IncompleteStreamError) as info:
            ChatClient(server.url).send(BODY)
    assert info.value.partial == "a" and info.value.retryable


def test_finish_reason_without_done_is_complete() -> None:
    parts = sse_events("a", done=False)
    with raw_server(lambda s, r: send_chunked(s, parts) or True) as server:
        assert ChatClient(server.url).send(BODY).reply.finish_reason == "stop"


def test_connection_dropped_mid_stream() -> None:
    def handler(sock: socket.socket, req: Request) -> bool:
        send_chunked(sock, sse_events("lost", finish=None, done=False), end=False)
        return False  # closes without the terminating chunk

    with raw_server(handler) as server, pytest.raises(ReadError) as info:
        ChatClient(server.url).send(BODY)
    assert info.value.partial == "lost" and info.value.retryable


def test_non_streamed_json_reply() -> None:
    body = json.dumps(
        {"choices": [{"index": 0, "message": {"content": "whole"}, "finish_reason": "stop"}]}
    ).encode()
    with raw_server(lambda s, r: send_length(s, body, ctype=b"application/json") or True) as srv:
        assert ChatClient(srv.url).send(BODY).reply.text == "whole"


def test_html_with_200_is_a_protocol_error() -> None:
    body = b"<html><body>Just a moment...</body></html>"
    with raw_server(lambda s, r: send_length(s, body, ctype=b"text/html") or True) as server:
        with pytest.raises(ProtocolError, match="text/html"):
            ChatClient(server.url).send(BODY)


def test_empty_200_body_is_incomplete() -> None:
    with raw_server(lambda s, r: send_length(s, b"") or True) as server:
        with pytest.raises(IncompleteStreamError):
            ChatClient(server.url).send(BODY)


def test_invalid_utf8_is_a_protocol_error() -> None:
    body = b'data: {"choices":[{"delta":{"content":"\xff"},"finish_reason":"stop"}]}\n\n'
    with raw_server(lambda s, r: send_length(s, body) or True) as server:
        with pytest.raises(ProtocolError, match="UTF-8"):
            ChatClient(server.url).send(BODY)


def test_connection_refused_says_so_and_suggests_local() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(ConnectError) as info:
        ChatClient(f"http://127.0.0.1:{port}/v1/chat/completions").send(BODY)
    assert "nothing is listening" in str(info.value)
    assert "--local" in str(info.value) and "runner serve" in str(info.value)


def _stall_after(parts: list[bytes], seconds: float):  # type: ignore[no-untyped-def]
    def handler(sock: socket.socket, req: Request) -> bool:
        send_chunked(sock, parts, end=False)
        time.sleep(seconds)  # the stall being tested
        return False

    return handler


def test_first_byte_timeout() -> None:
    with raw_server(_stall_after([], 2.0)) as server:
        t0 = time.perf_counter()
        with pytest.raises(FirstByteTimeout):
            ChatClient(server.url, timeouts=Timeouts(first_byte=0.3)).send(BODY)
        assert 0.24 <= time.perf_counter() - t0 <= 1.0


def test_idle_timeout_mid_stream() -> None:
    with raw_server(_stall_after(sse_events("a", finish=None, done=False), 2.0)) as server:
        t0 = time.perf_counter()
        with pytest.raises(IdleTimeout) as info:
            ChatClient(server.url, timeouts=Timeouts(idle=0.3)).send(BODY)
        assert 0.24 <= time.perf_counter() - t0 <= 1.0
    assert info.value.partial == "a"


def test_turn_timeout_fires_while_bytes_trickle() -> None:
    def handler(sock: socket.socket, req: Request) -> bool:
        send_chunked(sock, sse_events(*["t"] * 40), pause=0.05)
        return False

    with raw_server(handler) as server:
        t0 = time.perf_counter()
        with pytest.raises(TurnTimeout):
            ChatClient(server.url, timeouts=Timeouts(idle=1.0, turn=0.5)).send(BODY)
        assert 0.4 <= time.perf_counter() - t0 <= 0.9


def test_abort_cuts_a_stalled_request_short() -> None:
    import threading

    with raw_server(_stall_after(sse_events("a", finish=None, done=False), 5.0)) as server:
        client = ChatClient(server.url)
        first = threading.Event()
        errors: list[BaseException] = []

        def send() -> None:
            try:
                client.send(BODY)
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=send)
        t.start()
        deadline = time.monotonic() + 3
        while not server.requests and time.monotonic() < deadline:
            first.wait(0.01)
        while client._current is None and time.monotonic() < deadline:
            first.wait(0.01)
        client.abort()
        t.join(timeout=3)
        assert not t.is_alive()
    assert errors and isinstance(errors[0], ReadError)


def test_normalize_endpoint() -> None:
    full = "http://h:1/v1/chat/completions"
    assert normalize_endpoint(full) == full
    assert normalize_endpoint("http://h:1/v1") == full
    assert normalize_endpoint("http://h:1/v1/") == full
    assert normalize_endpoint("http://h:1") == full
    with pytest.raises(UsageError, match="not an http"):
        normalize_endpoint("localhost:1337")


def test_cookies_a_server_sets_go_back_on_later_requests() -> None:
    def handler(sock: socket.socket, req: Request) -> bool:
        extra = b"Set-Cookie: affinity=node-7; Path=/\r\n" if len(server.requests) == 1 else b""
        send_chunked(sock, sse_events("ok"), headers=extra)
        return True

    with raw_server(handler) as server:
        client = ChatClient(server.url)
        for _ in range(3):
            assert client.send(BODY).reply.text == "ok"
        cookies = [r.headers.get("cookie") for r in server.requests]
    assert cookies == [None, "affinity=node-7", "affinity=node-7"]


def test_chunk_extensions_and_trailers_over_the_wire() -> None:
    events = b"".join(sse_events("a", "b"))

    def handler(sock: socket.socket, req: Request) -> bool:
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + b"%x;part=1\r\n%s\r\n" % (len(events), events)
            + b"0\r\nX-Trailer: done\r\n\r\n"
        )
        return True

    with raw_server(handler) as server:
        client = ChatClient(server.url)
        for _ in range(2):
            assert client.send(BODY).reply.text == "ab"
        assert server.connections == 1


def test_bytes_after_the_last_chunk_retire_the_connection() -> None:
    def handler(sock: socket.socket, req: Request) -> bool:
        send_chunked(sock, sse_events("x"))
        sock.sendall(b"junk")  # not part of any response
        return True

    with raw_server(handler) as server:
        client = ChatClient(server.url)
        for _ in range(2):
            assert client.send(BODY).reply.text == "x"
        assert server.connections == 2


def test_malformed_chunk_framing_is_an_error_with_the_partial_text() -> None:
    def handler(sock: socket.socket, req: Request) -> bool:
        send_chunked(sock, sse_events("part", finish=None, done=False), end=False)
        sock.sendall(b"zz\r\n")
        return False

    with raw_server(handler) as server, pytest.raises(ProtocolError, match="chunked") as info:
        ChatClient(server.url).send(BODY)
    assert info.value.partial == "part"


def test_body_shorter_than_its_content_length() -> None:
    body = b"".join(sse_events("cut", finish=None, done=False))

    def handler(sock: socket.socket, req: Request) -> bool:
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body) + 100, body)
        )
        return False  # closes 100 bytes early

    with raw_server(handler) as server, pytest.raises(ReadError) as info:
        ChatClient(server.url).send(BODY)
    assert info.value.partial == "cut"


def test_compressed_stream_is_decoded_by_the_http_library() -> None:
    import gzip

    body = gzip.compress(b"".join(sse_events("squeezed")))

    def handler(sock: socket.socket, req: Request) -> bool:
        send_chunked(sock, [body], headers=b"Content-Encoding: gzip\r\n")
        return True

    with raw_server(handler) as server:
        assert ChatClient(server.url).send(BODY).reply.text == "squeezed"


def test_a_closed_client_can_send_again() -> None:
    with raw_server(lambda s, r: send_chunked(s, sse_events("x")) or True) as server:
        client = ChatClient(server.url)
        assert client.send(BODY).reply.text == "x"
        client.close()
        assert client.send(BODY).reply.text == "x"
        assert server.connections == 2
