"""HPACK (RFC 7541): one bounded header decoder, a request encoder that indexes what repeats,
and stateless literal encodings.

**Decoding** (:class:`HeaderDecoder`) keeps a connection's dynamic table (section 2.3) and
remembers the result of every header block that left the table unchanged, keyed by the
block's bytes: a peer that indexes its repeating headers sends blocks of a few index bytes
whose decoded list only changes when the table does (the memory is dropped on every table
change), so the steady state costs one dict lookup per block. Names and values are ``bytes``.
It bounds what a peer can make it hold: a block over ``max_block_size`` is refused before
decoding, a header list over ``max_header_list_size`` (counted as section 4.1 counts entries)
stops decoding. Huffman-coded strings (section 5.2) go through the ``hpack`` package's
decoder table. This decoder was measured against ``hpack.Decoder`` behind the same block
cache and kept: it decodes a block that misses the cache several times faster, except for
Huffman-heavy literal blocks, where the two are close.

**Encoding**: :class:`HeaderEncoder` indexes the headers a client repeats on every call: the
first block carries them as literals with incremental indexing (section 6.2.1), the following
ones as one index byte each. It follows the peer's table exactly (insertions, evictions at its
SETTINGS_HEADER_TABLE_SIZE, size updates) and remembers the bytes of an all-indexed block until
the table changes. Blocks must reach the wire in the order they were encoded. The stateless
:func:`header_field` encodes a literal without indexing (section 6.2.2): what changes per call
(and all a server sends: it never touches the peer's table, :data:`TABLE_SIZE_ZERO`).
"""

from __future__ import annotations

from collections import deque

try:
    from hpack.exceptions import HPACKDecodingError
    from hpack.huffman_table import decode_huffman
except ImportError as exc:  # pragma: no cover - the extra is part of every test environment
    raise ImportError(
        "moorage.core.http2 needs the hpack package: pip install 'moorage-core[grpc]'"
    ) from exc

from moorage.core.http2.frames import ConnectionFailure, ErrorCode

__all__ = [
    "ENTRY_OVERHEAD",
    "STATIC_TABLE",
    "STATUS_200",
    "TABLE_SIZE_ZERO",
    "Field",
    "HPACKError",
    "HeaderDecoder",
    "HeaderEncoder",
    "HeaderListTooLarge",
    "Headers",
    "encode_integer",
    "header_field",
    "header_list_size",
    "string_literal",
]

Field = tuple[bytes, bytes]
Headers = tuple[Field, ...]

#: Appendix A: index 1..61.
STATIC_TABLE: Headers = tuple(
    (name.encode(), value.encode())
    for name, value in (
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
    )
)  # fmt: skip
_STATIC_NAMES: dict[bytes, int] = {}
_STATIC_FIELDS: dict[Field, int] = {}
for _index, (_name, _value) in enumerate(STATIC_TABLE, 1):
    _STATIC_NAMES.setdefault(_name, _index)
    if _value:
        _STATIC_FIELDS[(_name, _value)] = _index
_STATIC_COUNT = len(STATIC_TABLE)

#: What an entry costs beyond its name and value (section 4.1).
ENTRY_OVERHEAD = 32
#: Decoded blocks (of at most _CACHED_BLOCK bytes) and encoded blocks remembered.
_CACHE_SIZE = 256
_CACHED_BLOCK = 1024


