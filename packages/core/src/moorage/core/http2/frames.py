"""HTTP/2 frames (RFC 9113): constants, encoders, an incremental frame reader, SETTINGS
validation, flow-control window arithmetic, padding, and the two kinds of protocol error.

Sans-IO: bytes in, offsets and bytes out. A frame is a 9-byte header (24-bit payload length,
type, flags, a reserved bit and a 31-bit stream id) followed by its payload. Every check here
answers with the error RFC 9113 names for the violation: a :class:`ConnectionFailure` (GOAWAY
with its code, section 5.4.1) or a :class:`StreamFailure` (RST_STREAM, section 5.4.2).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Mapping

__all__ = [
    "ACK",
    "CONTINUATION",
    "DATA",
    "DEFAULT_MAX_FRAME",
    "DEFAULT_WINDOW",
    "END_HEADERS",
    "END_STREAM",
    "FRAME_HEADER_SIZE",
    "GOAWAY",
    "HEAD",
    "HEADERS",
    "MAX_FRAME_LIMIT",
    "MAX_STREAM_ID",
    "MAX_WINDOW",
    "PADDED",
    "PING",
    "PREFACE",
    "PRIORITY",
    "PRIORITY_FLAG",
    "PUSH_PROMISE",
    "RST_STREAM",
    "SETTINGS",
    "SETTINGS_ACK",
    "WINDOW_UPDATE",
    "ConnectionFailure",
    "ErrorCode",
    "FrameReader",
    "ProtocolFailure",
    "Setting",
    "StreamFailure",
    "check_frame",
    "error_name",
    "frame",
    "frame_header",
    "goaway",
    "grow_window",
    "header_block_frames",
    "headers_fragment",
    "parse_goaway",
    "parse_settings",
    "ping",
    "rst_stream",
    "settings",
    "strip_padding",
    "window_update",
]

#: What a client sends first, before its SETTINGS frame (section 3.4).
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

FRAME_HEADER_SIZE = 9
#: Largest flow-control window and largest WINDOW_UPDATE increment (2^31 - 1).
MAX_WINDOW = 0x7FFFFFFF
#: Largest stream identifier (31 bits).
MAX_STREAM_ID = 0x7FFFFFFF
#: Initial flow-control window of every stream and of the connection (section 6.9.2).
DEFAULT_WINDOW = 65535
#: Frame payloads allowed before SETTINGS_MAX_FRAME_SIZE says otherwise, and its upper bound.
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


def error_name(code: int) -> str:
    """``PROTOCOL_ERROR`` for 1; an unknown code (allowed, section 7) in hex."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return hex(code)


