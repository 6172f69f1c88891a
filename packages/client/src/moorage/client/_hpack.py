"""HPACK (RFC 7541) for the native gRPC transport: a response decoder and a request encoder.

**Decoding** keeps the dynamic table of the connection (RFC 7541 §2.3) and remembers the
result of every header block that left the table unchanged, keyed by the block's bytes. A
gRPC server indexes its response headers and trailers on the first call, so from then on a
block is a few index bytes whose decoded list only changes when the table does (the memory
is dropped on every table change): the steady state costs one dict lookup per block.
Huffman-coded strings (§5.2) are decoded by the ``hpack`` package.

**Encoding** indexes the headers that repeat on every call of a client (``:path``,
``:authority``, ``content-type``, ``te``, ``user-agent``, ``grpc-timeout``, the client's own
metadata): the first block carries them as literals with incremental indexing (§6.2.1), the
following ones as one index byte each, so the server decodes a few bytes instead of parsing
literals. The encoder follows the server's table exactly (insertions, evictions at its
SETTINGS_HEADER_TABLE_SIZE, size updates) and remembers the bytes of an all-indexed block
until the table changes. Per-call metadata goes as literals without indexing (:func:`literal`).
Blocks must reach the wire in the order they were encoded (the connection queues them so).
"""

from __future__ import annotations

from collections import deque

import hpack

__all__ = ["STATIC_TABLE", "HPACKError", "HeaderDecoder", "HeaderEncoder", "literal"]

Header = tuple[str, str]

#: RFC 7541 Appendix A: index 1..61.
STATIC_TABLE: tuple[Header, ...] = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
    (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"), (":status", "200"),
    (":status", "204"), (":status", "206"), (":status", "304"), (":status", "400"),
    (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""),
    ("accept", ""), ("access-control-allow-origin", ""), ("age", ""), ("allow", ""),
    ("authorization", ""), ("cache-control", ""), ("content-disposition", ""),
    ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""),
    ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""),
    ("max-forwards", ""), ("proxy-authenticate", ""), ("proxy-authorization", ""),
    ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""), ("server", ""),
    ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
    ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
)  # fmt: skip
_STATIC_NAMES: dict[str, int] = {}
_STATIC_FIELDS: dict[tuple[bytes, bytes], int] = {}
for _index, (_name, _value) in enumerate(STATIC_TABLE, 1):
    _STATIC_NAMES.setdefault(_name, _index)
    if _value:
        _STATIC_FIELDS[(_name.encode(), _value.encode())] = _index

_ENTRY_OVERHEAD = 32  # RFC 7541 §4.1
_CACHE_SIZE = 256


class HPACKError(Exception):
    """A header block that cannot be decoded (a connection error: COMPRESSION_ERROR)."""


