"""The built-in local OpenAI-compatible endpoint (a reference server, not a model).

It answers ``POST /v1/chat/completions`` (and ``/chat/completions``) like
gpt4free's API server: streamed Server-Sent Events or one JSON reply, with
gpt4free's extra ``provider`` and ``conversation`` fields. The reply shows what
reached the server, in a fixed format other tests rely on::

    turn {n} of conversation {cid8}: received {m} messages{handle}; you said: {text}

``n`` counts every request this server received for the ``conversation_id``
(retries included; always 1 without a conversation_id, when ``cid8`` is
``none``), ``m`` is ``len(messages)``, ``{handle}`` is ``, handle ok`` when the
request's ``conversation`` object equals the one this server last delivered for
that conversation, ``, handle stale`` when it differs and empty when absent;
``text`` is the content of the last user message. The handle delivered with a
reply is ``{"id": "local-<cid8>", "turns_seen": n}``; it counts as delivered
only once the chunk carrying it was written.

Streaming sends one event per word (spaces stay attached to the word before
them), then a final chunk with ``finish_reason: "stop"``, ``usage`` and
``conversation``, then ``data: [DONE]``. With ``stream_options.include_usage``
the usage moves to a separate last chunk with ``"choices": []`` and the other
chunks carry ``"usage": null``, as OpenAI does. ``first_token_delay`` is waited
after the headers, ``token_delay`` before every later event.

``GET /v1/models`` lists the one model, ``local-echo``. Invalid JSON is a 400
``invalid_request_error``; missing or empty ``messages`` is a gpt4free-style 422;
unknown paths are 404 JSON errors. Faults from a :class:`~runner.faults.FaultPlan`
apply to valid chat requests only. Without streaming, the positional faults
become: ``drop`` (half the body, then close), ``inband`` (a 200 ``{"error": ...}``
body), ``malformed`` (truncated JSON), ``bad_utf8`` (invalid bytes in the
content), ``huge_line`` (1 MiB inserted in the content); ``no_done`` gives
``finish_reason: null`` and no usage.

Every request is recorded, in arrival order, as a :class:`RecordedRequest`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from runner.faults import FaultContext, FaultPlan, FaultRule

MODEL = "local-echo"
PROVIDER = "local"
CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
MODELS_PATHS = frozenset({"/v1/models", "/models"})
_TOKEN_RE = re.compile(r"\S+\s*")
_WORD_RE = re.compile(r"\S+")
_DONE = b"data: [DONE]\n\n"
_MARK = "\x00token\x00"
_MARK_JSON = json.dumps(_MARK).encode()
_LAST_CHUNK = b"0\r\n\r\n"
_JOIN_TIMEOUT = 5.0
_HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Just a moment...</title></head>"
    b"<body><h1>Checking your browser</h1><p>Please enable JavaScript.</p></body></html>\n"
)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it.

    ``headers`` has lower-cased names (repeated headers joined with ", ");
    ``body`` is the parsed JSON body, or None when there was none or it was not
    JSON. For chat requests, ``turn``/``attempt`` are what the fault plan saw
    (see :mod:`runner.faults`) and ``fault`` is the rule applied, if any.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    conversation_id: str | None = None
    turn: int | None = None
    attempt: int | None = None
    fault: str | None = None


@dataclass
class _Conversation:
    requests: int = 0
    turn: int = 0
    attempt: int = 0
    fingerprint: tuple[int, str] | None = None
    delivered: Any = None  # the handle last written to a client


@dataclass(frozen=True)
class _Admitted:
    """A valid chat request after the server updated its memory."""

    cid: str | None
    n: int
    reply: str
    model: str
    prompt_tokens: int
    handle: dict[str, Any]
    rule: FaultRule | None


@dataclass
class _State:
    token_delay: float
    first_token_delay: float
    faults: FaultPlan | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    conversations: dict[str | None, _Conversation] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    connections: dict[socket.socket, threading.Thread] = field(default_factory=dict)

    def wait(self, seconds: float) -> bool:
        """Sleep unless the server is stopping; False means stop now."""
        if seconds > 0:
            return not self.stopping.wait(seconds)
        return not self.stopping.is_set()

    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def admit(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> _Admitted:
        messages: list[Any] = body["messages"]
        raw_cid = body.get("conversation_id")
        cid = str(raw_cid) if raw_cid not in (None, "") else None
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        text = _content_text(users[-1].get("content")) if users else ""
        fingerprint = (len(users), text)
        header_attempt = _positive_int(headers.get("x-runner-attempt"))
        carried = body.get("conversation")
        with self.lock:
            conv = self.conversations.setdefault(cid, _Conversation())
            conv.requests += 1
            n = conv.requests if cid is not None else 1
            if header_attempt is not None:
                retry = header_attempt > 1 and conv.turn > 0
                conv.attempt = header_attempt
            else:
                retry = conv.turn > 0 and fingerprint == conv.fingerprint
                conv.attempt = conv.attempt + 1 if retry else 1
            if not retry:
                conv.turn += 1
            conv.fingerprint = fingerprint
            turn, attempt = conv.turn, conv.attempt
            if carried is None:
                note = ""
            else:
                note = ", handle ok" if carried == conv.delivered else ", handle stale"
            rule = None
            if self.faults is not None:
                rule = self.faults.choose(FaultContext(cid, turn, attempt))
            fault = None if rule is None else str(rule)
            self.requests.append(
                RecordedRequest("POST", path, headers, body, cid, turn, attempt, fault)
            )
        cid8 = cid[:8] if cid is not None else "none"
        reply = (
            f"turn {n} of conversation {cid8}: received {len(messages)} messages{note};"
            f" you said: {text}"
        )
        model = body.get("model")
        contents = (_content_text(m.get("content")) for m in messages if isinstance(m, dict))
        return _Admitted(
            cid=cid,
            n=n,
            reply=reply,
            model=str(model) if model else MODEL,
            prompt_tokens=sum(len(_WORD_RE.findall(c)) for c in contents),
            handle={"id": f"local-{cid8}", "turns_seen": n},
            rule=rule,
        )

    def deliver(self, cid: str | None, handle: dict[str, Any]) -> None:
        with self.lock:
            self.conversations.setdefault(cid, _Conversation()).delivered = handle


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    state: _State

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-reply is normal here (timeouts, fault tests).
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "convo-runner-local"
    server: _HTTPServer
    request_id = "none"

    def setup(self) -> None:
        super().setup()
        # Each event is written on its own; don't let Nagle hold it back.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.state.lock:
            self.server.state.connections[self.connection] = threading.current_thread()

    def finish(self) -> None:
        with self.server.state.lock:
            self.server.state.connections.pop(self.connection, None)
        with contextlib.suppress(OSError):
            super().finish()

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        return  # thousands of requests per test run; stderr stays quiet

    # -- routing ---------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        try:
            self._route(method)
        except OSError:
            self.close_connection = True

    def _route(self, method: str) -> None:
        state = self.server.state
        path = self.path.split("?", 1)[0]
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        raw = self._read_body(headers)
        if raw is None:
            return
        self.request_id = os.urandom(8).hex()
        if method == "POST" and path in CHAT_PATHS:
            self._chat(path, headers, raw)
            return
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        state.record(RecordedRequest(method, path, headers, body))
        if method == "GET" and path in MODELS_PATHS:
            data = {"id": MODEL, "object": "model", "owned_by": "convo-runner"}
            self._send_json(200, {"object": "list", "data": [data]})
        elif path in CHAT_PATHS or path in MODELS_PATHS:
            allow = "POST" if path in CHAT_PATHS else "GET"
            message = f"{method} is not allowed on {path}; use {allow}"
            self._send_json(
                405,
                {"error": {"message": message, "type": "invalid_request_error"}},
                {"Allow": allow},
            )
        else:
            message = (
                f"no route for {method} {path}; use POST /v1/chat/completions or GET /v1/models"
            )
            self._send_json(404, {"error": {"message": message, "type": "not_found_error"}})

    def _read_body(self, headers: dict[str, str]) -> bytes | None:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            while True:  # ends at the zero-size chunk or on a framing error
                size_line = self.rfile.readline(1024)
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self._bad_framing("bad chunk size in the chunked request body")
                    return None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = headers.get("content-length")
        if length is None:
            return b""
        try:
            size = int(length)
            if size < 0:
                raise ValueError(length)
        except ValueError:
            self._bad_framing(f"Content-Length {length!r} is not a byte count")
            return None
        return self.rfile.read(size)

    def _bad_framing(self, message: str) -> None:
        self.close_connection = True
        self._send_json(400, {"error": {"message": message, "type": "invalid_request_error"}})

    # -- chat completions -------------------------------------------------------

    def _chat(self, path: str, headers: dict[str, str], raw: bytes) -> None:
        state = self.server.state
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("the top level must be a JSON object")
        except ValueError as exc:
            state.record(RecordedRequest("POST", path, headers, None))
            message = (
                f"request body is not valid JSON ({exc}); "
                "send a JSON object with 'model' and 'messages'"
            )
            self._send_json(400, {"error": {"message": message, "type": "invalid_request_error"}})
            return
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            state.record(RecordedRequest("POST", path, headers, body))
            detail: dict[str, Any] = {"loc": ["body", "messages"], "msg": "Field required"}
            detail["type"] = "missing"
            if messages is not None and not isinstance(messages, list):
                detail.update(msg="Input should be a valid list", type="list_type")
            self._send_json(422, {"detail": [detail]})
            return
        admitted = state.admit(path, headers, body)
        rule = admitted.rule
        if rule is not None:
            if not state.wait(rule.stall):
                self._abort()
                return
            if self._simple_fault(rule, bool(body.get("stream"))):
                return
        if body.get("stream"):
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            self._stream(admitted, include_usage)
        else:
            self._complete(admitted)

    def _simple_fault(self, rule: FaultRule, stream: bool) -> bool:
        """Apply faults that replace the whole response; True when one did."""
        if rule.kind == "reset":
            self._reset()
        elif rule.kind == "status":
            self._status_fault(rule)
        elif rule.kind == "html":
            self._send_bytes(200, "text/html; charset=utf-8", _HTML_PAGE)
        elif rule.kind == "empty":
            ctype = "text/event-stream; charset=utf-8" if stream else "application/json"
            self._send_bytes(200, ctype, b"")
        else:
            return False
        return True

    def _status_fault(self, rule: FaultRule) -> None:
        code = rule.status or 500
        phrase = _phrase(code)
        message = rule.message or f"injected fault: HTTP {code} {phrase}"
        extra: dict[str, str] = {}
        if rule.retry_after is not None:
            extra["Retry-After"] = _fmt_seconds(rule.retry_after)
        if rule.retry_after_date is not None:
            extra["Retry-After"] = formatdate(time.time() + rule.retry_after_date, usegmt=True)
        if rule.retry_after_ms is not None:
            extra["retry-after-ms"] = str(rule.retry_after_ms)
        body: dict[str, Any]
        if code == 429 or code >= 500:
            kind = "rate_limit_error" if code == 429 else "server_error"
            body = {"error": {"message": message, "type": kind, "code": code}}
        else:
            body = {"detail": [{"loc": ["body"], "msg": message, "type": "value_error"}]}
        self._send_json(code, body, extra)

    def _stream(self, admitted: _Admitted, include_usage: bool) -> None:
        state = self.server.state
        rule = admitted.rule
        tokens = _TOKEN_RE.findall(admitted.reply)
        created = int(time.time())
        base: dict[str, Any] = {
            "id": f"chatcmpl-{self.request_id}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": admitted.model,
            "provider": PROVIDER,
        }
        nulls = {"usage": None} if include_usage else {}
        # Chunks differ only in their content: encode the frame once, splice each token in.
        frame = _event(
            {**base, "choices": [_choice({"role": "assistant", "content": _MARK})], **nulls}
        )
        head, _, rest = frame.rpartition(_MARK_JSON)
        events = [head + json.dumps(t).encode() + rest for t in tokens]
        usage = _usage(admitted.prompt_tokens, len(tokens))
        final: dict[str, Any] = {**base, "choices": [_choice({}, "stop")]}
        final["conversation"] = admitted.handle
        if include_usage:
            final["usage"] = None
            tail = [_event(final), _event({**base, "choices": [], "usage": usage})]
        else:
            final["usage"] = usage
            tail = [_event(final)]
        tail.append(_DONE)
        drop = False
        if rule is not None and rule.kind != "stall":
            at = min(rule.after, len(events))
            kind = rule.kind
            if kind == "drop":
                events, tail, drop = events[:at], [], True
            elif kind == "inband":
                message = rule.message or f"injected fault: in-band error after {at} chunks"
                error = {"error": {"message": message}, "model": admitted.model}
                error["provider"] = PROVIDER
                events = [*events[:at], _event(error)]
                tail = [_DONE] if rule.done else []
            elif kind == "no_done":
                tail = []
            elif kind in ("malformed", "bad_utf8", "huge_line"):
                events.insert(at, _bad_event(rule, base))
        final_index = len(events) if tail and tail[0] is not _DONE else -1
        events.extend(tail)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", self.request_id)
        self.end_headers()
        between = state.token_delay + (rule.stall_between if rule is not None else 0.0)
        write = self.wfile.write
        for index, data in enumerate(events):
            if not state.wait(state.first_token_delay if index == 0 else between):
                self._abort()
                return
            chunk = b"%X\r\n%b\r\n" % (len(data), data)
            write(chunk + _LAST_CHUNK if index == len(events) - 1 and not drop else chunk)
            if index == final_index:
                state.deliver(admitted.cid, admitted.handle)
        if drop:
            self._abort()
        elif not events:
            write(_LAST_CHUNK)

    def _complete(self, admitted: _Admitted) -> None:
        state = self.server.state
        rule = admitted.rule
        kind = rule.kind if rule is not None else None
        tokens = _TOKEN_RE.findall(admitted.reply)
        if not state.wait(state.first_token_delay + state.token_delay * max(len(tokens) - 1, 0)):
            self._abort()
            return
        content = admitted.reply
        if rule is not None and kind == "huge_line":
            at = min(rule.after, len(tokens))
            content = "".join(tokens[:at]) + "x" * rule.size + "".join(tokens[at:])
        elif kind == "bad_utf8":
            content = "\x00BAD\x00"
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": None if kind == "no_done" else "stop",
        }
        reply: dict[str, Any] = {
            "id": f"chatcmpl-{self.request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": admitted.model,
            "provider": PROVIDER,
            "choices": [choice],
            "usage": None if kind == "no_done" else _usage(admitted.prompt_tokens, len(tokens)),
            "conversation": admitted.handle,
        }
        if kind == "inband":
            message = (rule.message if rule else None) or "injected fault: error in a 200 reply"
            reply = {"error": {"message": message}, "model": admitted.model, "provider": PROVIDER}
        data = json.dumps(reply).encode()
        if kind == "bad_utf8":
            data = data.replace(b"\\u0000BAD\\u0000", b"\xff\xfe\xc3(")
        elif kind == "malformed":
            data = data[: len(data) // 2]
        if kind == "drop":
            self._send_bytes(200, "application/json", data, partial=True)
            self._abort()
            return
        self._send_bytes(200, "application/json", data)
        if kind not in ("inband", "malformed", "bad_utf8"):
            state.deliver(admitted.cid, admitted.handle)

    # -- low-level writers ---------------------------------------------------------

    def _send_json(self, code: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        self._send_bytes(code, "application/json", json.dumps(obj).encode(), extra=extra)

    def _send_bytes(
        self,
        code: int,
        content_type: str,
        data: bytes,
        *,
        extra: dict[str, str] | None = None,
        partial: bool = False,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", self.request_id)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data[: len(data) // 2] if partial else data)

    def _abort(self) -> None:
        """Close the connection mid-response: FIN, no chunked terminator."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _reset(self) -> None:
        """Reset the connection: SO_LINGER 0 makes close() send RST."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # rfile holds a reference to the socket; the descriptor only closes (and
        # the RST only goes out) once both are closed.
        self.rfile.close()
        self.connection.close()


class LocalServer:
    """The built-in endpoint, served from a daemon thread.

    >>> with LocalServer() as server:
    ...     url = server.url  # http://127.0.0.1:PORT/v1/chat/completions
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token_delay: float = 0.0,
        first_token_delay: float = 0.0,
        faults: FaultPlan | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self._state = _State(token_delay, first_token_delay, faults)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None  # wakes the accept loop on stop()
        self._wake_w: socket.socket | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one once started with port 0)."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}/v1"

    @property
    def url(self) -> str:
        """The chat-completions URL."""
        return f"{self.base_url}/chat/completions"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far, in arrival order."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def faults(self) -> FaultPlan | None:
        return self._state.faults

    def start(self) -> LocalServer:
        """Bind and serve from a daemon thread; returns self."""
        self._bind()
        self._thread = threading.Thread(target=self._serve, name=f"local-server-{self.port}")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and join the threads."""
        state = self._state
        state.stopping.set()
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(_JOIN_TIMEOUT)
            self._thread = None
        if self._httpd is not None:
            self._httpd.server_close()
            self._httpd = None
        with state.lock:
            connections = list(state.connections.items())
        for conn, _ in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for _, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))
        for wake in (self._wake_r, self._wake_w):
            if wake is not None:
                wake.close()
        self._wake_r = self._wake_w = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _bind(self) -> None:
        server_class = _HTTPServer6 if ":" in self.host else _HTTPServer
        httpd = server_class((self.host, self._port), _Handler)
        httpd.state = self._state
        self._wake_r, self._wake_w = socket.socketpair()
        self._httpd = httpd
        self._port = int(httpd.server_address[1])

    def _serve(self) -> None:
        # Our own accept loop: socketserver's serve_forever() polls for shutdown,
        # which would make every stop() wait for the poll interval.
        httpd, wake = self._httpd, self._wake_r
        assert httpd is not None and wake is not None
        httpd.timeout = 0.5
        with selectors.DefaultSelector() as selector:
            selector.register(httpd.socket, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not self._state.stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is httpd.socket and not self._state.stopping.is_set():
                        httpd.handle_request()


def serve(
    host: str,
    port: int,
    *,
    token_delay: float = 0.0,
    first_token_delay: float = 0.0,
    faults: FaultPlan | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve in the calling thread until KeyboardInterrupt; ``ready(url)`` once listening."""
    server = LocalServer(
        host, port, token_delay=token_delay, first_token_delay=first_token_delay, faults=faults
    )
    server._bind()
    try:
        if ready is not None:
            ready(server.url)
        server._serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


# -- pure helpers -------------------------------------------------------------------


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _positive_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 1 else None


def _choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish_reason}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _event(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _bad_event(rule: FaultRule, base: dict[str, Any]) -> bytes:
    if rule.kind == "huge_line":
        padding = "x" * rule.size
        return _event({**base, "choices": [_choice({"role": "assistant", "content": padding})]})
    good = _event({**base, "choices": [_choice({"role": "assistant", "content": "\x00"})]})
    if rule.kind == "bad_utf8":
        return good.replace(b"\\u0000", b"\xff\xfe\xc3(")
    return good[: len(good) // 2].rstrip(b"\n") + b"\n\n"  # JSON cut in half


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Error"


def _fmt_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"
