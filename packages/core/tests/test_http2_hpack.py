"""HPACK (RFC 7541): the decoder against the ``hpack`` package's encoder and our encoder against
its decoder (hypothesis round-trips), and conformance cases modelled on h2spec's ``hpack``
group: integer and string edge cases, Huffman padding and EOS, index 0 and out of range, table
size updates (above the limit, after a field), eviction, and the header list / block bounds.
"""

from __future__ import annotations

from typing import Any

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moorage.core.http2.frames import ConnectionFailure, ErrorCode
from moorage.core.http2.hpack import (
    STATIC_TABLE,
    HeaderDecoder,
    HeaderEncoder,
    HeaderListTooLarge,
    HPACKError,
    encode_integer,
    header_field,
    header_list_size,
    string_literal,
)


def test_static_table_is_rfc7541s() -> None:
    assert tuple(hpack.table.HeaderTable.STATIC_TABLE) == STATIC_TABLE


# ----------------------------------------------------------------------------- round trips
@given(st.text(st.sampled_from("abcxyz-_:"), min_size=1), st.binary(max_size=300))
def test_literals_decode_with_hpack(name: str, value: bytes) -> None:
    decoded = hpack.Decoder().decode(header_field(name.encode(), value), raw=True)
    assert decoded == [(name.encode(), value)]
    assert HeaderDecoder().decode(header_field(name.encode(), value)) == ((name.encode(), value),)


_names = st.sampled_from(
    [":status", "content-type", "grpc-status", "grpc-message", "x-a", "x-long-name-here", "date"]
)
_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
_header = st.tuples(_names, _values, st.booleans())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(_header, max_size=6), min_size=1, max_size=12),
    st.sampled_from([4096, 256, 64]),
    st.booleans(),
)
def test_decoder_follows_hpack_encoder(
    blocks: list[list[Any]], table_size: int, huffman: bool
) -> None:
    """Blocks from hpack's stateful encoder (indexing, Huffman, evictions, a table size
    update) decode to the same headers, however often a block's bytes repeat."""
    encoder = hpack.Encoder()
    encoder.header_table_size = table_size
    decoder = HeaderDecoder()
    for block in [*blocks, *blocks]:
        data = encoder.encode([(n, v, sensitive) for n, v, sensitive in block], huffman=huffman)
        assert decoder.decode(data) == tuple((n.encode(), v.encode()) for n, v, _ in block)


_fields = st.tuples(
    st.sampled_from([b":path", b"user-agent", b"x-a", b"x-b", b"grpc-timeout", b"te"]),
    st.binary(max_size=40).map(lambda b: bytes(c % 94 + 33 for c in b)),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(_fields, max_size=6).map(tuple), min_size=1, max_size=10),
    st.lists(st.sampled_from([None, None, None, 4096, 300, 100, 0]), min_size=20, max_size=20),
)
def test_encoder_is_followed_by_hpack_decoder(
    blocks: list[tuple[Any, ...]], sizes: list[int | None]
) -> None:
    """Our encoder's model of the peer's table (insertions, evictions, size updates from
    SETTINGS_HEADER_TABLE_SIZE) matches hpack's decoder and ours, block after block."""
    encoder = HeaderEncoder()
    theirs = hpack.Decoder()
    ours = HeaderDecoder()
    for i, fields in enumerate([*blocks, *blocks]):
        size = sizes[i % len(sizes)]
        if size is not None:
            encoder.resize(size)
            theirs.max_allowed_table_size = min(theirs.max_allowed_table_size, size)
        block = encoder.encode(fields)
        assert theirs.decode(block, raw=True) == list(fields)
        assert ours.decode(block) == fields
        assert HeaderEncoder().encode(fields) == HeaderEncoder().encode(fields)


@given(st.integers(0, 2**32), st.integers(1, 8))
def test_integers_round_trip(value: int, bits: int) -> None:
    """Section 5.1 integers at every prefix size, through a literal's name length."""
    encoded = encode_integer(value, bits, 0)
    assert encoded[0] < (1 << bits)
    if bits == 7 and value < 5000:
        name = b"n" * value
        assert HeaderDecoder().decode(b"\x00" + string_literal(name) + b"\x00") == ((name, b""),)


# ----------------------------------------------------------------------------- conformance
def _compression_error(block: bytes, decoder: HeaderDecoder | None = None) -> HPACKError:
    with pytest.raises(HPACKError) as info:
        (decoder or HeaderDecoder()).decode(block)
    assert isinstance(info.value, ConnectionFailure)
    return info.value


