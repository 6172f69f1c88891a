"""HTTP/2 (RFC 9113), HPACK (RFC 7541) and gRPC's wire format, sans-IO: the one implementation
moorage-client and moorage-server share (bytes in, bytes out; no sockets, no event loop).

Submodules: ``frames`` (frame constants, encoders, the frame reader, SETTINGS and window
checks, the protocol errors), ``hpack`` (the bounded header decoder and the encoders),
``connection`` (:class:`Endpoint`, the connection-level state machine both sides build on),
``grpcwire`` (message prefix and reader, bounded inflate, timeouts, status, metadata) and
``limits`` (per-connection flood budgets). The names most users need are re-exported here.
"""

from moorage.core.http2.connection import Endpoint
from moorage.core.http2.frames import (
    PREFACE,
    ConnectionFailure,
    ErrorCode,
    FrameReader,
    ProtocolFailure,
    Setting,
    StreamFailure,
)
from moorage.core.http2.grpcwire import (
    ERROR_CODE_METADATA,
    STATUS_NAMES,
    MessageError,
    MessageReader,
    inflate,
    read_unary,
)
from moorage.core.http2.hpack import HeaderDecoder, HeaderEncoder, HeaderListTooLarge, HPACKError
from moorage.core.http2.limits import PeerBudget

__all__ = [
    "ERROR_CODE_METADATA",
    "PREFACE",
    "STATUS_NAMES",
    "ConnectionFailure",
    "Endpoint",
    "ErrorCode",
    "FrameReader",
    "HPACKError",
    "HeaderDecoder",
    "HeaderEncoder",
    "HeaderListTooLarge",
    "MessageError",
    "MessageReader",
    "PeerBudget",
    "ProtocolFailure",
    "Setting",
    "StreamFailure",
    "inflate",
    "read_unary",
]
