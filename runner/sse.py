"""A pure, incremental Server-Sent Events decoder: bytes in, events out.

It follows the WHATWG event-stream algorithm
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
and knows nothing about HTTP. Feed it bytes exactly as they arrive, in chunks of
any size; :meth:`SSEDecoder.feed` returns the events completed by that chunk and
:meth:`SSEDecoder.flush` those left when the stream ends.

Two layers, as in httpx-sse:

* a line splitter that splits only on ``\\r\\n``, ``\\r`` and ``\\n`` — a ``\\r`` at
  the end of one chunk and a ``\\n`` at the start of the next are one line end;
* an event builder (``data:``/``event:``/``id:``/``retry:``, comments, a blank
  line dispatches).

UTF-8 is decoded only once a line is complete, so a multi-byte character split
across chunks is never damaged. Invalid UTF-8 is replaced with U+FFFD as the
spec says, and counted in :attr:`SSEDecoder.decode_errors` so that a caller
which needs exact text can refuse the stream.

The decoder never raises on any input. Buffered state is one partial line, so a
peer that never sends a line end grows the buffer: callers cap it with
:attr:`SSEDecoder.pending_bytes`.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["SSEDecoder", "ServerSentEvent"]


class ServerSentEvent(NamedTuple):
    """One dispatched event. ``data`` lines are joined with ``\\n``."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


# tuple.__new__ builds a NamedTuple without the Python-level __new__ call.
_new_event = tuple.__new__


def _decode(raw: bytes) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), True


class SSEDecoder:
    """Incremental decoder. Not thread-safe; one per stream."""

    __slots__ = (
        "_data",
        "_event",
        "_has_data",
        "_last_id",
        "_pending",
        "_retry",
        "_skip_lf",
        "decode_errors",
    )

    def __init__(self) -> None:
        self._pending = b""
        # A chunk ended in "\r": a "\n" opening the next chunk belongs to that line end.
        self._skip_lf = False
        self._data: list[str] = []
        self._has_data = False
        self._event = ""
        self._last_id = ""
        self._retry: int | None = None
        self.decode_errors = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes held for a line not yet ended."""
        return len(self._pending)

    @property
    def last_event_id(self) -> str:
        return self._last_id

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Take the next bytes of the stream; return the events they complete."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return []
        buf = self._pending + chunk if self._pending else chunk
        events: list[ServerSentEvent] = []
        if b"\r" in buf:
            lines = buf.splitlines()
            last = buf[-1:]
            if last == b"\n":
                self._pending = b""
            elif last == b"\r":
                self._pending = b""
                self._skip_lf = True
            else:
                self._pending = lines.pop()
            self._lines(lines, events)
            return events
        # The usual stream has "\n" line ends only. Split it at blank lines into
        # blocks, each a whole event; a block that is one "data: " line, arriving
        # when no field of an earlier event is pending, is the shape of nearly every
        # chat event and becomes an event directly.
        cut = buf.rfind(b"\n\n") + 2  # 1 when there is no blank line: no complete event
        tail = buf[cut:] if cut > 1 else buf
        if cut > 1:
            # The complete events end at a line end, which never splits a UTF-8
            # sequence: decode them at once, unless some of it is not valid UTF-8.
            try:
                text = buf[: cut - 2].decode()
            except UnicodeDecodeError:
                self._blocks(buf[: cut - 2].split(b"\n\n"), events)
            else:
                append = events.append
                clean = not self._has_data and not self._event and self._retry is None
                for block in text.split("\n\n"):
                    if clean and block[:6] == "data: " and "\n" not in block:
                        append(
                            _new_event(ServerSentEvent, (block[6:], "message", self._last_id, None))
                        )
                    else:
                        self._blocks([block.encode()], events)
                        clean = not self._has_data and not self._event and self._retry is None
        if tail:
            lines = tail.split(b"\n")
            self._pending = lines.pop()
            self._lines(lines, events)
        else:
            self._pending = b""
        return events

    def _blocks(self, blocks: list[bytes], events: list[ServerSentEvent]) -> None:
        """Interpret blocks of lines, each ended by a blank line."""
        for block in blocks:
            lines = block.split(b"\n")
            lines.append(b"")  # the blank line that ended the block
            self._lines(lines, events)

    def _lines(self, lines: list[bytes], events: list[ServerSentEvent]) -> None:
        """Interpret complete lines (without their line ends), appending dispatched events."""
        for line in lines:
            if line[:6] == b"data: ":
                try:
                    self._data.append(line[6:].decode())
                except UnicodeDecodeError:
                    self._data.append(line[6:].decode(errors="replace"))
                    self.decode_errors += 1
                self._has_data = True
            elif line:
                self._line(line)
            elif self._has_data:
                events.append(self._dispatch())
            else:
                self._event = ""  # no data: the spec discards the event (but "id" persists)

    def flush(self) -> list[ServerSentEvent]:
        """The stream ended: finish a last line and a last event without its blank line."""
        events: list[ServerSentEvent] = []
        if self._pending:
            line, self._pending = self._pending, b""
            event = self._line(line)
            if event is not None:
                events.append(event)
        event = self._line(b"")
        if event is not None:
            events.append(event)
        self._skip_lf = False
        return events

    def _line(self, line: bytes) -> ServerSentEvent | None:
        if not line:
            if self._has_data:
                return self._dispatch()
            self._event = ""  # no data: the spec discards the event (but "id" persists)
            return None
        if line[:6] == b"data: ":
            # The hot path: almost every line of a chat stream.
            value, bad = _decode(line[6:])
            self.decode_errors += bad
            self._data.append(value)
            self._has_data = True
            return None
        if line[:1] == b":":
            return None  # a comment, e.g. ": ping"
        name, colon, raw_value = line.partition(b":")
        if colon and raw_value[:1] == b" ":
            raw_value = raw_value[1:]
        value, bad = _decode(raw_value)
        self.decode_errors += bad
        if name == b"data":
            self._data.append(value)
            self._has_data = True
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if "\0" not in value:
                self._last_id = value
        elif name == b"retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        elif name == b"error":
            # Not a WHATWG field: some llama.cpp builds report a failure as
            # `error: {json}` and then send `data: [DONE]`. Dropping it, as the spec
            # would, turns a failed reply into a complete-looking one, so it becomes
            # an event named "error" (which the accumulator raises as in-band).
            self._event = "error"
            self._data.append(value)
            self._has_data = True
        # Any other field name is ignored, as the spec says.
        return None

    def _dispatch(self) -> ServerSentEvent:
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        event = ServerSentEvent(data, self._event or "message", self._last_id, self._retry)
        self._data = []
        self._has_data = False
        self._event = ""
        self._retry = None
        return event
