"""gRPC's wire format (PROTOCOL-HTTP2): message prefix round-trips (hypothesis), the bounded
message reader, bounded inflate (gzip bombs), grpc-timeout, grpc-message, status and
metadata."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moorage.core.errors import ERROR_CODE_METADATA as CORE_ERROR_CODE_METADATA
from moorage.core.http2 import grpcwire
from moorage.core.http2.grpcwire import (
    ERROR_CODE_METADATA,
    STATUS_CODES,
    STATUS_NAMES,
    MessageError,
    MessageReader,
    decode_metadata_value,
    format_timeout,
    inflate,
    message_length,
    message_prefix,
    metadata_key,
    metadata_value,
    parse_timeout,
    percent_decode,
    percent_encode,
    read_unary,
    status_name,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.binary(max_size=200)), max_size=8),
    st.lists(st.integers(1, 50), max_size=30),
)
def test_messages_round_trip_in_any_pieces(
    messages: list[tuple[bool, bytes]], cuts: list[int]
) -> None:
    body = b"".join(message_prefix(len(m), compressed=c) + m for c, m in messages)
    reader = MessageReader(max_length=200)
    got: list[tuple[bool, bytes]] = []
    pos = 0
    for size in [*cuts, len(body)]:
        got += reader.feed(body[pos : pos + size])
        pos += size
    reader.finish()
    assert got == messages


def test_reader_refuses_a_declared_length_over_the_limit_on_the_prefix() -> None:
    reader = MessageReader(max_length=100)
    with pytest.raises(MessageError, match=r"larger than max \(101 vs\. 100\)") as info:
        reader.feed(message_prefix(101))  # nothing of the body needed
    assert info.value.status == "RESOURCE_EXHAUSTED"
    reader = MessageReader(max_length=None)
    assert reader.feed(message_prefix(3) + b"ab") == [] and reader.declared == 3
    with pytest.raises(MessageError, match="inside a gRPC message"):
        reader.finish()
    with pytest.raises(MessageError, match="Compressed-Flag"):
        MessageReader(max_length=None).feed(b"\x02\x00\x00\x00\x00")


def test_read_unary() -> None:
    body = message_prefix(3) + b"abc"
    compressed, view = read_unary(body, max_length=3)
    assert (compressed, bytes(view)) == (False, b"abc")
    for bad, status in (
        (b"\x00\x00", "INTERNAL"),
        (message_prefix(3) + b"ab", "INTERNAL"),
        (body + b"x", "INTERNAL"),
        (b"\x02" + body[1:], "INTERNAL"),
        (message_prefix(4) + b"abcd", "RESOURCE_EXHAUSTED"),
    ):
        with pytest.raises(MessageError) as info:
            read_unary(bad, max_length=3)
        assert info.value.status == status


def test_message_length_reads_a_prefix_in_place() -> None:
    """What a server reading a body in place checks as soon as the prefix arrived."""
    body = bytearray(message_prefix(3, compressed=True) + b"ab")  # the rest still to come
    assert message_length(body, max_length=3) == 3
    assert message_length(body, max_length=None) == 3
    for bad, status in (
        (b"\x02" + body[1:], "INTERNAL"),
        (message_prefix(4), "RESOURCE_EXHAUSTED"),
    ):
        with pytest.raises(MessageError) as info:
            message_length(bad, max_length=3)
        assert info.value.status == status


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_inflate(encoding: str) -> None:
    data = b"payload " * 100
    packed = gzip.compress(data) if encoding == "gzip" else zlib.compress(data)
    assert inflate(packed, encoding, limit=len(data)) == data
    assert inflate(packed, encoding.encode(), limit=None) == data
    with pytest.raises(MessageError, match="larger than max") as info:
        inflate(packed, encoding, limit=len(data) - 1)
    assert info.value.status == "RESOURCE_EXHAUSTED"
    with pytest.raises(MessageError, match="truncated"):
        inflate(packed[:-10], encoding, limit=None)
    with pytest.raises(MessageError, match="cannot decompress") as info:
        inflate(b"not compressed at all", encoding, limit=None)
    assert info.value.status == "INTERNAL"


def test_unknown_encoding_is_unimplemented() -> None:
    with pytest.raises(MessageError, match="snappy") as info:
        inflate(b"x", "snappy", limit=None)
    assert info.value.status == "UNIMPLEMENTED"


def test_gzip_bomb_is_refused_with_bounded_memory() -> None:
    """1 GiB of zeros in ~1 MB of gzip: refused after limit + 1 bytes of output."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    chunk = bytes(1 << 20)
    bomb = b"".join([*(packer.compress(chunk) for _ in range(1024)), packer.flush()])
    assert len(bomb) < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(MessageError, match="larger than max"):
            inflate(bomb, "gzip", limit=4 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (b"1H", 3600.0),
        (b"2M", 120.0),
        (b"3S", 3.0),
        (b"250m", 0.25),
        (b"7u", 7e-6),
        (b"99999999n", 0.099999999),
    ],
)
def test_parse_timeout(text: bytes, seconds: float) -> None:
    assert parse_timeout(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", [b"", b"S", b"1", b"123456789S", b"1x", b"-1S", b"1.5S"])
def test_malformed_timeouts(bad: bytes) -> None:
    assert parse_timeout(bad) is None


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_format_timeout_round_trips_upwards(seconds: float) -> None:
    text = format_timeout(seconds)
    parsed = parse_timeout(text)
    assert parsed is not None and len(text) <= 9
    assert parsed >= min(seconds, 99_999_999) - 1e-9


@given(st.text())
def test_grpc_message_round_trip(message: str) -> None:
    encoded = percent_encode(message)
    assert all(0x20 <= c <= 0x7E for c in encoded)
    assert percent_decode(encoded) == message.encode("utf-8", "replace").decode("utf-8")


def test_grpc_message_examples() -> None:
    assert percent_encode("café % gone") == b"caf%C3%A9 %25 gone"
    assert percent_decode(b"caf%C3%A9 %25 gone") == "café % gone"
    assert percent_decode("100%") == "100%"  # malformed escapes are kept


def test_status_names() -> None:
    assert len(STATUS_NAMES) == 17 and STATUS_CODES["RESOURCE_EXHAUSTED"] == 8
    assert status_name(b"8") == "RESOURCE_EXHAUSTED" and status_name("16") == "UNAUTHENTICATED"
    assert status_name(b"17") == "UNKNOWN" and status_name(b"") == "UNKNOWN"


def test_metadata() -> None:
    assert metadata_key("X-Team") == b"x-team"
    for bad in ("bad key", "", ":path", "content-type", "grpc-status", "é"):
        assert metadata_key(bad) is None
    assert metadata_value(b"x-a", "ok value") == b"ok value"
    assert metadata_value(b"x-a", "line\nbreak") is None
    assert metadata_value(b"x-a", "é") is None
    # the server's relaxed check: UTF-8 passes, what no HTTP/2 field value may hold does not
    assert metadata_value(b"x-a", "é", printable=False) == "é".encode()
    for bad in ("nul\x00", "cr\r", "lf\n"):
        assert metadata_value(b"x-a", bad, printable=False) is None
    packed = metadata_value(b"x-blob-bin", b"\x00\x01\xff")
    assert packed == b"AAH/"
    assert decode_metadata_value(b"x-blob-bin", b"AAE") == b"\x00\x01"
    assert decode_metadata_value(b"x-blob-bin", b"!!") == b"!!"
    assert decode_metadata_value(b"x-a", b"AAE") == b"AAE"
    assert ERROR_CODE_METADATA == CORE_ERROR_CODE_METADATA == "moorage-error-code"


def test_no_limit_still_stops_at_what_protobuf_can_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """``limit=None`` (a client with ``max_receive_message_length=-1``) is bounded by
    :data:`MAX_MESSAGE`: a bomb cannot inflate past it (lowered here to keep the test small)."""
    monkeypatch.setattr(grpcwire, "MAX_MESSAGE", 1 << 20)
    bomb = gzip.compress(bytes(4 << 20))
    with pytest.raises(MessageError, match="larger than max"):
        inflate(bomb, "gzip", limit=None)
    assert inflate(gzip.compress(bytes(1 << 20)), "gzip", limit=None) == bytes(1 << 20)