class HPACKError(ConnectionFailure):
    """A header block that cannot be decoded: a connection error (COMPRESSION_ERROR), since
    the peer's encoder and this decoder no longer agree on the table."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.COMPRESSION_ERROR) -> None:
        super().__init__(code, message)


class HeaderListTooLarge(HPACKError):
    """A header block over ``max_block_size`` (ENHANCE_YOUR_CALM, refused before decoding) or
    whose header list went over ``max_header_list_size`` (COMPRESSION_ERROR: decoding stopped
    part way, the table is lost)."""


def header_list_size(headers: Headers) -> int:
    """The size of a header list as SETTINGS_MAX_HEADER_LIST_SIZE counts it (section 6.5.2)."""
    return sum(len(name) + len(value) + ENTRY_OVERHEAD for name, value in headers)


# ----------------------------------------------------------------------------- decoding
def _integer(data: bytes, pos: int, bits: int) -> tuple[int, int]:
    """The integer with a ``bits``-bit prefix at ``data[pos]`` (section 5.1), the next pos."""
    mask = (1 << bits) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise HPACKError("truncated integer")
        if shift > 28:  # more than 2^35: no length or index of a real block
            raise HPACKError("integer too large")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    """A string literal (section 5.2) at ``pos``, the next pos."""
    if pos >= len(data):
        raise HPACKError("truncated header field")
    huffman = data[pos] & 0x80
    length, start = _integer(data, pos, 7)
    end = start + length
    if end > len(data):
        raise HPACKError("truncated string literal")
    if not huffman:
        return data[start:end], end
    try:
        return decode_huffman(data[start:end]), end
    except HPACKDecodingError as exc:
        raise HPACKError(f"invalid Huffman string: {exc}") from None


class HeaderDecoder:
    """One connection's HPACK decoder; see the module doc.

    ``max_table_size`` is this side's SETTINGS_HEADER_TABLE_SIZE (the largest table the peer
    may ask for). ``max_header_list_size`` bounds a decoded list: a hard limit against memory
    exhaustion, above any application limit (which should answer with an HTTP or gRPC error
    and keep the connection). ``max_block_size`` bounds an encoded block (default: four times
    the list size, a bound no legitimate encoding of such a list reaches).
    """

    __slots__ = (
        "_known",
        "_limit",
        "_max",
        "_size",
        "_table",
        "max_block_size",
        "max_header_list_size",
    )

    def __init__(
        self,
        *,
        max_table_size: int = 4096,
        max_header_list_size: int = 1 << 20,
        max_block_size: int | None = None,
    ) -> None:
        self._limit = max_table_size  # our SETTINGS_HEADER_TABLE_SIZE
        self._max = max_table_size  # the encoder's current choice (section 6.3)
        self._size = 0
        self._table: deque[Field] = deque()  # newest first: index 62 is _table[0]
        self._known: dict[bytes, Headers] = {}
        self.max_header_list_size = max_header_list_size
        self.max_block_size = 4 * max_header_list_size if max_block_size is None else max_block_size

    @property
    def table_size(self) -> int:
        """The dynamic table's size (section 4.1) now."""
        return self._size

    @property
    def max_table_size(self) -> int:
        """The table size the peer's encoder chose last (at most our setting)."""
        return self._max

    def decode(self, block: bytes) -> Headers:
        """The header list of one complete header block (HEADERS and its CONTINUATIONs)."""
        known = self._known.get(block)
        if known is not None:
            return known
        if len(block) > self.max_block_size:
            raise HeaderListTooLarge(
                f"header block of {len(block)} bytes over {self.max_block_size}",
                ErrorCode.ENHANCE_YOUR_CALM,
            )
        headers, changed = self._decode(block)
        if changed:
            self._known.clear()
        elif len(block) <= _CACHED_BLOCK:
            if len(self._known) >= _CACHE_SIZE:
                self._known.clear()
            self._known[block] = headers
        return headers

    def _entry(self, index: int) -> Field:
        if 0 < index <= _STATIC_COUNT:
            return STATIC_TABLE[index - 1]
        if _STATIC_COUNT < index <= _STATIC_COUNT + len(self._table):
            return self._table[index - _STATIC_COUNT - 1]
        raise HPACKError(f"header index {index} is not in the table")

    def _add(self, field: Field) -> None:
        size = len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
        if size > self._max:  # section 4.4: an entry larger than the table empties it
            self._table.clear()
            self._size = 0
            return
        self._table.appendleft(field)
        self._size += size
        self._evict()

    def _evict(self) -> None:
        while self._size > self._max:
            name, value = self._table.pop()
            self._size -= len(name) + len(value) + ENTRY_OVERHEAD

    def _decode(self, block: bytes) -> tuple[Headers, bool]:
        headers: list[Field] = []
        changed = False
        listed = 0
        limit = self.max_header_list_size
        pos, end = 0, len(block)
        while pos < end:
            byte = block[pos]
            if byte & 0x80:  # indexed field (section 6.1)
                index, pos = _integer(block, pos, 7)
                field = self._entry(index)
            elif byte & 0x40:  # literal with incremental indexing (section 6.2.1)
                index, pos = _integer(block, pos, 6)
                name, value, pos = self._literal(block, pos, index)
                field = (name, value)
                self._add(field)
                changed = True
            elif byte & 0x20:  # dynamic table size update (section 6.3)
                if headers:
                    raise HPACKError("table size update after a header field (section 4.2)")
                size, pos = _integer(block, pos, 5)
                if size > self._limit:
                    raise HPACKError(f"table size {size} above the limit {self._limit}")
                self._max = size
                self._evict()
                changed = True
                continue
            else:  # literal without indexing / never indexed (sections 6.2.2, 6.2.3)
                index, pos = _integer(block, pos, 4)
                name, value, pos = self._literal(block, pos, index)
                field = (name, value)
            listed += len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
            if listed > limit:
                raise HeaderListTooLarge(f"header list over {limit} bytes")
            headers.append(field)
        return tuple(headers), changed

    def _literal(self, block: bytes, pos: int, index: int) -> tuple[bytes, bytes, int]:
        if index:
            name = self._entry(index)[0]
        else:
            name, pos = _string(block, pos)
        value, pos = _string(block, pos)
        return name, value, pos


