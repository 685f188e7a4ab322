"""The HTTP boundary: the only module that touches ``requests``.

:class:`ChatClient` sends one chat-completions request and reads the reply as it
arrives, raw bytes straight into the pure :class:`~runner.sse.SSEDecoder`:

* each read returns what the socket has (up to 64 KiB): a chunked body is
  unwrapped by the pure :class:`~runner.chunked.ChunkedDecoder`, any other body
  read with ``http.client``'s ``read1()``, both below urllib3's response
  wrapper (which costs microseconds of Python per chunk, that is per event);
  with a content encoding, urllib3 reads and decodes it. ``iter_lines()`` is
  not used: it delays events on non-chunked bodies and may split a
  ``\\r\\n`` into two lines;
* the request is prepared once per client and handed to the session's
  transport adapter with each new body (see :meth:`ChatClient._request`);
* the body is read to its end even after ``[DONE]``, so the keep-alive
  connection goes back to the pool;
* four timeouts, each its own error type: connect, first byte (from sending
  the request to the first byte of the body), idle (between two reads once
  the body has started) and the whole turn. The socket's timeout is adjusted
  before each read so that the turn deadline fires on time even while bytes
  trickle in.

Every ``requests``/``urllib3``/socket exception is translated here into the
project's :mod:`runner.errors` types, ``raise ... from exc``. Messages name the
URL but never the API key.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from runner._version import __version__
from runner.accumulate import Accumulator, Reply, error_message
from runner.chunked import ChunkedDecoder
from runner.errors import (
    ConnectError,
    ConnectTimeout,
    FirstByteTimeout,
    HTTPStatusError,
    IdleTimeout,
    ProtocolError,
    ReadError,
    TransportError,
    TurnError,
    TurnTimeout,
    UsageError,
)
from runner.sse import SSEDecoder

__all__ = ["ChatClient", "Exchange", "Timeouts", "normalize_endpoint", "parse_retry_after"]

DEFAULT_ENDPOINT = "http://localhost:1337/v1/chat/completions"
_MAX_ERROR_BODY = 64 * 1024
_MAX_JSON_BODY = 32 * 1024 * 1024
_MAX_LINE = 16 * 1024 * 1024
_DRAIN_TIMEOUT = 2.0  # after [DONE]: how long to wait for the body's end before giving up reuse


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``first_byte`` covers the time to the first token."""

    connect: float = 10.0
    first_byte: float = 120.0
    idle: float = 120.0
    turn: float = 600.0


@dataclass
class Exchange:
    """One successful attempt."""

    reply: Reply
    http_status: int
    request_id: str | None
    ttft_ms: float | None
    duration_ms: float
    chunks: int
    max_gap_ms: float | None


