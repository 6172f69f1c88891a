"""``NativeContext``: what the native server hands a servicer as its ``grpc.aio.ServicerContext``.

It offers what the inference servicer, :func:`moorage.server.errors.grpc_errors` and the access
interceptor use, with grpc.aio's semantics: ``invocation_metadata()`` (``-bin`` values decoded
from base64 to bytes), ``send_initial_metadata``, ``set_trailing_metadata``, ``abort`` (raises
:class:`moorage.server.errors.AbortError`, no grpcio needed), ``set_code`` / ``set_details`` /
``code()`` / ``details()``, ``peer()``, ``time_remaining()``, ``cancelled()``, ``done()``,
``add_done_callback``. Calls are unary, so ``read`` / ``write`` raise, and there is no response
compression to configure.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from moorage.core.http2.grpcwire import StatusCode
from moorage.core.http2.hpack import Headers
from moorage.server.errors import AbortError

if TYPE_CHECKING:
    import grpc

__all__ = ["Metadata", "NativeContext"]

logger = logging.getLogger(__name__)

Metadata = Sequence[tuple[str, str | bytes]]

#: Request headers that are transport, not metadata (gRPC over HTTP/2 "Reserved Headers").
RESERVED = frozenset(
    {b"content-type", b"te", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding",
     b"connection", b"grpc-status", b"grpc-message"}
)  # fmt: skip


def decode_metadata(headers: Headers) -> tuple[tuple[str, str | bytes], ...]:
    """Request headers as gRPC metadata: no pseudo-headers or reserved ones, ``-bin`` values
    decoded from base64 (padded or not; undecodable ones are dropped)."""
    out: list[tuple[str, str | bytes]] = []
    for name, value in headers:
        if name[:1] == b":" or name in RESERVED:
            continue
        key = name.decode("latin-1")
        if key.endswith("-bin"):
            try:
                out.append((key, base64.b64decode(value + b"=" * (-len(value) % 4))))
            except (binascii.Error, ValueError):
                logger.debug("dropped metadata %s: not base64", key)
            continue
        out.append((key, value.decode("latin-1")))
    return tuple(out)


class NativeContext:
    """One call's context (see the module docstring)."""

    def __init__(
        self,
        metadata: tuple[tuple[str, str | bytes], ...],
        *,
        peer: Callable[[], str],
        deadline: float | None,
        clock: Callable[[], float],
    ) -> None:
        self._metadata = metadata
        self._peer = peer
        self._deadline = deadline
        self._clock = clock
        self._code: StatusCode | grpc.StatusCode | None = None
        self._details: str | None = None
        self.initial: list[tuple[str, str | bytes]] = []
        self.trailing: tuple[tuple[str, str | bytes], ...] = ()
        self.headers_sent = False
        self._cancelled = False
        self._done = False
        self._callbacks: list[Callable[[Any], None]] = []

    # ------------------------------------------------------------------ metadata
    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    async def send_initial_metadata(self, initial_metadata: Metadata) -> None:
        if self.headers_sent:
            raise ValueError("initial metadata was already sent")
        self.initial.extend(initial_metadata)

    def set_trailing_metadata(self, trailing_metadata: Metadata) -> None:
        self.trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self.trailing

    # ------------------------------------------------------------------ status
    async def abort(
        self,
        code: StatusCode | grpc.StatusCode,
        details: str = "",
        trailing_metadata: Metadata = (),
    ) -> NoReturn:
        if code.name == "OK":
            raise ValueError("abort needs a status other than OK")
        self._code = code
        self._details = details
        if trailing_metadata:
            self.trailing = tuple(trailing_metadata)
        raise AbortError()

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def set_code(self, code: StatusCode | grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> StatusCode | grpc.StatusCode | None:
        return self._code

    def details(self) -> str | None:
        return self._details

    # ------------------------------------------------------------------ call
    def peer(self) -> str:
        return self._peer()

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> dict[str, Any]:
        return {}

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - self._clock())

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._done

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def cancel(self) -> None:
        """The client cancelled the call (or its connection went away)."""
        self._cancelled = True

    def finish(self) -> None:
        """The call is over (the server calls this once)."""
        self._done = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                logger.exception("gRPC done callback %r failed", callback)

    def set_compression(self, compression: grpc.Compression) -> None:
        pass  # responses are sent uncompressed (clients accept identity always)

    def disable_next_message_compression(self) -> None:
        pass

    async def read(self) -> NoReturn:
        raise RuntimeError("the native gRPC server serves unary calls only")

    async def write(self, message: Any) -> NoReturn:
        raise RuntimeError("the native gRPC server serves unary calls only")
