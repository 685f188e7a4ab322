"""The pure chunked-transfer decoder: framing, trailers, errors, and any split of the input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.chunked import ChunkedDecoder
from runner.errors import ProtocolError


def encode(parts: list[bytes], *, trailer: bytes = b"", ext: bytes = b"") -> bytes:
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in parts if p)
    return body + b"0\r\n" + trailer + b"\r\n"


def decode(*pieces: bytes) -> tuple[bytes, ChunkedDecoder]:
    decoder = ChunkedDecoder()
    out = b"".join(decoder.feed(p) for p in pieces)
    return out, decoder


def test_payload_and_end() -> None:
    out, decoder = decode(encode([b"data: a\n\n", b"data: b\n\n"]))
    assert out == b"data: a\n\ndata: b\n\n"
    assert decoder.done and decoder.rest == b""


def test_not_done_until_the_trailer_section_ends() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"3\r\nabc\r\n0\r\n") == b"abc"
    assert not decoder.done
    decoder.feed(b"\r\n")
    assert decoder.done


def test_extensions_trailers_uppercase_hex_and_bare_lf() -> None:
    body = b"A;name=value\r\n0123456789\r\n1 ; x\n!\r\n0\r\nExpires: never\r\nX-A: b\r\n\r\n"
    out, decoder = decode(body)
    assert out == b"0123456789!"
    assert decoder.done


def test_bytes_after_the_end_are_kept_apart() -> None:
    out, decoder = decode(encode([b"x"]) + b"HTTP/1.1 200 OK")
    assert out == b"x"
    assert decoder.rest == b"HTTP/1.1 200 OK"
    assert decoder.feed(b"more") == b""
    assert decoder.rest == b"HTTP/1.1 200 OKmore"


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nabc\r\n",  # not hex
        b"\r\nabc\r\n",  # empty size
        b"0x3\r\nabc\r\n",  # a prefix int() would accept
        b"-3\r\nabc\r\n",
        b"1_0\r\n",
        b"11111111111111111\r\n",  # 17 digits
        b"3\r\nabcXY",  # data not followed by CRLF
    ],
)
def test_malformed_bodies_raise(body: bytes) -> None:
    decoder = ChunkedDecoder()
    decoder.feed(body)
    assert decoder.error is not None
    with pytest.raises(ProtocolError, match="malformed chunked body"):
        decoder.feed(b"0\r\n\r\n")


def test_payload_before_a_fault_is_returned_then_the_error_raised() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"2\r\nok\r\n3\r\nabc!!") == b"okabc"
    assert isinstance(decoder.error, ProtocolError)
    assert "CRLF" in str(decoder.error)
    with pytest.raises(ProtocolError):
        decoder.feed(b"")


def test_an_endless_size_line_is_refused() -> None:
    decoder = ChunkedDecoder()
    with pytest.raises(ProtocolError, match="exceeded"):
        for _ in range(20):
            decoder.feed(b"1" * 4096)


def test_large_chunk_split_in_many_reads() -> None:
    payload = bytes(range(256)) * 1000
    body = encode([payload])
    pieces = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    out, decoder = decode(*pieces)
    assert out == payload and decoder.done


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=40), max_size=12),
    st.sampled_from([b"", b";a=b", b" ; q"]),
    st.sampled_from([b"", b"T: 1\r\n", b"A: x\r\nB: y\r\n"]),
    st.data(),
)
def test_any_split_of_the_input_gives_the_same_payload(
    parts: list[bytes], ext: bytes, trailer: bytes, data: st.DataObject
) -> None:
    body = encode(parts, ext=ext, trailer=trailer) + b"tail"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=10)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    out, decoder = decode(*pieces)
    assert out == b"".join(parts)
    assert decoder.done
    assert decoder.rest == b"tail"