def normalize_endpoint(url: str) -> str:
    """Accept a full ``.../chat/completions`` URL or a base URL such as ``http://host:port/v1``."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(
            f"--endpoint: {url!r} is not an http(s) URL "
            "(expected e.g. http://localhost:1337/v1/chat/completions or http://localhost:1337/v1)"
        )
    path = parts.path.rstrip("/")
    if path.endswith("/chat/completions"):
        return url.rstrip("/")
    if not path:
        path = "/v1"
    return parts._replace(path=path + "/chat/completions").geturl()


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, or ``Retry-After``
    as delta-seconds or an HTTP date. None when absent or unreadable."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _socket_of(raw: Any) -> socket.socket | None:
    connection = getattr(raw, "_connection", None) or getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' HTTP adapter, finding the connection pool once instead of per request.

    For every request the stock adapter rebuilds the pool key (parsing the URL,
    merging TLS settings) to look up a pool that, for a client bound to one
    endpoint, is always the same one. With no proxy in play the pool found for
    a (URL, verify, cert) is remembered; :meth:`close` forgets it with the pools.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pools: dict[tuple[Any, ...], Any] = {}

    def get_connection_with_tls_context(
        self,
        request: requests.PreparedRequest,
        verify: Any,
        proxies: Any = None,
        cert: Any = None,
    ) -> Any:
        if proxies:
            return super().get_connection_with_tls_context(request, verify, proxies, cert)
        key = (request.url, verify, cert)
        pool = self._pools.get(key)
        if pool is None:
            pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
            self._pools[key] = pool
        return pool

    def close(self) -> None:
        self._pools.clear()
        super().close()


def _is_local(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1")


class ChatClient:
    """Sends chat-completions requests over one keep-alive ``requests.Session``.

    One client per worker thread; :meth:`abort` may be called from another
    thread to cut the request in flight short.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeouts = timeouts or Timeouts()
        self._session = requests.Session()
        self._session.trust_env = _is_local(endpoint) is False
        for prefix in ("http://", "https://"):
            self._session.mount(prefix, _Adapter())
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream, application/json",
            # Compression makes servers and proxies buffer a stream.
            "Accept-Encoding": "identity",
            "User-Agent": f"convo-runner/{__version__}",
        }
        if extra_headers:
            self._headers.update(extra_headers)
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._current: Any = None
        self._aborted = False
        self._template: requests.PreparedRequest | None = None
        self._adapter: Any = None
        self._send_kwargs: dict[str, Any] = {}

    def close(self) -> None:
        self._session.close()

    def abort(self) -> None:
        """Stop the request in flight, if any (thread-safe best effort)."""
        self._aborted = True
        sock = _socket_of(getattr(self._current, "raw", None))
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def send(self, body: Mapping[str, Any], *, attempt: int | None = None) -> Exchange:
        """Send one request and read the whole reply. Raise a :class:`TurnError` on failure.

        ``attempt`` (1-based) is sent as ``x-runner-attempt``, so that a server (the
        built-in one's fault plan, a proxy's logs) can tell a retry from a new turn.
        """
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        t = self.timeouts
        started = time.perf_counter()
        deadline = started + t.turn
        url = self.endpoint
        try:
            request = self._request(data)
            if attempt is not None:
                request.headers["x-runner-attempt"] = str(attempt)
            resp = self._adapter.send(
                request,
                stream=True,
                timeout=(min(t.connect, t.turn), min(t.first_byte, t.turn)),
                **self._send_kwargs,
            )
        except requests.exceptions.ConnectTimeout as exc:
            if t.turn <= t.connect:
                raise TurnTimeout(f"turn exceeded {t.turn:g}s connecting to {url}") from exc
            raise ConnectTimeout(f"no connection to {url} within {t.connect:g}s") from exc
        except requests.exceptions.ReadTimeout as exc:
            if t.turn <= t.first_byte:
                raise TurnTimeout(f"turn exceeded {t.turn:g}s waiting for {url}") from exc
            raise FirstByteTimeout(
                f"no response from {url} within {t.first_byte:g}s (first-byte timeout)"
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            raise self._connection_error(exc) from exc
        except requests.exceptions.RequestException as exc:
            raise TransportError(f"request to {url} failed: {exc}") from exc
        self._current = resp
        if "set-cookie" in resp.headers:
            self._keep_cookies(resp)
        try:
            return self._read(resp, started, deadline)
        except TurnError as exc:
            exc.request_id = resp.headers.get("x-request-id")
            resp.close()
            raise
        except BaseException:
            resp.close()
            raise
        finally:
            self._current = None

    # -- sending ---------------------------------------------------------
    #
    # ``Session.post`` prepares the request anew on every call: merging session
    # and call settings, cookies, hooks, and reading proxy settings from the
    # environment. That is more Python than reading a short streamed reply. The
    # request here never changes but for its body, so it is prepared once (by
    # the session, with its defaults, cookies and environment) and each call
    # hands a copy with the new body to the session's transport adapter, as
    # ``Session.send`` would. Redirects are not followed (they never were), and
    # cookies a server sets are kept for the next requests, as a session keeps
    # them.

    def _request(self, data: bytes) -> requests.PreparedRequest:
        template = self._template
        if template is None:
            session = self._session
            template = session.prepare_request(
                requests.Request("POST", self.endpoint, headers=self._headers, data=b"{}")
            )
            assert template.url is not None
            self._adapter = session.get_adapter(template.url)
            env = session.merge_environment_settings(template.url, {}, True, None, None)
            self._send_kwargs = {k: env[k] for k in ("verify", "cert", "proxies")}
            self._template = template
        request = requests.PreparedRequest()
        request.method = template.method
        request.url = template.url
        request.hooks = template.hooks
        request.headers = template.headers.copy()
        request.headers["Content-Length"] = str(len(data))
        request.body = data
        return request

    def _keep_cookies(self, resp: requests.Response) -> None:
        self._session.cookies.update(resp.cookies)
        self._template = None  # prepared again, with the cookies, for the next request

    def _connection_error(self, exc: requests.exceptions.ConnectionError) -> TurnError:
        url = self.endpoint
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, urllib3.exceptions.MaxRetryError):
            reason = reason.reason
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            if "refused" in str(reason).lower():
                hint = (
                    "; start a local endpoint with `runner serve`, or run with --local"
                    if _is_local(url)
                    else ""
                )
                return ConnectError(f"nothing is listening at {url} (connection refused){hint}")
            return ConnectError(f"cannot connect to {url}: {reason}")
        if isinstance(reason, urllib3.exceptions.NameResolutionError):
            return ConnectError(f"cannot resolve the host of {url}")
        if self._aborted:
            return ReadError(f"request to {url} interrupted")
        return ReadError(f"connection to {url} closed before a response: {_short(reason)}")

    # -- reading ---------------------------------------------------------

    def _read(self, resp: requests.Response, started: float, deadline: float) -> Exchange:
        status = resp.status_code
        headers = resp.headers
        request_id = headers.get("x-request-id")
        raw = resp.raw
        if not 200 <= status < 300:
            body = self._read_limited(raw, _MAX_ERROR_BODY, started, deadline)
            raise self._status_error(status, headers, body)
        ctype = headers.get("content-type", "").lower()
        acc = Accumulator()
        if "json" in ctype and "event-stream" not in ctype:
            body = self._read_limited(raw, _MAX_JSON_BODY, started, deadline)
            try:
                obj = json.loads(body)
            except ValueError:
                raise ProtocolError(
                    f"{self.endpoint} answered {status} with a JSON content type but the body "
                    f"is not JSON: {body[:80]!r}",
                    http_status=status,
                ) from None
            acc.add_completion(obj)
            reply = acc.finish()
            duration = (time.perf_counter() - started) * 1000
            return Exchange(reply, status, request_id, duration, duration, 1, None)
        if ctype and "event-stream" not in ctype and not ctype.startswith("text/plain"):
            snippet = self._read_limited(raw, 200, started, deadline)
            raise ProtocolError(
                f"{self.endpoint} answered {status} with {ctype.split(';')[0]}, "
                f"not an event stream: {snippet[:80]!r}",
                http_status=status,
            )
        return self._read_stream(resp, acc, status, request_id, started, deadline)

    def _chunks(self, raw: Any) -> Iterator[tuple[bytes, bool]]:
        """The body's bytes as they arrive, transfer framing removed, each with a flag
        telling whether the body is known to be complete after them."""
        body = getattr(raw, "_original_response", None)
        if isinstance(body, http.client.HTTPResponse) and body.fp is not None:
            original: http.client.HTTPResponse = body
            wrapped = getattr(raw, "_fp", None)
            encoding = raw.headers.get("content-encoding", "identity").lower()
            if wrapped is original and encoding in ("", "identity"):
                return self._body_chunks(raw, original)
        return self._library_chunks(raw)

    @staticmethod
    def _library_chunks(raw: Any) -> Iterator[tuple[bytes, bool]]:
        if raw.chunked:
            for data in raw.stream(None, decode_content=True):
                yield data, False
            return
        while True:
            data = raw.read1(65536)
            if not data:
                return
            yield data, False

    @staticmethod
    def _body_chunks(raw: Any, body: http.client.HTTPResponse) -> Iterator[tuple[bytes, bool]]:
        """Read below urllib3's response wrapper, from the http.client response it wraps.

        urllib3 reads a chunked body one chunk, that is one event, at a time, at
        several microseconds of Python each; here each socket read (up to 64 KiB)
        is unwrapped in one pass by :class:`~runner.chunked.ChunkedDecoder`. Other
        bodies are read with ``http.client``'s own ``read1``, which honours
        ``Content-Length``. Errors are the ones urllib3 would let through
        (``OSError``, ``TimeoutError``, ``http.client.IncompleteRead``) or a
        :class:`~runner.errors.ProtocolError` for a malformed chunked body.
        A body read to its end gives the connection back to the pool, as urllib3
        does.
        """
        if body.chunked:
            fp = body.fp
            assert fp is not None
            chunks = ChunkedDecoder()
            while not chunks.done:
                data = fp.read1(65536)
                if not data:
                    raise http.client.IncompleteRead(b"")
                payload = chunks.feed(data)
                if payload:
                    yield payload, chunks.done
                if chunks.error is not None:
                    raise chunks.error  # after the payload that came before the fault
            if chunks.rest:
                raw.close()  # bytes after the body: the connection cannot be trusted again
                return
        else:
            while body.length != 0:  # None: the body ends when the server closes
                data = body.read1(65536)
                if not data:
                    if body.length:
                        raise http.client.IncompleteRead(b"", body.length)
                    break
                yield data, body.length == 0
        body.close()
        raw.release_conn()

    def _read_stream(
        self,
        resp: requests.Response,
        acc: Accumulator,
        status: int,
        request_id: str | None,
        started: float,
        deadline: float,
    ) -> Exchange:
        t = self.timeouts
        raw = resp.raw
        sock = _socket_of(raw)
        decoder = SSEDecoder()
        first_token: float | None = None
        last_event: float | None = None
        max_gap = 0.0
        got_byte = False
        # Before the first body byte the first-byte timeout applies, counted from
        # the request (headers may come early and the first token late), then idle.
        # urllib3 has just set the socket's timeout to min(first_byte, turn); setting
        # it costs a system call (which lets other threads take the GIL), so it is
        # changed only when it differs from what is wanted by more than 10 ms.
        limit = t.idle
        current = sock.gettimeout() if sock is not None else None
        wanted = min(started + t.first_byte, deadline) - time.perf_counter()
        if current is None or not wanted - 0.01 <= current <= wanted + 0.01:
            current = self._set_timeout(sock, current, wanted)
        assert current is not None
        try:
            for data, complete in self._chunks(raw):
                now = time.perf_counter()
                switch = not got_byte  # from the first-byte timeout to the idle one
                got_byte = True
                events = decoder.feed(data)
                if events:
                    # Events of one read arrived together: one gap, one arrival time.
                    if last_event is not None and now - last_event > max_gap:
                        max_gap = now - last_event
                    last_event = now
                    if acc.add_events(events) and first_token is None:
                        first_token = now
                if decoder.pending_bytes > _MAX_LINE:
                    raise ProtocolError(f"a line of the stream exceeded {_MAX_LINE} bytes")
                remaining = deadline - now
                if remaining <= 0:
                    raise TurnTimeout(f"turn exceeded {t.turn:g}s reading {self.endpoint}")
                if complete:
                    continue  # nothing more will be read: no timeout to adjust
                wanted = min(_DRAIN_TIMEOUT if acc.reply.done else limit, remaining)
                if switch or wanted < current or wanted > current * 1.5:
                    current = self._set_timeout(sock, current, wanted)
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
            if not acc.reply.done:
                err = self._timeout(got_byte, started, deadline, acc)
                err.http_status = status
                raise err from exc
            raw.close()  # [DONE] arrived but the body never ended: don't reuse the connection
        except (
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
        ) as exc:
            if not acc.reply.done:
                err = ReadError(
                    f"{'interrupted' if self._aborted else 'connection closed'} mid-stream "
                    f"after {acc.reply.chunks} chunk(s) from {self.endpoint}: {_short(exc)}",
                    http_status=status,
                )
                err.partial = acc.text_so_far
                raise err from exc
        except TurnError as exc:
            exc.partial = acc.text_so_far
            exc.http_status = exc.http_status or status
            raise
        end = time.perf_counter()
        try:
            for event in decoder.flush():
                if acc.add_event(event) and first_token is None:
                    first_token = end
            if decoder.decode_errors:
                raise ProtocolError(
                    f"the stream from {self.endpoint} is not valid UTF-8 "
                    f"({decoder.decode_errors} bad line(s))"
                )
            reply = acc.finish()
        except TurnError as exc:
            exc.partial = acc.text_so_far
            exc.http_status = exc.http_status or status
            raise
        return Exchange(
            reply=reply,
            http_status=status,
            request_id=request_id,
            ttft_ms=None if first_token is None else (first_token - started) * 1000,
            duration_ms=(end - started) * 1000,
            chunks=reply.chunks,
            max_gap_ms=max_gap * 1000 if last_event is not None else None,
        )

    @staticmethod
    def _set_timeout(sock: socket.socket | None, current: float | None, wanted: float) -> float:
        wanted = max(wanted, 0.001)
        if sock is not None and wanted != current:
            with contextlib.suppress(OSError):
                sock.settimeout(wanted)
        return wanted

    def _timeout(
        self, got_byte: bool, started: float, deadline: float, acc: Accumulator
    ) -> TurnError:
        t = self.timeouts
        now = time.perf_counter()
        err: TurnError
        if now >= deadline - 0.005:
            err = TurnTimeout(f"turn exceeded {t.turn:g}s reading {self.endpoint}")
        elif not got_byte:
            err = FirstByteTimeout(
                f"no reply data from {self.endpoint} within {t.first_byte:g}s (first-byte timeout)"
            )
        else:
            err = IdleTimeout(
                f"no data from {self.endpoint} for {t.idle:g}s mid-stream "
                f"after {acc.reply.chunks} chunk(s) (idle timeout)"
            )
        err.partial = acc.text_so_far
        return err

    def _read_limited(self, raw: Any, limit: int, started: float, deadline: float) -> bytes:
        """Read up to ``limit`` bytes of a (non-stream) body within the turn deadline."""
        sock = _socket_of(raw)
        self._set_timeout(sock, None, min(self.timeouts.idle, deadline - time.perf_counter()))
        parts: list[bytes] = []
        size = 0
        try:
            for data, _ in self._chunks(raw):
                parts.append(data)
                size += len(data)
                if size >= limit:
                    raw.close()  # the rest is not wanted; the connection is not reused
                    break
                if time.perf_counter() > deadline:
                    raise TurnTimeout(f"turn exceeded {self.timeouts.turn:g}s reading the body")
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
            raise IdleTimeout(f"the body from {self.endpoint} stalled") from exc
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            if not parts:
                raise ReadError(
                    f"connection closed while reading the body from {self.endpoint}: {_short(exc)}"
                ) from exc
        return b"".join(parts)[:limit]

    def _status_error(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> HTTPStatusError:
        text = body.decode("utf-8", errors="replace")
        parsed: Any = None
        with contextlib.suppress(ValueError):
            parsed = json.loads(text)
        if parsed is not None and isinstance(parsed, dict):
            message = error_message(parsed)
        else:
            message = " ".join(text.split())[:200] or http.client.responses.get(status, "")
        return HTTPStatusError(
            f"HTTP {status} from {self.endpoint}: {message}",
            http_status=status,
            retry_after=parse_retry_after(headers),
            body=parsed if parsed is not None else text[:2000],
        )


def _short(exc: object) -> str:
    text = str(exc)
    # urllib3 nests reprs; the last part says what happened.
    if "(" in text and len(text) > 160:
        text = text[-160:]
    return text or type(exc).__name__
