"""A pure, incremental decoder of HTTP/1.1 chunked transfer coding (RFC 9112 §7.1).

Bytes of a chunked body in, payload bytes out, in pieces of any size. It exists
for speed: a streamed reply is one chunk per event, and one socket read of a
fast stream holds hundreds of them. Unwrapping them here, in one pass over
each read, costs a fraction of reading them one chunk at a time through the
HTTP library, and the SSE decoder then gets one feed per read.

* ``size[;extensions] CRLF data CRLF`` repeated, then ``0 CRLF``, optional
  trailer fields and a final ``CRLF``; a bare ``LF`` is accepted as a line end
  in size and trailer lines (as http.client and urllib3 accept it);
* a size is 1-16 hex digits, optionally followed by spaces or tabs and then
  extensions after ``;`` (ignored); anything else, or data not followed by
  ``CRLF``, is malformed: :meth:`ChunkedDecoder.feed` returns the payload that
  came before the fault and keeps a :class:`~runner.errors.ProtocolError` in
  :attr:`ChunkedDecoder.error`, raised by any later call (so a caller keeps
  every byte of payload that arrived intact);
* :attr:`ChunkedDecoder.done` turns true once the last chunk and its trailer
  section are read; bytes after that are left in :attr:`ChunkedDecoder.rest`.

Size and trailer lines are capped at 64 KiB each, so a peer cannot make the
buffer grow without sending payload.
"""

from __future__ import annotations

from runner.errors import ProtocolError

__all__ = ["ChunkedDecoder"]

_MAX_LINE = 64 * 1024
_HEX = b"0123456789abcdefABCDEF"

# States.
_SIZE = 0  # reading a size line
_DATA = 1  # inside a chunk's data
_DATA_END = 2  # the CRLF after a chunk's data
_TRAILER = 3  # trailer lines until an empty one
_DONE = 4


def _size(line: bytes) -> int:
    """The chunk size of a size line (without its line end)."""
    digits = line.split(b";", 1)[0].rstrip(b" \t")
    if not 0 < len(digits) <= 16 or digits.strip(_HEX):
        raise ProtocolError(f"malformed chunked body: bad chunk size line {line[:40]!r}")
    return int(digits, 16)


class ChunkedDecoder:
    """Incremental decoder; see the module docstring. Not thread-safe."""

    __slots__ = ("_buf", "_left", "_state", "error", "rest")

    def __init__(self) -> None:
        self._buf = b""  # unparsed bytes of a size, data-end or trailer line
        self._left = 0  # data bytes still expected in the current chunk
        self._state = _SIZE
        self.rest = b""  # bytes received after the end of the body
        self.error: ProtocolError | None = None  # the body is malformed

    @property
    def done(self) -> bool:
        """True once the last chunk and the trailer section have been read."""
        return self._state == _DONE

    def feed(self, data: bytes) -> bytes:
        """Take the next bytes of the body; return the payload they carry."""
        if self.error is not None:
            raise self.error
        if self._state == _DONE:
            self.rest += data
            return b""
        if self._buf:
            data = self._buf + data
            self._buf = b""
        out: list[bytes] = []
        pos = 0
        end = len(data)
        state = self._state
        left = self._left
        try:
            # One pass per chunk in the usual case: size line, data, CRLF.
            while pos < end:
                if state == _SIZE:
                    nl = data.find(b"\n", pos)
                    if nl < 0:
                        break
                    line = data[pos : nl - 1 if nl > pos and data[nl - 1] == 13 else nl]
                    pos = nl + 1
                    if 0 < len(line) <= 16 and not line.strip(_HEX):
                        left = int(line, 16)
                    else:
                        left = _size(line)  # extensions, spaces, or an error
                    if not left:
                        state = _TRAILER
                        continue
                    state = _DATA
                if state == _DATA:
                    stop = pos + left
                    if stop > end:
                        out.append(data[pos:])
                        left -= end - pos
                        pos = end
                        break
                    out.append(data[pos:stop])
                    pos = stop
                    left = 0
                    state = _DATA_END
                if state == _DATA_END:
                    if end - pos < 2:
                        break
                    if data[pos : pos + 2] != b"\r\n":
                        raise ProtocolError(
                            "malformed chunked body: chunk data not followed by CRLF"
                        )
                    pos += 2
                    state = _SIZE
                    continue
                # _TRAILER: fields until an empty line.
                nl = data.find(b"\n", pos)
                if nl < 0:
                    break
                blank = nl == pos or (nl == pos + 1 and data[pos] == 13)
                pos = nl + 1
                if blank:
                    state = _DONE
                    self.rest = data[pos:]
                    pos = end
        except ProtocolError as exc:
            self.error = exc
            return b"".join(out)
        if pos < end:
            self._buf = data[pos:]
            if len(self._buf) > _MAX_LINE:
                self.error = ProtocolError(
                    f"malformed chunked body: a line exceeded {_MAX_LINE} bytes"
                )
        self._state = state
        self._left = left
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)
