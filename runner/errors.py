"""The project's own error types.

Lower layers (requests, urllib3, PyYAML, the socket) never leak past the module
that talks to them: they are translated here, at the boundary, with
``raise ... from exc``.

    RunnerError                     anything the runner reports to its user
    ├── UsageError                  bad command line or settings (exit 2)
    ├── ScenarioError               a scenario file is wrong (exit 2): path, line, field
    ├── LockHeldError               another run holds the --lock file (exit 4)
    ├── ResumeError                 a run directory cannot be resumed (exit 2)
    └── TurnError                   one attempt at one turn failed
        ├── TransportError          the HTTP exchange itself broke
        │   ├── ConnectError        nothing listens / DNS / refused
        │   ├── ReadError           connection dropped while reading the body
        │   └── TimeoutError_       a timeout fired
        │       ├── ConnectTimeout
        │       ├── FirstByteTimeout
        │       ├── IdleTimeout     no byte for `idle` seconds mid-stream
        │       └── TurnTimeout     the whole turn took longer than allowed
        ├── Interrupted             the run was asked to stop while the turn was in flight
        ├── HTTPStatusError         non-2xx status: http_status, message, retry_after
        └── StreamError             a 200 reply that is not a good reply
            ├── InBandError         `data: {"error": ...}` inside the stream
            ├── IncompleteStreamError  EOF with neither [DONE] nor finish_reason
            └── ProtocolError       not SSE/JSON, malformed event data, bad UTF-8

Each TurnError has a stable snake_case ``type`` (written to transcripts), a
``retryable`` flag consulted by the retry policy, and optional ``http_status``,
``retry_after`` (seconds, from the server) and ``in_band``.
"""

from __future__ import annotations

from typing import Any


class RunnerError(Exception):
    """Base class of everything the runner reports to its user."""


class UsageError(RunnerError):
    """A command line or settings problem; nothing was sent."""


class ResumeError(RunnerError):
    """A run directory cannot be resumed as asked."""


class LockHeldError(RunnerError):
    """Another live process holds the run lock."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class ScenarioError(RunnerError):
    """A scenario file is invalid. ``str()`` is ``path:line: field: message``."""

    def __init__(
        self, message: str, *, path: str, line: int | None = None, field: str | None = None
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.field = field
        where = path if line is None else f"{path}:{line}"
        what = f"{field}: {message}" if field else message
        super().__init__(f"{where}: {what}")


class TurnError(RunnerError):
    """One attempt at one turn failed."""

    type = "turn_error"
    retryable = False
    in_band = False
    # Filled in by the client: the text this attempt received before it failed,
    # and the server's request id when the response had headers.
    partial: str = ""
    request_id: str | None = None

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.retry_after = retry_after
        self.body = body

    def to_record(self) -> dict[str, Any]:
        """The transcript's ``error`` object."""
        return {
            "type": self.type,
            "message": self.message,
            "http_status": self.http_status,
            "in_band": self.in_band,
            "retryable": self.retryable,
        }


class Interrupted(TurnError):
    type = "interrupted"


class TransportError(TurnError):
    type = "transport_error"
    retryable = True


class ConnectError(TransportError):
    type = "connect_error"


class ReadError(TransportError):
    type = "read_error"


class TimeoutError_(TransportError):
    type = "timeout"


class ConnectTimeout(TimeoutError_):
    type = "connect_timeout"


class FirstByteTimeout(TimeoutError_):
    type = "first_byte_timeout"


class IdleTimeout(TimeoutError_):
    type = "idle_timeout"


class TurnTimeout(TimeoutError_):
    type = "turn_timeout"


# 408 Request Timeout, 409 Conflict (lock contention), 429 Too Many Requests and
# every 5xx are worth another try; other 4xx say the request itself is wrong.
RETRYABLE_STATUSES = frozenset({408, 409, 429})


class HTTPStatusError(TurnError):
    type = "http_status"

    def __init__(
        self,
        message: str,
        *,
        http_status: int,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message, http_status=http_status, retry_after=retry_after, body=body)
        self.retryable = http_status in RETRYABLE_STATUSES or http_status >= 500


class StreamError(TurnError):
    type = "stream_error"
    retryable = True


class InBandError(StreamError):
    type = "in_band_error"
    in_band = True


class IncompleteStreamError(StreamError):
    type = "incomplete_stream"


class ProtocolError(StreamError):
    type = "protocol_error"
