"""gRPC over HTTP/2 (gRPC's PROTOCOL-HTTP2 spec), the parts both ends share: the 5-byte
message prefix and a bounded reader of messages, bounded inflate of compressed messages,
``grpc-timeout``, ``grpc-message`` percent-encoding, status names, custom metadata and the
``moorage-error-code`` trailer (:data:`ERROR_CODE_METADATA`, from :mod:`moorage.core.errors`).
Sans-IO; status codes are ``grpc.StatusCode`` member names
(``"RESOURCE_EXHAUSTED"``) or :class:`StatusCode`, its grpcio-free twin.
"""

from __future__ import annotations

import base64
import binascii
import enum
import math
import re
import struct
import zlib
from urllib.parse import unquote_to_bytes

from moorage.core.errors import ERROR_CODE_METADATA

__all__ = [
    "ACCEPT_ENCODING",
    "ERROR_CODE_METADATA",
    "HTTP_STATUS_TO_GRPC",
    "PREFIX",
    "RESERVED_METADATA",
    "RESET_STATUS",
    "STATUS_CODES",
    "STATUS_NAMES",
    "MessageError",
    "MessageReader",
    "StatusCode",
    "decode_metadata_value",
    "format_timeout",
    "inflate",
    "message_length",
    "message_prefix",
    "metadata_key",
    "metadata_value",
    "parse_timeout",
    "percent_decode",
    "percent_encode",
    "read_unary",
    "status_name",
]

#: Compressed-Flag (1 byte) and Message-Length (4 bytes, big-endian) before each message.
PREFIX = struct.Struct(">BI")


class StatusCode(enum.Enum):
    """gRPC status codes: ``grpc.StatusCode``'s names and values (number, text), so that a
    server without grpcio has them; ``code.value[0]`` is what ``grpc-status`` carries."""

    OK = (0, "ok")
    CANCELLED = (1, "cancelled")
    UNKNOWN = (2, "unknown")
    INVALID_ARGUMENT = (3, "invalid argument")
    DEADLINE_EXCEEDED = (4, "deadline exceeded")
    NOT_FOUND = (5, "not found")
    ALREADY_EXISTS = (6, "already exists")
    PERMISSION_DENIED = (7, "permission denied")
    RESOURCE_EXHAUSTED = (8, "resource exhausted")
    FAILED_PRECONDITION = (9, "failed precondition")
    ABORTED = (10, "aborted")
    OUT_OF_RANGE = (11, "out of range")
    UNIMPLEMENTED = (12, "unimplemented")
    INTERNAL = (13, "internal")
    UNAVAILABLE = (14, "unavailable")
    DATA_LOSS = (15, "data loss")
    UNAUTHENTICATED = (16, "unauthenticated")


#: gRPC status codes by number (``grpc.StatusCode`` member names).
STATUS_NAMES = tuple(code.name for code in StatusCode)
#: Name -> number.
STATUS_CODES = {name: number for number, name in enumerate(STATUS_NAMES)}
_STATUS_BY_TEXT = {str(number).encode(): name for number, name in enumerate(STATUS_NAMES)}

#: HTTP status of a response without ``grpc-status`` -> gRPC status (gRPC's
#: http-grpc-status-mapping; any other status is UNKNOWN).
HTTP_STATUS_TO_GRPC = {
    b"400": "INTERNAL", b"401": "UNAUTHENTICATED", b"403": "PERMISSION_DENIED",
    b"404": "UNIMPLEMENTED", b"429": "UNAVAILABLE", b"502": "UNAVAILABLE",
    b"503": "UNAVAILABLE", b"504": "UNAVAILABLE",
}  # fmt: skip
#: RST_STREAM error code -> gRPC status (the spec's table; any other code is INTERNAL).
RESET_STATUS = {
    0x7: "UNAVAILABLE",  # REFUSED_STREAM
    0x8: "CANCELLED",  # CANCEL
    0xB: "RESOURCE_EXHAUSTED",  # ENHANCE_YOUR_CALM
    0xC: "PERMISSION_DENIED",  # INADEQUATE_SECURITY
}

#: ``grpc-accept-encoding`` of an endpoint that inflates what :func:`inflate` does.
ACCEPT_ENCODING = b"identity,gzip,deflate"


def status_name(value: bytes | str) -> str:
    """The status name of a ``grpc-status`` value; UNKNOWN for anything else."""
    key = value.encode() if isinstance(value, str) else value
    return _STATUS_BY_TEXT.get(key, "UNKNOWN")


