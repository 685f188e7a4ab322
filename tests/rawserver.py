"""A scripted TCP server on 127.0.0.1 for tests that need exact bytes, framings and stalls.

Each accepted connection is handed to ``handler(sock, request)`` in its own
thread, where ``request`` is the request head and body already read. The
handler writes whatever bytes it wants, with whatever pauses, and returns True
to keep the connection open for another request.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    head: bytes
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[socket.socket, Request], bool]


def _read_request(sock: socket.socket) -> Request | None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode().strip().lower()] = value.decode().strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            return None
        rest += data
    return Request(head, rest[:length], headers)


class RawServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.connections = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1/chat/completions"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients: list[socket.socket] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            self._clients.append(conn)
            t = threading.Thread(target=self._conn, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _conn(self, conn: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                req = _read_request(conn)
                if req is None:
                    return
                self.requests.append(req)
                if not self.handler(conn, req):
                    return
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for c in self._clients:
            with suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(timeout=0.2)


@contextmanager
def raw_server(handler: Handler) -> Iterator[RawServer]:
    server = RawServer(handler)
    try:
        yield server
    finally:
        server.close()


def sse_events(*texts: str, finish: str | None = "stop", done: bool = True) -> list[bytes]:
    """OpenAI-style chunk events for ``texts``, then a finish chunk and [DONE]."""
    events = []
    for text in texts:
        chunk = {"id": "x", "choices": [{"index": 0, "delta": {"content": text}}]}
        events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    if finish:
        chunk = {"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
        events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    if done:
        events.append(b"data: [DONE]\n\n")
    return events


def send_chunked(
    sock: socket.socket,
    parts: list[bytes],
    *,
    pause: float = 0.0,
    headers: bytes = b"",
    end: bool = True,
) -> None:
    sock.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n" + headers + b"\r\n"
    )
    for part in parts:
        if pause:
            time.sleep(pause)  # the server's pacing, not test synchronisation
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
    if end:
        sock.sendall(b"0\r\n\r\n")


def send_close_delimited(sock: socket.socket, parts: list[bytes], *, pause: float = 0.0) -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
    for part in parts:
        if pause:
            time.sleep(pause)
        sock.sendall(part)


def send_length(
    sock: socket.socket,
    body: bytes,
    *,
    status: bytes = b"200 OK",
    ctype: bytes = b"text/event-stream",
    headers: bytes = b"",
) -> None:
    sock.sendall(
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: "
        + ctype
        + b"\r\nContent-Length: %d\r\n" % len(body)
        + headers
        + b"\r\n"
        + body
    )