def _integer(data: bytes, pos: int, bits: int) -> tuple[int, int]:
    """The integer with an N-bit prefix at ``data[pos]`` (RFC 7541 §5.1) and the next pos."""
    mask = (1 << bits) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data) or shift > 28:
            raise HPACKError("truncated or oversized integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


# A stateless decoder of one literal-without-indexing field: fed the original bytes of a
# Huffman-coded string behind a fixed one-byte name, it hands back the string decoded.
_HUFFMAN = hpack.Decoder(max_header_list_size=1 << 30)


def _string(data: bytes, pos: int) -> tuple[str, int]:
    huffman = data[pos] & 0x80
    length, start = _integer(data, pos, 7)
    end = start + length
    if end > len(data):
        raise HPACKError("truncated string literal")
    if not huffman:
        return data[start:end].decode("latin-1"), end
    try:
        decoded = list(_HUFFMAN.decode(b"\x00\x01x" + data[pos:end], raw=True))
    except hpack.HPACKError as exc:
        raise HPACKError(f"invalid Huffman string: {exc}") from exc
    return bytes(decoded[0][1]).decode("latin-1"), end


class HeaderDecoder:
    """One connection's HPACK decoder (names and values as ``str``, latin-1)."""

    def __init__(self, max_table_size: int = 4096) -> None:
        self._limit = max_table_size  # our SETTINGS_HEADER_TABLE_SIZE
        self._max = max_table_size  # the encoder's current choice (§6.3)
        self._size = 0
        self._table: deque[Header] = deque()  # newest first: index 62 is _table[0]
        self._known: dict[bytes, tuple[Header, ...]] = {}

    def decode(self, block: bytes) -> tuple[Header, ...]:
        """The header list of one complete header block."""
        known = self._known.get(block)
        if known is not None:
            return known
        headers, changed = self._decode(block)
        if changed:
            self._known.clear()
        elif len(self._known) < _CACHE_SIZE:
            self._known[block] = headers
        return headers

    def _entry(self, index: int) -> Header:
        if 0 < index <= 61:
            return STATIC_TABLE[index - 1]
        if 61 < index <= 61 + len(self._table):
            return self._table[index - 62]
        raise HPACKError(f"header index {index} is not in the table")

    def _add(self, header: Header) -> None:
        size = len(header[0]) + len(header[1]) + _ENTRY_OVERHEAD
        if size > self._max:  # §4.4: an entry larger than the table empties it
            self._table.clear()
            self._size = 0
            return
        self._table.appendleft(header)
        self._size += size
        self._evict()

    def _evict(self) -> None:
        while self._size > self._max:
            name, value = self._table.pop()
            self._size -= len(name) + len(value) + _ENTRY_OVERHEAD

    def _decode(self, block: bytes) -> tuple[tuple[Header, ...], bool]:
        headers: list[Header] = []
        changed = False
        pos, end = 0, len(block)
        while pos < end:
            byte = block[pos]
            if byte & 0x80:  # indexed field (§6.1)
                index, pos = _integer(block, pos, 7)
                headers.append(self._entry(index))
                continue
            if byte & 0x40:  # literal with incremental indexing (§6.2.1)
                index, pos = _integer(block, pos, 6)
                indexing = True
            elif byte & 0x20:  # dynamic table size update (§6.3)
                size, pos = _integer(block, pos, 5)
                if size > self._limit:
                    raise HPACKError(f"table size {size} above the limit {self._limit}")
                self._max = size
                self._evict()
                changed = True
                continue
            else:  # literal without indexing / never indexed (§6.2.2, §6.2.3)
                index, pos = _integer(block, pos, 4)
                indexing = False
            if index:
                name = self._entry(index)[0]
            else:
                name, pos = _string(block, pos)
            value, pos = _string(block, pos)
            header = (name, value)
            headers.append(header)
            if indexing:
                self._add(header)
                changed = True
        return tuple(headers), changed


def _encode_integer(value: int, bits: int, flags: int) -> bytes:
    mask = (1 << bits) - 1
    if value < mask:
        return bytes((flags | value,))
    out = bytearray((flags | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: str | bytes, value: str | bytes) -> bytes:
    """One header as a literal without indexing (§6.2.2), plain (not Huffman) strings."""
    raw_name = name.encode("latin-1") if isinstance(name, str) else name
    raw_value = value.encode("latin-1") if isinstance(value, str) else value
    index = _STATIC_NAMES.get(raw_name.decode("latin-1"), 0)
    out = _encode_integer(index, 4, 0x00)
    if not index:
        out += _encode_integer(len(raw_name), 7, 0x00) + raw_name
    return out + _encode_integer(len(raw_value), 7, 0x00) + raw_value


Field = tuple[bytes, bytes]


class HeaderEncoder:
    """One connection's HPACK encoder for request headers that repeat (see the module doc)."""

    def __init__(self, max_table_size: int = 4096) -> None:
        self._max = max_table_size
        self._size = 0
        self._inserted = 0  # insertions so far: entry n has index 62 + inserted - 1 - n
        self._where: dict[Field, int] = {}
        self._order: deque[tuple[Field, int]] = deque()  # oldest first, with entry sizes
        self._blocks: dict[tuple[Field, ...], tuple[int, bytes]] = {}
        self._update: int | None = None

    def resize(self, limit: int) -> None:
        """Apply the server's SETTINGS_HEADER_TABLE_SIZE (only shrinking matters)."""
        if limit >= self._max:
            return
        self._max = limit
        self._evict()
        self._update = limit
        self._blocks.clear()

    def encode(self, fields: tuple[Field, ...]) -> bytes:
        """The header block for ``fields`` (names lower-case), updating the table."""
        known = self._blocks.get(fields)
        if known is not None and known[0] == self._inserted and self._update is None:
            return known[1]
        out = []
        if self._update is not None:
            out.append(_encode_integer(self._update, 5, 0x20))
            self._update = None
        before = self._inserted
        for name, value in fields:
            out.append(self._field(name, value))
        block = b"".join(out)
        if self._inserted == before:  # all indexed: the same bytes until the table changes
            if len(self._blocks) >= _CACHE_SIZE:
                self._blocks.clear()
            self._blocks[fields] = (before, block)
        return block

    def _field(self, name: bytes, value: bytes) -> bytes:
        key = (name, value)
        static = _STATIC_FIELDS.get(key)
        if static is not None:
            return _encode_integer(static, 7, 0x80)
        number = self._where.get(key)
        if number is not None:
            return _encode_integer(62 + self._inserted - 1 - number, 7, 0x80)
        size = len(name) + len(value) + _ENTRY_OVERHEAD
        if size > self._max:
            return literal(name, value)
        index = _STATIC_NAMES.get(name.decode("latin-1"), 0)
        out = _encode_integer(index, 6, 0x40)
        if not index:
            out += _encode_integer(len(name), 7, 0x00) + name
        out += _encode_integer(len(value), 7, 0x00) + value
        self._where[key] = self._inserted
        self._inserted += 1
        self._order.append((key, size))
        self._size += size
        self._evict()
        return out

    def _evict(self) -> None:
        while self._size > self._max:
            key, size = self._order.popleft()
            del self._where[key]
            self._size -= size