class MessageError(Exception):
    """A gRPC message that cannot be taken: ``status`` (a status name) and a message for
    ``grpc-message``. Sizes over the limit are RESOURCE_EXHAUSTED, with grpc's wording
    ``Received message larger than max (N vs. M)``."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _too_large(length: int | str, limit: int) -> MessageError:
    return MessageError(
        "RESOURCE_EXHAUSTED", f"Received message larger than max ({length} vs. {limit})"
    )


# ----------------------------------------------------------------------------- messages
def message_prefix(length: int, *, compressed: bool = False) -> bytes:
    """The 5 bytes before a message of ``length`` bytes."""
    return PREFIX.pack(1 if compressed else 0, length)


def message_length(data: bytes | bytearray | memoryview, *, max_length: int | None) -> int:
    """The length a message prefix at the start of ``data`` (5 bytes or more) declares,
    checked: a Compressed-Flag other than 0 or 1 is INTERNAL, a length over ``max_length``
    (``None``: no limit) RESOURCE_EXHAUSTED."""
    flag, length = PREFIX.unpack_from(data)
    if flag > 1:
        raise MessageError("INTERNAL", f"invalid Compressed-Flag {flag}")
    if max_length is not None and length > max_length:
        raise _too_large(length, max_length)
    return length


def read_unary(
    body: bytes | bytearray | memoryview, *, max_length: int | None
) -> tuple[bool, memoryview]:
    """The one message of a unary body: (compressed, payload). The declared length must be
    within ``max_length`` (``None``: no limit) and the body exactly one message."""
    if len(body) < PREFIX.size:
        raise MessageError("INTERNAL", "no gRPC message (fewer than 5 bytes)")
    length = message_length(body, max_length=max_length)
    size = len(body) - PREFIX.size
    if size != length:
        what = "truncated" if size < length else "followed by more data"
        raise MessageError("INTERNAL", f"gRPC message of {length} bytes {what} ({size} bytes)")
    return bool(body[0]), memoryview(body)[PREFIX.size :]


class MessageReader:
    """Length-prefixed messages from a body that arrives in pieces.

    :meth:`feed` returns the messages completed so far as (compressed, payload). A declared
    length over ``max_length`` is refused as soon as its prefix arrives (RESOURCE_EXHAUSTED),
    so no more than one message of at most ``max_length`` bytes is ever held; :meth:`finish`
    refuses a body that ends inside a message (INTERNAL).
    """

    __slots__ = ("_buffer", "_length", "max_length")

    def __init__(self, *, max_length: int | None) -> None:
        self.max_length = max_length
        self._buffer = bytearray()
        self._length = -1  # the declared length of the message being read, once known

    @property
    def declared(self) -> int | None:
        """The declared length of the message being read, once its prefix arrived."""
        return self._length if self._length >= 0 else None

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[bool, bytes]]:
        buffer = self._buffer
        buffer += data
        messages: list[tuple[bool, bytes]] = []
        while True:
            if self._length < 0:
                if len(buffer) < PREFIX.size:
                    return messages
                self._length = message_length(buffer, max_length=self.max_length)
            end = PREFIX.size + self._length
            if len(buffer) < end:
                return messages
            messages.append((bool(buffer[0]), bytes(buffer[PREFIX.size : end])))
            del buffer[:end]
            self._length = -1

    def finish(self) -> None:
        """The body ended: nothing may be left half-read."""
        if self._buffer:
            raise MessageError("INTERNAL", "the body ended inside a gRPC message")


#: The largest message protobuf parses (2 GiB - 1): what "no limit" means when inflating.
MAX_MESSAGE = 0x7FFFFFFF


def inflate(data: bytes | memoryview, encoding: bytes | str, *, limit: int | None) -> bytes:
    """A message compressed with ``grpc-encoding`` ``gzip`` or ``deflate``, decompressed to at
    most ``limit`` bytes (``None``: :data:`MAX_MESSAGE`, since protobuf could not parse more):
    past the limit decompression stops, with no more than ``limit + 1`` bytes of output ever
    made (RESOURCE_EXHAUSTED: a small "gzip bomb" cannot take memory). Another encoding is
    UNIMPLEMENTED, corrupt or truncated data INTERNAL."""
    if limit is None:
        limit = MAX_MESSAGE
    name = encoding.decode("latin-1") if isinstance(encoding, bytes) else encoding
    if name == "gzip":
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    elif name == "deflate":
        inflater = zlib.decompressobj(zlib.MAX_WBITS)
    else:
        raise MessageError(
            "UNIMPLEMENTED",
            f"message compressed with {name!r}; supported: {ACCEPT_ENCODING.decode()}",
        )
    try:
        message = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise MessageError("INTERNAL", f"cannot decompress the {name} message: {exc}") from None
    if len(message) > limit:
        raise _too_large(f"over {limit} bytes decompressed", limit)
    if not inflater.eof:
        raise MessageError("INTERNAL", f"truncated {name} message")
    return message


# ----------------------------------------------------------------------------- timeouts
_TIMEOUT_UNITS = {
    ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0,
    ord("m"): 1e-3, ord("u"): 1e-6, ord("n"): 1e-9,
}  # fmt: skip


def parse_timeout(value: bytes) -> float | None:
    """``grpc-timeout`` (1 to 8 digits and a unit) in seconds; ``None`` when malformed."""
    unit = _TIMEOUT_UNITS.get(value[-1]) if value else None
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


def format_timeout(seconds: float) -> bytes:
    """``grpc-timeout`` for ``seconds``, rounded up to the millisecond (seconds past ~27 h)."""
    millis = max(1, math.ceil(seconds * 1000))
    if millis < 100_000_000:
        return b"%dm" % millis
    return b"%dS" % min(math.ceil(seconds), 99_999_999)


# ----------------------------------------------------------------------------- grpc-message
_PRINTABLE = re.compile(rb"[\x20-\x24\x26-\x7e]*")


def percent_encode(message: str) -> bytes:
    """``grpc-message``: UTF-8, percent-encoded outside printable ASCII (and ``%`` itself)."""
    data = message.encode("utf-8", "replace")
    if _PRINTABLE.fullmatch(data):
        return data
    return b"".join(bytes((c,)) if 0x20 <= c <= 0x7E and c != 0x25 else b"%%%02X" % c for c in data)


def percent_decode(value: bytes | str) -> str:
    """A ``grpc-message`` back to text; malformed escapes and UTF-8 are kept, not refused."""
    raw = value if isinstance(value, bytes) else value.encode("latin-1", "replace")
    if b"%" not in raw:
        return raw.decode("utf-8", "replace")
    return unquote_to_bytes(raw).decode("utf-8", "replace")


# ----------------------------------------------------------------------------- metadata
_KEY = re.compile(rb"[0-9a-z_.\-]+")
_ASCII_VALUE = re.compile(rb"[\x20-\x7e]*")
_FIELD_FORBIDDEN = re.compile(rb"[\x00\r\n]")
#: Header names a call sets itself: never taken as custom metadata.
RESERVED_METADATA = frozenset(
    {
        b"content-type", b"te", b"host", b"user-agent", b"grpc-timeout", b"grpc-encoding",
        b"grpc-accept-encoding", b"grpc-status", b"grpc-message",
    }
)  # fmt: skip


def metadata_key(key: str | bytes) -> bytes | None:
    """A custom metadata key, lower-cased, or ``None`` if gRPC does not allow it (characters
    other than ``0-9 a-z _ . -``, or a name in :data:`RESERVED_METADATA`)."""
    raw = (key.encode("latin-1", "replace") if isinstance(key, str) else key).lower()
    if not _KEY.fullmatch(raw) or raw in RESERVED_METADATA:
        return None
    return raw


def metadata_value(key: bytes, value: str | bytes, *, printable: bool = True) -> bytes | None:
    """The header value of custom metadata: a ``-bin`` key's value base64 (unpadded), other
    values as they are (text UTF-8 encoded), ``None`` for text gRPC does not allow: outside
    printable ASCII (the spec's ASCII-Value), or with ``printable=False`` only what no HTTP/2
    field value may hold (NUL, CR, LF: RFC 9113 section 8.2.1), so UTF-8 text passes (what
    the server sends in the metadata a model sets)."""
    if key.endswith(b"-bin"):
        raw = value if isinstance(value, bytes) else value.encode("utf-8")
        return base64.b64encode(raw).rstrip(b"=")
    text = value if isinstance(value, bytes) else value.encode("utf-8", "replace")
    if printable:
        return text if _ASCII_VALUE.fullmatch(text) else None
    return None if _FIELD_FORBIDDEN.search(text) else text


def decode_metadata_value(key: bytes, value: bytes) -> bytes:
    """A received metadata value: a ``-bin`` key's base64 decoded (padded or not; kept as it
    is when it is not base64), others as they are."""
    if not key.endswith(b"-bin"):
        return value
    try:
        return base64.b64decode(value + b"=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return value