# ----------------------------------------------------------------------------- encoding
def encode_integer(value: int, bits: int, flags: int) -> bytes:
    """``value`` with a ``bits``-bit prefix, ``flags`` in the first byte's high bits (5.1)."""
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


def string_literal(data: bytes) -> bytes:
    """A string literal without Huffman coding (section 5.2)."""
    return encode_integer(len(data), 7, 0) + data


def header_field(name: bytes, value: bytes) -> bytes:
    """One header as a literal field without indexing (section 6.2.2), the name by its static
    table index when it has one: the peer's dynamic table is never touched, so the encoding of
    a field never depends on what was sent before."""
    index = _STATIC_NAMES.get(name)
    if index is not None:
        return encode_integer(index, 4, 0) + string_literal(value)
    return b"\x00" + string_literal(name) + string_literal(value)


#: ``:status: 200`` is entry 8 of the static table: one byte, fully indexed.
STATUS_200 = b"\x88"
#: A dynamic table size update to 0 (section 6.3), for the start of a connection's first header
#: block from an encoder that never uses the table, whatever the peer's SETTINGS_HEADER_TABLE_SIZE.
TABLE_SIZE_ZERO = b"\x20"


class HeaderEncoder:
    """One connection's HPACK encoder for headers that repeat (see the module doc)."""

    __slots__ = ("_blocks", "_inserted", "_max", "_order", "_size", "_update", "_where")

    def __init__(self, max_table_size: int = 4096) -> None:
        self._max = max_table_size
        self._size = 0
        self._inserted = 0  # insertions so far: entry n has index 62 + inserted - 1 - n
        self._where: dict[Field, int] = {}
        self._order: deque[tuple[Field, int]] = deque()  # oldest first, with entry sizes
        self._blocks: dict[Headers, tuple[int, bytes]] = {}
        self._update: int | None = None

    def resize(self, limit: int) -> None:
        """Apply the peer's SETTINGS_HEADER_TABLE_SIZE (only shrinking matters)."""
        if limit >= self._max:
            return
        self._max = limit
        self._evict()
        self._update = limit
        self._blocks.clear()

    def encode(self, fields: Headers) -> bytes:
        """The header block for ``fields`` (names lower-case), updating the table."""
        known = self._blocks.get(fields)
        if known is not None and known[0] == self._inserted and self._update is None:
            return known[1]
        out = []
        if self._update is not None:
            out.append(encode_integer(self._update, 5, 0x20))
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
            return encode_integer(static, 7, 0x80)
        number = self._where.get(key)
        if number is not None:
            return encode_integer(_STATIC_COUNT + self._inserted - number, 7, 0x80)
        size = len(name) + len(value) + ENTRY_OVERHEAD
        if size > self._max:
            return header_field(name, value)
        index = _STATIC_NAMES.get(name, 0)
        out = encode_integer(index, 6, 0x40)
        if not index:
            out += string_literal(name)
        out += string_literal(value)
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
