"""HTTP/2 wire constants and encoders (RFC 9113), and the one HPACK encoding the server needs.

Frames are built by hand: a 9-byte header (24-bit length, type, flags, 31-bit stream id) and
the payload. Response header blocks use HPACK (RFC 7541) *literal header field without
indexing* representations (section 6.2.2) and the static table only, never the dynamic table,
so the encoder keeps no state and fixed blocks (``:status 200``, ``content-type``) are
computed once. Decoding is the ``hpack`` package's :class:`hpack.Decoder`.
"""

from __future__ import annotations

import enum
import struct

__all__ = [
    "ACK",
    "CONTINUATION",
    "DATA",
    "END_HEADERS",
    "END_STREAM",
    "GOAWAY",
    "HEADERS",
    "PADDED",
    "PING",
    "PREFACE",
    "PRIORITY",
    "PRIORITY_FLAG",
    "PUSH_PROMISE",
    "RST_STREAM",
    "SETTINGS",
    "WINDOW_UPDATE",
    "ErrorCode",
    "Setting",
    "frame",
    "frame_header",
    "goaway",
    "header_field",
    "rst_stream",
    "settings",
    "string_literal",
    "window_update",
]

#: What a client sends first, before its SETTINGS frame (RFC 9113 section 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (section 6).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

#: Largest flow-control window and largest WINDOW_UPDATE increment (2^31 - 1).
MAX_WINDOW = 0x7FFFFFFF
#: Initial flow-control window of every stream and of the connection (section 6.9.2).
DEFAULT_WINDOW = 65535
#: Frame payloads allowed before SETTINGS_MAX_FRAME_SIZE says otherwise, and its bounds.
DEFAULT_MAX_FRAME = 16384
MAX_FRAME_LIMIT = 0xFFFFFF


class ErrorCode(enum.IntEnum):
    """Error codes of RST_STREAM and GOAWAY (section 7)."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class Setting(enum.IntEnum):
    """SETTINGS parameters (section 6.5.2)."""

    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6


#: The frame header: (length << 8 | type) as 32 bits, flags, stream id.
HEAD = struct.Struct(">IBI")
_SETTING = struct.Struct(">HI")
_U32 = struct.Struct(">I")
_GOAWAY = struct.Struct(">II")


def frame_header(kind: int, flags: int, stream_id: int, length: int) -> bytes:
    return HEAD.pack(length << 8 | kind, flags, stream_id)


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return HEAD.pack(len(payload) << 8 | kind, flags, stream_id) + payload


def settings(values: dict[Setting, int]) -> bytes:
    payload = b"".join(_SETTING.pack(key, value) for key, value in values.items())
    return frame(SETTINGS, 0, 0, payload)


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def rst_stream(stream_id: int, code: ErrorCode) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _U32.pack(code))


def goaway(last_stream_id: int, code: ErrorCode, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, code) + debug)


# ----------------------------------------------------------------------------- HPACK
#: Static-table indexes (RFC 7541 appendix A) of the names the server sends.
_STATIC_NAMES = {b":status": 8, b"content-type": 31, b"allow": 22}


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer (RFC 7541 section 5.1) with ``first``'s high bits as the pattern."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def string_literal(data: bytes) -> bytes:
    """An HPACK string literal without Huffman coding (section 5.2)."""
    return _integer(len(data), 7, 0) + data


def header_field(name: bytes, value: bytes) -> bytes:
    """One header as a literal field without indexing (section 6.2.2): the peer's dynamic table
    is never touched, so the encoding of a field never depends on what was sent before."""
    index = _STATIC_NAMES.get(name)
    if index is not None:
        return _integer(index, 4, 0) + string_literal(value)
    return b"\x00" + string_literal(name) + string_literal(value)


#: ``:status: 200`` is entry 8 of the static table: one byte, fully indexed.
STATUS_200 = b"\x88"
#: A dynamic table size update to 0 (section 6.3), sent at the start of a connection's first
#: header block: the encoder never uses the table, and this holds whatever the peer's
#: SETTINGS_HEADER_TABLE_SIZE is or becomes.
TABLE_SIZE_ZERO = b"\x20"