@pytest.mark.parametrize(
    ("block", "what"),
    [
        (b"\x80", "index 0 (section 6.1)"),
        (b"\xbe", "index 62, past an empty dynamic table (section 2.3.3)"),
        (b"\xff\x80\x80\x80\x80\x80\x01", "index far past the table"),
        (b"\x40\x01", "literal name truncated"),
        (b"\x00\x05ab", "string longer than the block"),
        (b"\x00\x01a\x7f", "value length truncated (integer continuation missing)"),
        (b"\x0f", "name index prefix all ones, no continuation"),
        (b"\x00\x7f" + b"\xff" * 8 + b"\x01", "integer over 2^35"),
        (b"\x00\x81\xff\x00", "Huffman string ending with EOS bits over 7 (section 5.2)"),
        (b"\x00\x81\x00\x00", "Huffman padding not all ones (section 5.2)"),
        (b"\x00\x84\xff\xff\xff\xff\x00", "Huffman EOS symbol in the string (section 5.2)"),
        (b"\x3f\xe2\x1f", "table size update above SETTINGS_HEADER_TABLE_SIZE (section 6.3)"),
        (b"\x82\x20", "table size update after a header field (section 4.2)"),
    ],
)
def test_malformed_blocks_are_compression_errors(block: bytes, what: str) -> None:
    assert _compression_error(block).code == ErrorCode.COMPRESSION_ERROR, what


def test_table_size_updates_and_eviction() -> None:
    decoder = HeaderDecoder()
    decoder.decode(b"\x40\x01a\x01b")  # a: b indexed at 62
    assert decoder.decode(b"\xbe") == ((b"a", b"b"),)
    assert decoder.table_size == 1 + 1 + 32
    decoder.decode(b"\x20")  # size 0: everything evicted
    assert decoder.table_size == 0 and decoder.max_table_size == 0
    _compression_error(b"\xbe", decoder)
    decoder.decode(b"\x3f\xe1\x1f\x40\x01c\x01d")  # back to 4096 in the block's first byte
    assert decoder.decode(b"\xbe") == ((b"c", b"d"),)
    # an entry larger than the table empties it (section 4.4)
    decoder.decode(b"\x3f\x11\x40\x01e\x01f")  # table of 48 (31 + 0x11), e: f is 34
    assert decoder.decode(b"\x3f\x03") == ()  # size 34
    decoder.decode(b"\x40\x01g\x02hh")  # 35 bytes > 34
    assert decoder.table_size == 0


def test_header_list_over_the_limit_stops_decoding() -> None:
    decoder = HeaderDecoder(max_header_list_size=100)
    fields = ((b"x-a", b"v" * 30),)
    assert decoder.decode(header_field(*fields[0])) == fields
    assert header_list_size(fields) == 65
    with pytest.raises(HeaderListTooLarge, match="header list over 100"):
        decoder.decode(header_field(*fields[0]) * 2)
    # an indexed entry repeated: a few bytes that would decode to a huge list
    indexed = HeaderDecoder(max_header_list_size=10_000)
    indexed.decode(b"\x40\x01a" + string_literal(b"x" * 3000))
    with pytest.raises(HeaderListTooLarge):
        indexed.decode(b"\xbe" * 4)


def test_oversized_block_is_refused_before_decoding() -> None:
    decoder = HeaderDecoder(max_header_list_size=1000, max_block_size=50)
    with pytest.raises(HeaderListTooLarge) as info:
        decoder.decode(b"\x80" * 51)  # would be a COMPRESSION_ERROR if it were decoded
    assert info.value.code == ErrorCode.ENHANCE_YOUR_CALM


def test_repeated_blocks_are_remembered_until_the_table_changes() -> None:
    encoder = hpack.Encoder()
    decoder = HeaderDecoder()
    first = encoder.encode([("x-a", "1")])
    again = encoder.encode([("x-a", "1")])
    assert decoder.decode(first) == ((b"x-a", b"1"),)
    assert decoder.decode(again) is decoder.decode(again)  # remembered
    decoder.decode(encoder.encode([("x-b", "2")]))  # an insertion: indexes shift
    assert decoder.decode(encoder.encode([("x-a", "1")])) == ((b"x-a", b"1"),)
