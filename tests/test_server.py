"""The built-in local endpoint, over real sockets on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from runner.server import MODEL, LocalServer, RecordedRequest

DEADLINE = 5.0  # seconds; bounds every socket read in this file


@dataclass
class Raw:
    """One HTTP/1.1 response read byte by byte off a socket."""

    status: int
    headers: dict[str, str]
    chunks: list[bytes] = field(default_factory=list)  # chunk payloads, or [body]
    arrivals: list[float] = field(default_factory=list)  # monotonic time of each chunk
    complete: bool = False  # saw the chunked terminator / the whole Content-Length
    sent_at: float = 0.0
    first_byte_at: float = 0.0

    @property
    def events(self) -> list[bytes]:
        return b"".join(self.chunks).split(b"\n\n")[:-1]

    def payloads(self) -> list[Any]:
        """The JSON of every ``data:`` event, with the literal [DONE] kept as a string."""
        out: list[Any] = []
        for event in self.events:
            assert event.startswith(b"data: "), event[:80]
            data = event[len(b"data: ") :]
            out.append("[DONE]" if data == b"[DONE]" else json.loads(data))
        return out


def send(
    sock: socket.socket,
    body: Any,
    *,
    path: str = "/v1/chat/completions",
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> float:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
    return time.monotonic()


def read_response(reader: Any, sent_at: float) -> Raw:
    status_line = reader.readline(65536)
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    raw = Raw(
        status=int(status_line.split()[1]),
        headers={},
        sent_at=sent_at,
        first_byte_at=time.monotonic(),
    )
    while (line := reader.readline(65536)) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        raw.headers[name.strip().lower()] = value.strip()
    if raw.headers.get("transfer-encoding") == "chunked":
        for _ in range(100_000):  # bounded; the socket timeout bounds the time
            size_line = reader.readline(65536)
            if not size_line:
                return raw  # EOF without the terminator
            size = int(size_line, 16)
            if size == 0:
                assert reader.readline(65536) == b"\r\n"
                raw.complete = True
                return raw
            raw.chunks.append(reader.read(size))
            raw.arrivals.append(time.monotonic())
            assert reader.read(2) == b"\r\n"
        raise AssertionError("too many chunks")
    length = int(raw.headers.get("content-length", "0"))
    body = reader.read(length)
    raw.chunks.append(body)
    raw.arrivals.append(time.monotonic())
    raw.complete = len(body) == length
    return raw


def exchange(port: int, body: Any, **kwargs: Any) -> Raw:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sent_at = send(sock, body, **kwargs)
        with sock.makefile("rb") as reader:
            return read_response(reader, sent_at)


def chat(
    text: str = "hello there",
    *,
    cid: str | None = "conv-0001-abcd",
    stream: bool = True,
    history: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "test-model",
        "stream": stream,
        "messages": [*(history or []), {"role": "user", "content": text}],
    }
    if cid is not None:
        body["conversation_id"] = cid
    body.update(extra)
    return body


def reply_text(raw: Raw) -> str:
    parts = []
    for payload in raw.payloads():
        if payload != "[DONE]" and payload.get("choices"):
            parts.append(payload["choices"][0]["delta"].get("content") or "")
    return "".join(parts)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as srv:
        yield srv


# -- streaming ------------------------------------------------------------------------


def test_stream_framing_one_event_per_chunk_and_done_last(server: LocalServer) -> None:
    raw = exchange(server.port, chat("hello  there world"))
    assert raw.status == 200
    assert raw.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert raw.headers["transfer-encoding"] == "chunked"
    assert raw.headers["x-request-id"]
    assert raw.complete
    # Every chunk carries exactly one whole event.
    assert all(
        c.startswith(b"data: ") and c.endswith(b"\n\n") and c.count(b"\n\n") == 1
        for c in raw.chunks
    )
    payloads = raw.payloads()
    assert payloads[-1] == "[DONE]"
    content, final = payloads[:-2], payloads[-2]
    expected = "turn 1 of conversation conv-000: received 1 messages; you said: hello  there world"
    tokens = [p["choices"][0]["delta"]["content"] for p in content]
    assert "".join(tokens) == expected
    assert tokens[:3] == ["turn ", "1 ", "of "]
    assert "hello  " in tokens  # spaces stay attached to the word before them
    for p in content:
        assert p["object"] == "chat.completion.chunk"
        assert p["id"] == f"chatcmpl-{raw.headers['x-request-id']}"
        assert p["model"] == "test-model" and p["provider"] == "local"
        assert isinstance(p["created"], int)
        assert p["choices"][0]["delta"]["role"] == "assistant"
        assert p["choices"][0]["finish_reason"] is None
        assert "usage" not in p
    assert final["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    usage = final["usage"]
    assert usage["completion_tokens"] == len(tokens)
    assert usage["prompt_tokens"] == 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert final["conversation"] == {"id": "local-conv-000", "turns_seen": 1}


def test_turns_are_counted_per_conversation(server: LocalServer) -> None:
    seen = []
    for cid, text in [
        ("aaaaaaaaXX", "one"),
        ("bbbbbbbbYY", "uno"),
        ("aaaaaaaaXX", "two"),
        (None, "solo"),
        ("aaaaaaaaXX", "three"),
        (None, "solo again"),
    ]:
        seen.append(reply_text(exchange(server.port, chat(text, cid=cid))))
    assert seen == [
        "turn 1 of conversation aaaaaaaa: received 1 messages; you said: one",
        "turn 1 of conversation bbbbbbbb: received 1 messages; you said: uno",
        "turn 2 of conversation aaaaaaaa: received 1 messages; you said: two",
        "turn 1 of conversation none: received 1 messages; you said: solo",
        "turn 3 of conversation aaaaaaaa: received 1 messages; you said: three",
        "turn 1 of conversation none: received 1 messages; you said: solo again",
    ]


def test_reply_reports_message_count_and_last_user_text(server: LocalServer) -> None:
    history = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
    ]
    parts = [{"type": "text", "text": "multi"}, {"type": "text", "text": "part"}]
    body = chat("ignored", history=history)
    body["messages"][-1]["content"] = parts
    text = reply_text(exchange(server.port, body))
    assert text == "turn 1 of conversation conv-000: received 4 messages; you said: multipart"


def test_handle_ok_stale_and_absent(server: LocalServer) -> None:
    first = exchange(server.port, chat("a")).payloads()[-2]["conversation"]
    assert first == {"id": "local-conv-000", "turns_seen": 1}
    ok = exchange(server.port, chat("b", conversation=first))
    assert "received 1 messages, handle ok; you said: b" in reply_text(ok)
    second = ok.payloads()[-2]["conversation"]
    assert second == {"id": "local-conv-000", "turns_seen": 2}
    stale = exchange(server.port, chat("c", conversation=first))  # not the latest any more
    assert "messages, handle stale; you said: c" in reply_text(stale)
    absent = exchange(server.port, chat("d"))
    assert "received 1 messages; you said: d" in reply_text(absent)


def test_include_usage_moves_usage_to_a_last_chunk_without_choices(server: LocalServer) -> None:
    raw = exchange(server.port, chat("hi", stream_options={"include_usage": True}))
    payloads = raw.payloads()
    assert payloads[-1] == "[DONE]"
    usage_chunk, final = payloads[-2], payloads[-3]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["total_tokens"] == (
        usage_chunk["usage"]["prompt_tokens"] + usage_chunk["usage"]["completion_tokens"]
    )
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["usage"] is None
    assert all(p["usage"] is None for p in payloads[:-2])
    assert usage_chunk["usage"]["completion_tokens"] == len(payloads) - 3


def test_non_streaming_reply(server: LocalServer) -> None:
    for stream_field in ({"stream": False}, {}):
        body = chat("plain", stream=False)
        del body["stream"]
        body.update(stream_field)
        raw = exchange(server.port, body)
        assert raw.status == 200
        assert raw.headers["content-type"] == "application/json"
        reply = json.loads(raw.chunks[0])
        assert reply["object"] == "chat.completion"
        assert reply["id"] == f"chatcmpl-{raw.headers['x-request-id']}"
        assert reply["model"] == "test-model" and reply["provider"] == "local"
        choice = reply["choices"][0]
        assert choice["message"]["role"] == "assistant"
        assert choice["message"]["content"].endswith("received 1 messages; you said: plain")
        assert choice["finish_reason"] == "stop"
        assert reply["usage"]["prompt_tokens"] == 1
        assert reply["conversation"]["id"] == "local-conv-000"
    # The same user turn sent twice is a retry of that turn (see runner.faults).
    assert [(r.turn, r.attempt) for r in server.requests] == [(1, 1), (1, 2)]


def test_model_defaults_to_local_echo(server: LocalServer) -> None:
    body = chat("x", stream=False)
    del body["model"]
    assert json.loads(exchange(server.port, body).chunks[0])["model"] == MODEL == "local-echo"


def test_models_listing(server: LocalServer) -> None:
    response = requests.get(f"{server.base_url}/models", timeout=DEADLINE)
    assert response.status_code == 200
    assert response.json() == {
        "object": "list",
        "data": [{"id": "local-echo", "object": "model", "owned_by": "convo-runner"}],
    }


# -- errors ---------------------------------------------------------------------------


def test_invalid_json_is_a_400_invalid_request_error(server: LocalServer) -> None:
    raw = exchange(server.port, b"{not json")
    assert raw.status == 400
    error = json.loads(raw.chunks[0])["error"]
    assert error["type"] == "invalid_request_error"
    assert "not valid JSON" in error["message"]
    assert exchange(server.port, b"[1, 2]").status == 400  # JSON, but not an object


@pytest.mark.parametrize(
    ("body", "expected_type"),
    [({"model": "m"}, "missing"), ({"messages": []}, "missing"), ({"messages": "hi"}, "list_type")],
)
def test_missing_messages_is_a_gpt4free_style_422(
    server: LocalServer, body: dict[str, Any], expected_type: str
) -> None:
    raw = exchange(server.port, body)
    assert raw.status == 422
    detail = json.loads(raw.chunks[0])["detail"]
    assert detail[0]["loc"] == ["body", "messages"]
    assert detail[0]["type"] == expected_type


def test_unknown_path_and_wrong_method(server: LocalServer) -> None:
    raw = exchange(server.port, chat(), path="/v1/nope")
    assert raw.status == 404
    assert "/v1/nope" in json.loads(raw.chunks[0])["error"]["message"]
    wrong = exchange(server.port, b"", path="/v1/chat/completions", method="GET")
    assert wrong.status == 405
    assert wrong.headers["allow"] == "POST"
    assert exchange(server.port, chat(), path="/chat/completions").status == 200


# -- recording, connections, timing ------------------------------------------------


def test_requests_are_recorded_in_order_with_headers_and_body(server: LocalServer) -> None:
    session = requests.Session()
    auth = {"Authorization": "Bearer k"}
    statuses = [
        session.post(server.url, json=chat("one"), headers=auth, timeout=DEADLINE).status_code,
        session.get(f"{server.base_url}/models", timeout=DEADLINE).status_code,
        session.post(server.url, data=b"{oops", timeout=DEADLINE).status_code,
    ]
    assert statuses == [200, 200, 400]
    recorded = server.requests
    assert [(r.method, r.path) for r in recorded] == [
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
    ]
    first = recorded[0]
    assert isinstance(first, RecordedRequest)
    assert first.headers["authorization"] == "Bearer k"
    assert first.headers["content-type"] == "application/json"
    assert first.body == chat("one")
    assert (first.conversation_id, first.turn, first.attempt, first.fault) == (
        "conv-0001-abcd",
        1,
        1,
        None,
    )
    assert recorded[1].body is None and recorded[2].body is None
    recorded.clear()  # a copy: the server's own list is untouched
    assert len(server.requests) == 3


def test_keep_alive_serves_two_requests_on_one_connection(server: LocalServer) -> None:
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as sock,
        sock.makefile("rb") as reader,
    ):
        first = read_response(reader, send(sock, chat("one")))
        second = read_response(reader, send(sock, chat("two", stream=False)))
    assert first.complete and second.complete
    assert reply_text(first).endswith("you said: one")
    assert json.loads(second.chunks[0])["choices"][0]["message"]["content"].startswith("turn 2 ")


def test_http_client_connection_is_reused(server: LocalServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=DEADLINE)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(chat("a")))
        conn.getresponse().read()
        sock = conn.sock
        conn.request("POST", "/v1/chat/completions", json.dumps(chat("b")))
        conn.getresponse().read()
        assert conn.sock is sock and sock is not None
    finally:
        conn.close()


def test_chunked_request_body_is_accepted(server: LocalServer) -> None:
    data = json.dumps(chat("chunky", stream=False)).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"%X\r\n%b\r\n%X\r\n%b\r\n0\r\n\r\n" % (5, data[:5], len(data) - 5, data[5:])
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as sock,
        sock.makefile("rb") as reader,
    ):
        sock.sendall(head + body)
        raw = read_response(reader, time.monotonic())
    assert raw.status == 200
    assert json.loads(raw.chunks[0])["choices"][0]["message"]["content"].endswith("chunky")


def test_token_delay_and_first_token_delay_are_honoured() -> None:
    with LocalServer(token_delay=0.02, first_token_delay=0.15) as srv:
        raw = exchange(srv.port, chat("hi"))
    events = len(raw.chunks)
    assert events >= 10
    first_gap = raw.arrivals[0] - raw.first_byte_at
    spread = raw.arrivals[-1] - raw.arrivals[0]
    assert 0.15 <= first_gap + 0.01 < 3.0  # headers first, then the wait
    assert 0.02 * (events - 1) * 0.9 <= spread < 5.0
    with LocalServer() as fast:
        quick = exchange(fast.port, chat("hi"))
    assert quick.arrivals[-1] - quick.sent_at < 0.02 * (events - 1)


def test_concurrent_conversations_count_independently(server: LocalServer) -> None:
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def talk(cid: str) -> None:
        try:
            with requests.Session() as session:
                out = []
                for i in range(15):
                    body = chat(f"m{i}", cid=cid, stream=False)
                    response = session.post(server.url, json=body, timeout=DEADLINE)
                    out.append(response.json()["choices"][0]["message"]["content"])
                results[cid] = out
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=talk, args=(f"{i}" * 8,)) for i in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE * 4)
    assert not errors
    for cid, replies in results.items():
        assert [r.split(" of ")[0] for r in replies] == [f"turn {i}" for i in range(1, 16)]
        assert all(f"conversation {cid}:" in r for r in replies)
    assert len(results) == 4 and len(server.requests) == 60


def test_stop_closes_idle_keep_alive_connections_promptly() -> None:
    srv = LocalServer().start()
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=DEADLINE)
    try:
        with sock.makefile("rb") as reader:
            assert read_response(reader, send(sock, chat("x"))).complete
            started = time.monotonic()
            srv.stop()
            assert time.monotonic() - started < 2.0
            assert reader.read(1) == b""  # the server closed its side
    finally:
        sock.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()


def test_binds_only_what_it_is_told() -> None:
    with LocalServer() as srv:
        assert srv.url == f"http://127.0.0.1:{srv.port}/v1/chat/completions"
        assert srv.base_url == f"http://127.0.0.1:{srv.port}/v1"
        assert srv.port > 0


def test_serve_blocks_until_interrupted() -> None:
    code = (
        "import sys\n"
        "from runner.server import serve\n"
        "serve('127.0.0.1', 0, ready=lambda url: print(url, flush=True))\n"
        "print('stopped', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1/chat/completions")
        response = requests.post(url, json=chat("ping", stream=False), timeout=DEADLINE)
        assert response.json()["choices"][0]["message"]["content"].endswith("you said: ping")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=DEADLINE)
        assert out.strip() == "stopped"
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(DEADLINE)