class ProtocolFailure(Exception):
    """A violation of RFC 9113 (or 7541) by the peer, answered with ``code``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class ConnectionFailure(ProtocolFailure):
    """A connection error (section 5.4.1): GOAWAY with ``code``, then close."""


class StreamFailure(ProtocolFailure):
    """A stream error (section 5.4.2): RST_STREAM ``code`` on ``stream_id``; the connection
    goes on. ``stream_id`` 0 means the stream of the frame being handled."""

    def __init__(self, code: ErrorCode, message: str, stream_id: int = 0) -> None:
        super().__init__(code, message)
        self.stream_id = stream_id


# ----------------------------------------------------------------------------- encoding
#: The frame header: (length << 8 | type) as 32 bits, flags, stream id.
HEAD = struct.Struct(">IBI")
_SETTING = struct.Struct(">HI")
_U32 = struct.Struct(">I")
_GOAWAY = struct.Struct(">II")


def frame_header(kind: int, flags: int, stream_id: int, length: int) -> bytes:
    """The 9 bytes that precede a payload of ``length`` bytes."""
    return HEAD.pack(length << 8 | kind, flags, stream_id)


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return HEAD.pack(len(payload) << 8 | kind, flags, stream_id) + payload


def settings(values: Mapping[int, int] | Iterable[tuple[int, int]]) -> bytes:
    """A SETTINGS frame with ``values`` (parameter, value), in order."""
    pairs = values.items() if isinstance(values, Mapping) else values
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(key, value) for key, value in pairs))


#: The acknowledgement of the peer's SETTINGS (section 6.5.3).
SETTINGS_ACK = frame(SETTINGS, ACK, 0)


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _U32.pack(code))


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, code) + debug)


def ping(payload: bytes, *, ack: bool = False) -> bytes:
    """A PING (8 bytes of opaque data; the answer carries the same bytes with ACK)."""
    return frame(PING, ACK if ack else 0, 0, payload)


def header_block_frames(stream_id: int, block: bytes, flags: int, max_frame: int) -> bytes:
    """HEADERS carrying ``block`` (with ``flags``, e.g. END_STREAM), split into HEADERS +
    CONTINUATION frames of at most ``max_frame`` bytes (the peer's SETTINGS_MAX_FRAME_SIZE);
    END_HEADERS on the last one."""
    size = len(block)
    if size <= max_frame:
        return HEAD.pack(size << 8 | HEADERS, flags | END_HEADERS, stream_id) + block
    parts = [frame(HEADERS, flags & ~END_HEADERS, stream_id, block[:max_frame])]
    for offset in range(max_frame, size, max_frame):
        last = offset + max_frame >= size
        chunk = block[offset : offset + max_frame]
        parts.append(frame(CONTINUATION, END_HEADERS if last else 0, stream_id, chunk))
    return b"".join(parts)


# ----------------------------------------------------------------------------- reading
#: A frame found by :class:`FrameReader`: type, flags, stream id (reserved bit cleared), and
#: where its payload starts and stops in the buffer the reader returned.
FrameRef = tuple[int, int, int, int, int]


class FrameReader:
    """Splits a byte stream into frames, keeping an incomplete frame for the next read.

    :meth:`feed` returns the buffer and the complete frames in it as offsets (no payload is
    copied). A frame whose declared length is over ``max_frame_size`` (the
    SETTINGS_MAX_FRAME_SIZE this side advertised) is a FRAME_SIZE_ERROR as soon as its header
    arrives, so memory held for an incomplete frame is bounded by that size. Pieces of a large
    frame are joined once, when the frame is complete.
    """

    __slots__ = ("_need", "_partial", "_partial_size", "max_frame_size")

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame_size = max_frame_size
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._need = 0  # bytes the incomplete frame needs, header included

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held."""
        return self._partial_size

    def feed(self, data: bytes) -> tuple[bytes, list[FrameRef]]:
        """``data`` appended to what was held: ``(buffer, frames)``."""
        if self._partial:
            self._partial.append(data)
            self._partial_size += len(data)
            if self._partial_size < self._need:
                return b"", []
            data = b"".join(self._partial)
            self._partial.clear()
            self._partial_size = 0
        frames: list[FrameRef] = []
        unpack = HEAD.unpack_from
        limit = self.max_frame_size
        pos, end = 0, len(data)
        while end - pos >= FRAME_HEADER_SIZE:
            length_kind, flags, stream_id = unpack(data, pos)
            length = length_kind >> 8
            if length > limit:
                raise ConnectionFailure(
                    ErrorCode.FRAME_SIZE_ERROR,
                    f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE {limit}",
                )
            stop = pos + FRAME_HEADER_SIZE + length
            if stop > end:
                self._need = stop - pos
                break
            frames.append(
                (
                    length_kind & 0xFF,
                    flags,
                    stream_id & MAX_STREAM_ID,
                    pos + FRAME_HEADER_SIZE,
                    stop,
                )
            )
            pos = stop
        else:
            self._need = FRAME_HEADER_SIZE
        if pos < end:
            rest = data[pos:]
            self._partial.append(rest)
            self._partial_size = len(rest)
        return data, frames


#: Frame types that belong to the connection (stream 0) and those that belong to a stream.
_CONNECTION_ONLY = frozenset({SETTINGS, PING, GOAWAY})
_STREAM_ONLY = frozenset({DATA, HEADERS, PRIORITY, RST_STREAM, PUSH_PROMISE, CONTINUATION})


def check_frame(kind: int, flags: int, stream_id: int, length: int) -> None:
    """The checks of section 6 that need only the frame header: the stream a type may be
    sent on, and the fixed payload sizes. Unknown types pass (section 5.5: ignored)."""
    if stream_id:
        if kind in _CONNECTION_ONLY:
            raise ConnectionFailure(
                ErrorCode.PROTOCOL_ERROR, f"frame type {kind} on stream {stream_id}"
            )
    elif kind in _STREAM_ONLY:
        raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, f"frame type {kind} on stream 0")
    if kind == SETTINGS:
        if flags & ACK and length:
            raise ConnectionFailure(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
        if length % 6:
            raise ConnectionFailure(ErrorCode.FRAME_SIZE_ERROR, f"SETTINGS of {length} bytes")
    elif kind == PING:
        if length != 8:
            raise ConnectionFailure(ErrorCode.FRAME_SIZE_ERROR, f"PING of {length} bytes")
    elif kind in (WINDOW_UPDATE, RST_STREAM):
        if length != 4:
            raise ConnectionFailure(ErrorCode.FRAME_SIZE_ERROR, f"frame type {kind} of {length}")
    elif kind == GOAWAY:
        if length < 8:
            raise ConnectionFailure(ErrorCode.FRAME_SIZE_ERROR, f"GOAWAY of {length} bytes")
    elif kind == PRIORITY and length != 5:
        raise StreamFailure(ErrorCode.FRAME_SIZE_ERROR, f"PRIORITY of {length} bytes", stream_id)


def strip_padding(data: bytes | memoryview, start: int, stop: int) -> tuple[int, int]:
    """The payload of a PADDED frame less its pad length byte and padding (section 6.1)."""
    if start >= stop or data[start] >= stop - start:
        raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "padding as long as the frame")
    return start + 1, stop - data[start]


