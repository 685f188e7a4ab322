"""A streaming chat-completions server for benchmarks, fast enough not to be the bottleneck.

Plain ``asyncio.start_server`` with a hand-written HTTP/1.1 loop (keep-alive,
``Content-Length`` request bodies): one process serves thousands of streamed
replies a second, several times what a ``requests`` client can consume.

Every request may say how to answer, as query parameters of the URL
(``/v1/chat/completions?tokens=500&framing=length``) or as a ``"bench"`` object
in the JSON body; the body wins:

``tokens``     content chunks in the reply (default 20)
``bytes``      characters of content per chunk (default 4)
``first``      seconds before the first chunk (default 0)
``gap``        seconds between chunks, and after the last one (default 0)
``framing``    ``chunked`` (default), ``close`` (``Connection: close``, no
               length) or ``length`` (``Content-Length``)
``stamp``      ``1``: every chunk carries ``"t": <send time>`` on the
               ``time.perf_counter()`` clock, which on Linux is the system-wide
               monotonic clock, so a client on the same machine can compare it
               with its own ``perf_counter()``

With delays, chunk ``i`` is sent at ``start + first + i * gap`` (deadlines, not
sleeps added up, so timer slack does not accumulate), the finish chunk one
``gap`` after the last token and ``[DONE]`` with it: a reply of ``n`` tokens
takes ``first + n * gap``.

Run ``python bench/server.py --port 0``: it prints the port on the first line of
stdout once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["Settings", "body_size", "events", "main", "serve"]

FRAMINGS = ("chunked", "close", "length")
STAMP_WIDTH = 20  # "t" values are padded with spaces to this width, so sizes are known ahead
_HEAD = (
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: text/event-stream; charset=utf-8\r\n"
    "Cache-Control: no-cache\r\n"
    "x-request-id: bench\r\n"
)
_DONE = b"data: [DONE]\n\n"
_PREFIX = '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
_PREFIX += '"model":"bench","provider":"Bench",'


@dataclass(frozen=True)
class Settings:
    tokens: int = 20
    bytes: int = 4
    first: float = 0.0
    gap: float = 0.0
    framing: str = "chunked"
    stamp: bool = False

    @classmethod
    def from_pairs(cls, pairs: dict[str, Any]) -> Settings:
        values: dict[str, Any] = {}
        for key, value in pairs.items():
            if key in ("tokens", "bytes"):
                values[key] = max(0, int(value))
            elif key in ("first", "gap"):
                values[key] = max(0.0, float(value))
            elif key == "framing":
                if value not in FRAMINGS:
                    raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}")
                values[key] = value
            elif key == "stamp":
                values[key] = str(value).lower() in ("1", "true", "yes")
        return cls(**values)


def _token(i: int, size: int) -> str:
    return chr(97 + i % 26) * size


def _templates(s: Settings) -> list[str]:
    """The data lines of a reply, with ``{t}`` where a stamp goes (when stamping)."""
    t = '"t":{t},' if s.stamp else ""
    lines = []
    for i in range(s.tokens):
        delta = json.dumps({"content": _token(i, s.bytes)})
        lines.append(
            f'{_PREFIX}{t}"choices":[{{"index":0,"delta":{delta},"finish_reason":null}}]}}'
        )
    usage = f'"usage":{{"prompt_tokens":1,"completion_tokens":{s.tokens},"total_tokens":'
    usage += f"{s.tokens + 1}}}"
    lines.append(
        f'{_PREFIX}{t}"choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}],{usage}}}'
    )
    return lines


def events(s: Settings, stamp: float | None = None) -> list[bytes]:
    """The SSE events of a reply (the last one is ``[DONE]``); stamped with ``stamp``."""
    out = []
    for line in _templates(s):
        if s.stamp:
            line = line.replace("{t}", _fmt_stamp(stamp if stamp is not None else 0.0))
        out.append(b"data: " + line.encode() + b"\n\n")
    out.append(_DONE)
    return out


def body_size(s: Settings) -> int:
    """Bytes of SSE in a reply, without transfer framing."""
    return sum(len(e) for e in events(s))


def _fmt_stamp(value: float) -> str:
    return f"{value:.6f}".rjust(STAMP_WIDTH)


def _chunk(data: bytes) -> bytes:
    return b"%X\r\n%b\r\n" % (len(data), data)


class _Replies:
    """Whole zero-delay unstamped replies, built once per settings."""

    def __init__(self) -> None:
        self._cache: dict[Settings, tuple[bytes, bytes]] = {}

    def get(self, s: Settings) -> tuple[bytes, bytes]:
        """(head, body) for a reply that may be sent in one write."""
        cached = self._cache.get(s)
        if cached is None:
            evs = events(s)
            cached = (_head(s, sum(map(len, evs))), _frame(s, evs) + _end(s))
            if len(self._cache) < 256:
                self._cache[s] = cached
        return cached


def _head(s: Settings, length: int) -> bytes:
    head = _HEAD
    if s.framing == "chunked":
        head += "Transfer-Encoding: chunked\r\n"
    elif s.framing == "close":
        head += "Connection: close\r\n"
    else:
        head += f"Content-Length: {length}\r\n"
    return (head + "\r\n").encode()


def _frame(s: Settings, evs: list[bytes]) -> bytes:
    if s.framing == "chunked":
        return b"".join(_chunk(e) for e in evs)
    return b"".join(evs)


def _end(s: Settings) -> bytes:
    return b"0\r\n\r\n" if s.framing == "chunked" else b""


def _error(status: str, message: str) -> bytes:
    body = json.dumps({"error": {"message": message}}).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _settings(target: bytes, body: bytes) -> Settings:
    pairs: dict[str, Any] = {}
    _, _, query = target.partition(b"?")
    if query:
        pairs.update(parse_qsl(query.decode("latin-1")))
    if b'"bench"' in body:
        obj = json.loads(body)
        if isinstance(obj, dict) and isinstance(obj.get("bench"), dict):
            pairs.update(obj["bench"])
    return Settings.from_pairs(pairs)


async def _paced(writer: asyncio.StreamWriter, s: Settings) -> None:
    """Send a reply on schedule: chunk i at start + first + i * gap."""
    loop = asyncio.get_running_loop()
    templates = _templates(s)
    sizes = [len(b"data: ") + len(line.encode()) + 2 for line in templates]
    if s.stamp:
        sizes = [n - len("{t}") + STAMP_WIDTH for n in sizes]
    writer.write(_head(s, sum(sizes) + len(_DONE)))
    start = loop.time()
    last = len(templates) - 1
    for i, line in enumerate(templates):
        due = start + s.first + i * s.gap
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if s.stamp:
            line = line.replace("{t}", _fmt_stamp(time.perf_counter()))
        data = b"data: " + line.encode() + b"\n\n"
        if i == last:
            data += _DONE
        writer.write(_chunk(data) if s.framing == "chunked" else data)
        await writer.drain()
    writer.write(_end(s))


async def _handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replies: _Replies
) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            lines = head.split(b"\r\n")
            request_line = lines[0].split(b" ")
            if len(request_line) != 3:
                writer.write(_error("400 Bad Request", "bad request line"))
                return
            length = 0
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
                elif name == b"transfer-encoding":
                    writer.write(_error("411 Length Required", "send a Content-Length"))
                    return
            body = await reader.readexactly(length) if length else b""
            try:
                s = _settings(request_line[1], body)
            except ValueError as exc:
                writer.write(_error("400 Bad Request", str(exc)))
                await writer.drain()
                continue
            if s.first or s.gap or s.stamp:
                await _paced(writer, s)
            else:
                reply_head, reply_body = replies.get(s)
                writer.write(reply_head + reply_body)
            await writer.drain()
            if close or s.framing == "close":
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(host: str, port: int, ready: Any = None) -> None:
    """Serve until cancelled; ``ready(port)`` is called once listening."""
    replies = _Replies()
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, replies), host, port, backlog=1024, limit=1 << 20
    )
    bound = server.sockets[0].getsockname()[1]
    if ready is not None:
        ready(bound)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    def ready(port: int) -> None:
        sys.stdout.write(f"{port}\n")
        sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, ready))
    return 0


if __name__ == "__main__":
    sys.exit(main())