def headers_fragment(
    data: bytes | memoryview, start: int, stop: int, flags: int
) -> tuple[int, int]:
    """Where the header block fragment of a HEADERS frame lies: less padding (PADDED) and the
    priority fields (PRIORITY, parsed and ignored as RFC 9113 allows)."""
    if flags & PADDED:
        if start >= stop:
            raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "padded HEADERS without pad length")
        start, stop = start + 1, stop - data[start]
    if flags & PRIORITY_FLAG:
        start += 5
    if start > stop:
        raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "padding exceeds the HEADERS frame")
    return start, stop


# ----------------------------------------------------------------------------- SETTINGS
def parse_settings(payload: bytes | memoryview) -> list[tuple[int, int]]:
    """The (parameter, value) pairs of a SETTINGS payload, checked against section 6.5.2:
    ENABLE_PUSH 0 or 1 and MAX_FRAME_SIZE 16384..2^24-1 (PROTOCOL_ERROR), INITIAL_WINDOW_SIZE
    at most 2^31-1 (FLOW_CONTROL_ERROR). Unknown parameters are kept (the caller ignores
    them, section 6.5.2)."""
    if len(payload) % 6:
        raise ConnectionFailure(ErrorCode.FRAME_SIZE_ERROR, f"SETTINGS of {len(payload)} bytes")
    pairs = list(_SETTING.iter_unpack(payload))
    for key, value in pairs:
        if key == Setting.ENABLE_PUSH:
            if value > 1:
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, f"ENABLE_PUSH {value}")
        elif key == Setting.INITIAL_WINDOW_SIZE:
            if value > MAX_WINDOW:
                raise ConnectionFailure(
                    ErrorCode.FLOW_CONTROL_ERROR, f"INITIAL_WINDOW_SIZE {value} over 2^31-1"
                )
        elif key == Setting.MAX_FRAME_SIZE and not DEFAULT_MAX_FRAME <= value <= MAX_FRAME_LIMIT:
            raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value}")
    return pairs


def parse_goaway(payload: bytes | memoryview) -> tuple[int, int, bytes]:
    """A GOAWAY payload: (last stream id, error code, debug data)."""
    last, code = _GOAWAY.unpack_from(payload)
    return last & MAX_STREAM_ID, code, bytes(payload[8:])


# ----------------------------------------------------------------------------- windows
def grow_window(window: int, increment: int, stream_id: int) -> int:
    """``window`` after a WINDOW_UPDATE of ``increment`` on ``stream_id`` (section 6.9): an
    increment of 0 is a PROTOCOL_ERROR, a window above 2^31-1 a FLOW_CONTROL_ERROR; both are
    connection errors on stream 0 and stream errors on a stream."""
    if not increment:
        message = "WINDOW_UPDATE of 0"
        if stream_id:
            raise StreamFailure(ErrorCode.PROTOCOL_ERROR, message, stream_id)
        raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, message)
    window += increment
    if window > MAX_WINDOW:
        message = f"flow-control window of {window} over 2^31-1"
        if stream_id:
            raise StreamFailure(ErrorCode.FLOW_CONTROL_ERROR, message, stream_id)
        raise ConnectionFailure(ErrorCode.FLOW_CONTROL_ERROR, message)
    return window
