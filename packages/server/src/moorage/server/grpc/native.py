"""``NativeGrpcServer``: unary gRPC over :class:`~moorage.server.grpc.http2.H2Connection`, on the
event loop that serves REST, with no thread per call.

Calls are ``POST /inference.GRPCInferenceService/<Method>`` with ``content-type:
application/grpc`` (or ``application/grpc+proto``), one length-prefixed request message, and
get ``:status 200``, the response message and the trailers ``grpc-status`` / ``grpc-message``
(percent-encoded) plus trailing metadata; failures before a response are trailers-only. The
handlers are :meth:`InferenceServicer.async_handlers` behind the same observability wrapper as
grpcio's servers; the context is :class:`~moorage.server.grpc.context.NativeContext`. gRPC's
wire format (message prefix, bounded inflate, ``grpc-timeout``, ``grpc-message``, metadata
keys) is :mod:`moorage.core.http2.grpcwire`'s, the client's too.

- ``grpc-timeout`` is honoured: past the deadline the call is cancelled and answered
  DEADLINE_EXCEEDED. A client's RST_STREAM cancels its call.
- Request messages may be compressed with ``grpc-encoding`` ``gzip`` or ``deflate`` (or be
  ``identity``); any other encoding is UNIMPLEMENTED (with ``grpc-accept-encoding``).
  Responses are never compressed.
- A request message over ``max_receive_message_length`` is refused RESOURCE_EXHAUSTED as soon
  as its length prefix arrives; a request body that goes on past the message its prefix
  declared is INTERNAL ("more than one message", as gRPC servers answer a unary call) as soon
  as the excess arrives: the stream is answered and reset, its window never reopened, so the
  body held is bounded by the declared length; a response over ``max_send_message_length``
  becomes RESOURCE_EXHAUSTED. Header lists over ``max_header_list_size`` are
  RESOURCE_EXHAUSTED; malformed requests (RFC 9113 section 8.2-8.3: unknown, repeated, late or
  missing pseudo-headers, connection-specific fields, uppercase names) are reset with
  PROTOCOL_ERROR.
- Calls start after the reads of an event-loop pass, all together in one callback, and their
  responses are sent together after the last of them: a pass's calls run back to back
  (their code stays in the CPU's caches: about 20% less CPU a call at 8 connections), with
  one write per connection after them. A call whose stream was reset before then (in the
  same read or another: rapid reset) never reaches the model; a reset call's task is
  cancelled. The connection's budgets (:class:`~moorage.core.http2.limits.PeerBudget`) and
  timeouts are :class:`~moorage.server.grpc.http2.H2Connection`'s, checked by the server a few
  times a second; ``max_connections`` bounds the connections (more are closed at accept).
- Every error a handler raises carries its stable code in the trailing metadata
  ``moorage-error-code`` (:data:`moorage.core.errors.ERROR_CODE_METADATA`), as do the
  transport's own refusals (``payload_too_large``, ``overloaded``).
- An unknown method is UNIMPLEMENTED; a method other than POST gets HTTP 405, a content-type
  other than gRPC's HTTP 415. Calls beyond ``max_concurrent_rpcs`` (server-wide) are
  RESOURCE_EXHAUSTED (calls waiting to start count); streams beyond ``max_concurrent_streams``
  per connection are refused.
- :meth:`NativeGrpcServer.stop` is graceful: listeners close, every connection gets GOAWAY,
  in-flight calls finish up to the grace period, then what remains is cut.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from moorage.core.config.server import DEFAULT_MAX_GRPC_MESSAGE_LENGTH
from moorage.core.errors import ERROR_CODE_METADATA, Overloaded, PayloadTooLarge
from moorage.core.http2.frames import ErrorCode
from moorage.core.http2.grpcwire import (
    ACCEPT_ENCODING,
    MessageError,
    StatusCode,
    inflate,
    message_length,
    metadata_key,
    metadata_value,
    parse_timeout,
    percent_encode,
    read_unary,
)
from moorage.core.http2.hpack import STATUS_200, Headers, header_field
from moorage.core.http2.hpack import string_literal as _string
from moorage.core.http2.limits import PeerBudget
from moorage.core.protocol.grpc import SERVICE_NAME
from moorage.server._stepping import resume
from moorage.server.errors import AbortError
from moorage.server.grpc.context import NativeContext, decode_metadata
from moorage.server.grpc.http2 import H2Connection, Stream
from moorage.server.grpc.servicer import InferenceServicer
from moorage.server.sockets import Acceptor, bind_reuseport_socket

if TYPE_CHECKING:
    import grpc

__all__ = ["GrpcConnection", "NativeGrpcServer", "bind_grpc_socket"]

#: Kept under its old name (the socket helpers moved to :mod:`moorage.server.sockets`).
bind_grpc_socket = bind_reuseport_socket

logger = logging.getLogger(__name__)

Behavior = Callable[[Any, Any], Awaitable[bytes]]

_CONTENT_TYPE = header_field(b"content-type", b"application/grpc")
_HEAD_OK = STATUS_200 + _CONTENT_TYPE
_STATUS_OK = header_field(b"grpc-status", b"0")
#: RFC 9113 section 8.3.1: the request pseudo-headers, and those a request must have.
_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority"})
_REQUIRED = frozenset({b":method", b":scheme", b":path"})
#: Section 8.2.2: connection-specific fields make a request malformed.
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


def _malformed(headers: Headers) -> str | None:
    """Why a request header list is malformed (RFC 9113 sections 8.2 and 8.3), or ``None``."""
    seen: set[bytes] = set()
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                return f"pseudo-header {name!r} after a regular field"
            if name not in _PSEUDO or name in seen:
                return f"unknown or repeated pseudo-header {name!r}"
            if not value and name == b":path":
                return "empty :path"
            seen.add(name)
            continue
        regular = True
        if name in _CONNECTION_SPECIFIC:
            return f"connection-specific field {name!r}"
        if name == b"te" and value != b"trailers":
            return "te other than trailers"
        if name.lower() != name:
            return f"uppercase field name {name!r}"
    if _REQUIRED - seen:
        return f"missing {b', '.join(sorted(_REQUIRED - seen))!r}"
    return None


_TOO_LARGE_CODE = header_field(ERROR_CODE_METADATA.encode(), PayloadTooLarge.code.encode())
_OVERLOADED_CODE = header_field(ERROR_CODE_METADATA.encode(), Overloaded.code.encode())
_ACCEPT_ENCODING_FIELD = header_field(b"grpc-accept-encoding", ACCEPT_ENCODING)


def _metadata_fields(metadata: Iterable[tuple[str, str | bytes]]) -> bytes:
    """Metadata as HPACK fields; ``-bin`` values base64-encoded, others UTF-8 (any text an
    HTTP/2 field may carry, not only gRPC's printable ASCII). Invalid entries are dropped
    (grpcio refuses them; a model's response header should not fail its call)."""
    out = []
    for key, value in metadata:
        entry = _NAMES.get(key)
        if entry is None:
            entry = _name_prefix(key)
            if entry is None:
                continue
        prefix, name = entry
        encoded = metadata_value(name, value, printable=False)
        if encoded is None:
            logger.debug("dropped response metadata %r: control characters", key)
            continue
        out.append(prefix + _string(encoded))
    return b"".join(out)


#: Metadata key -> (its HPACK field up to the value, the key as sent), for valid keys.
_NAMES: dict[str, tuple[bytes, bytes]] = {}


def _name_prefix(key: str) -> tuple[bytes, bytes] | None:
    name = metadata_key(key)
    if name is None:
        logger.debug("dropped response metadata %r", key)
        return None
    prefix = header_field(name, b"")[:-1]  # the field less its empty value's length byte
    entry = (prefix, name)
    if len(_NAMES) < 1024:
        _NAMES[key] = entry
    return entry


def _status_fields(code: StatusCode | grpc.StatusCode, details: str | None) -> bytes:
    if code is StatusCode.OK and not details:
        return _STATUS_OK
    fields = header_field(b"grpc-status", str(code.value[0]).encode())
    if details:
        fields += header_field(b"grpc-message", percent_encode(details))
    return fields


#: A request's method, timeout (seconds), grpc-encoding and metadata.
_Request = tuple[Behavior, float | None, bytes | None, tuple[tuple[str, str | bytes], ...]]
_REQUEST_CACHE_SIZE = 64


class _Call:
    """The gRPC side of one stream."""

    __slots__ = ("behavior", "context", "encoding", "expected", "task", "timer")

    def __init__(self, behavior: Behavior, context: NativeContext, encoding: bytes | None):
        self.behavior = behavior
        self.context = context
        self.encoding = encoding
        #: The body's length its message prefix declares (0 until the prefix arrived).
        self.expected = 0
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None


#: Calls whose request ended, with their request message, waiting to start.
_Starting = list[tuple[Stream, _Call, bytes | memoryview]]


class GrpcConnection(H2Connection):
    """One client connection of a :class:`NativeGrpcServer`."""

    def __init__(self, server: NativeGrpcServer) -> None:
        super().__init__(
            max_concurrent_streams=server.max_concurrent_streams,
            max_header_list_size=server.max_header_list_size,
            budget=server.budget,
        )
        self.server = server
        self._loop = server.loop
        self._peer: str | None = None
        self._requests: dict[Headers, _Request] = {}
        #: Calls whose request ended in the read being handled; at its end they are queued to
        #: start with the other calls of the loop's pass (NativeGrpcServer.queue).
        self._starting: _Starting = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server.connections.add(self)
        if self.server.stopping:
            self.drain()

    def on_connection_lost(self) -> None:
        self.server.connection_closed(self)

    def peer(self) -> str:
        if self._peer is None:
            address = self.transport.get_extra_info("peername") if self.transport else None
            if isinstance(address, tuple) and len(address) >= 2:
                host, port = address[0], address[1]
                self._peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
            else:
                self._peer = f"unix:{address}" if address else "unknown"
        return self._peer

    # ------------------------------------------------------------------ requests
    def on_request(self, stream: Stream, headers: Headers) -> None:
        # Clients repeat the same headers call after call, and the HPACK layer hands back the
        # same tuple for the same block: what they mean is worked out once.
        request = self._requests.get(headers)
        if request is None:
            request = self._interpret(stream, headers)
            if request is None:
                return
            if len(self._requests) >= _REQUEST_CACHE_SIZE:
                self._requests.clear()
            self._requests[headers] = request
        server = self.server
        limit = server.max_concurrent_rpcs
        if limit is not None and server.active + server.queued >= limit:
            self._status(
                stream, StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!",
                extra=_OVERLOADED_CODE,
            )  # fmt: skip
            return
        behavior, timeout, encoding, metadata = request
        loop = self._loop
        deadline = None if timeout is None else loop.time() + timeout
        context = NativeContext(metadata, peer=self.peer, deadline=deadline, clock=loop.time)
        call = stream.call = _Call(behavior, context, encoding)
        if deadline is not None:
            call.timer = loop.call_at(deadline, self._expire, stream)

    def _interpret(self, stream: Stream, headers: Headers) -> _Request | None:
        """What a request's headers ask for, or ``None`` once they were answered with an
        error (a malformed request is reset: RST_STREAM PROTOCOL_ERROR, section 8.1.1)."""
        why = _malformed(headers)
        if why is not None:
            logger.debug("malformed request on stream %d: %s", stream.id, why)
            self.reset(stream, ErrorCode.PROTOCOL_ERROR)
            return None
        method = path = content_type = timeout = encoding = None
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 32
            if name == b":path":
                path = value
            elif name == b":method":
                method = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                timeout = value
            elif name == b"grpc-encoding":
                encoding = value
        if size > self.max_header_list_size:
            self._status(
                stream, StatusCode.RESOURCE_EXHAUSTED,
                f"header list of {size} bytes is over the limit of {self.max_header_list_size}",
            )  # fmt: skip
            return None
        if method != b"POST":
            self._status(
                stream, StatusCode.UNIMPLEMENTED, "gRPC calls are POST requests",
                http_status=b"405", extra=header_field(b"allow", b"POST"),
            )  # fmt: skip
            return None
        if content_type is None or not content_type.startswith(b"application/grpc"):
            self._status(
                stream, StatusCode.INTERNAL,
                f"content-type {content_type!r} is not application/grpc", http_status=b"415",
            )  # fmt: skip
            return None
        behavior = self.server.methods.get(path) if path is not None else None
        if behavior is None:
            self._status(stream, StatusCode.UNIMPLEMENTED, f"Method not found: {path!r}")
            return None
        seconds = None
        if timeout is not None:
            seconds = parse_timeout(timeout)
            if seconds is None:
                logger.debug("ignored malformed grpc-timeout %r", timeout)
        if encoding == b"identity":
            encoding = None
        return behavior, seconds, encoding, decode_metadata(headers)

    def on_body(self, stream: Stream) -> None:
        call = stream.call
        if call is None:
            return
        size = len(stream.body)
        if not call.expected:
            if size < 5:
                return
            try:
                length = message_length(
                    stream.body, max_length=self.server.max_receive_message_length
                )
            except MessageError as exc:
                self._refuse_message(stream, exc)
                return
            call.expected = 5 + length
        if size > call.expected:  # a unary call takes one message: the rest is not read
            self._status(stream, StatusCode.INTERNAL, "unary call sent more than one message")

    def on_buffer_exceeded(self, stream: Stream) -> None:
        self._status(
            stream, StatusCode.RESOURCE_EXHAUSTED,
            f"the connection holds over {self.budget.max_buffered_request_bytes} request bytes",
            extra=_TOO_LARGE_CODE,
        )  # fmt: skip

    def on_request_end(self, stream: Stream) -> None:
        call = stream.call
        if call is None or stream.closed:
            return
        limit = self.server.max_receive_message_length
        payload: bytes | memoryview
        try:
            compressed, payload = read_unary(stream.body, max_length=limit)
            if compressed:
                payload = inflate(payload, call.encoding or b"identity", limit=limit)
        except MessageError as exc:
            self._refuse_message(stream, exc)
            return
        self._starting.append((stream, call, payload))

    def on_read_done(self) -> None:
        starting = self._starting
        if starting:
            self._starting = []
            self.server.queue(self, starting)

    def start_calls(self, starting: _Starting) -> None:
        """Start the calls :meth:`on_read_done` queued, holding what they write (the server
        sends it once every connection's calls of the pass started)."""
        self.hold_writes()
        try:
            for stream, call, payload in starting:
                if not stream.closed:  # not reset since its request ended (rapid reset)
                    self._start(stream, call, payload)
        except Exception:
            logger.exception("HTTP/2 connection failed")
            self._fail(ErrorCode.INTERNAL_ERROR, "internal error")

    def _start(self, stream: Stream, call: _Call, payload: bytes | memoryview) -> None:
        # The call starts right here, in a context of its own; a task takes over only if it
        # has to wait (cheap sync models answer without one: ~10 µs a call saved).
        coro = self._run(stream, call, payload)
        context = contextvars.copy_context()
        try:
            blocked = context.run(coro.send, None)
        except StopIteration:
            return
        task = self._loop.create_task(resume(coro, blocked), context=context)
        call.task = task
        self.server.tasks.add(task)

    def on_stream_reset(self, stream: Stream) -> None:
        call = stream.call
        if call is None:
            return
        if call.timer is not None:
            call.timer.cancel()
        call.context.cancel()
        if call.task is not None and not call.task.done():
            if call.context.code() is None:
                call.context.set_code(StatusCode.CANCELLED)
            call.task.cancel()

    def _expire(self, stream: Stream) -> None:
        call = stream.call
        call.timer = None
        if stream.closed:
            return
        call.context.set_code(StatusCode.DEADLINE_EXCEEDED)
        call.context.set_details("Deadline Exceeded")
        if call.task is None:  # the request is still arriving
            self._status(stream, StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        elif not call.task.done():
            call.task.cancel()

    def _refuse_message(self, stream: Stream, exc: MessageError) -> None:
        """A request message that cannot be taken (gRPC framing, size or compression; see
        :mod:`moorage.core.http2.grpcwire`): its status, with the encodings accepted
        (UNIMPLEMENTED) or the error code of a message too large (RESOURCE_EXHAUSTED)."""
        extra = b""
        if exc.status == "UNIMPLEMENTED":
            extra = _ACCEPT_ENCODING_FIELD
        elif exc.status == "RESOURCE_EXHAUSTED":
            extra = _TOO_LARGE_CODE
        self._status(stream, StatusCode[exc.status], exc.message, extra=extra)

    # ------------------------------------------------------------------ calls
    async def _run(self, stream: Stream, call: _Call, payload: bytes | memoryview) -> None:
        server = self.server
        context = call.context
        server.active += 1
        try:
            reply = await call.behavior(payload, context)
        except AbortError:
            self._status(stream, context.code() or StatusCode.UNKNOWN, context.details(),
                         context)  # fmt: skip
            return
        except asyncio.CancelledError:
            code = context.code() or StatusCode.CANCELLED
            self._status(stream, code, context.details() or "call cancelled", context)
            return
        except Exception:
            logger.exception("gRPC call on %s failed", self.peer())
            self._status(stream, StatusCode.UNKNOWN, "internal error", context)
            return
        finally:
            server.active -= 1
            server.tasks.discard(call.task)
            if call.timer is not None:
                call.timer.cancel()
            context.finish()
        if stream.closed:
            return
        if len(reply) > server.max_send_message_length:
            self._status(
                stream, StatusCode.RESOURCE_EXHAUSTED,
                f"Sent message larger than max ({len(reply)} vs. "
                f"{server.max_send_message_length})", context,
            )  # fmt: skip
            return
        context.headers_sent = True
        head = _HEAD_OK + _metadata_fields(context.initial) if context.initial else _HEAD_OK
        trailers = _status_fields(context.code() or StatusCode.OK, context.details())
        if context.trailing:
            trailers += _metadata_fields(context.trailing)
        prefix = b"\x00" + len(reply).to_bytes(4, "big")
        self.respond(stream, head, (prefix, reply), trailers)

    def _status(
        self,
        stream: Stream,
        code: StatusCode | grpc.StatusCode,
        details: str | None,
        context: NativeContext | None = None,
        *,
        http_status: bytes | None = None,
        extra: bytes = b"",
    ) -> None:
        """A trailers-only response (also what a failed call gets)."""
        if stream.closed:
            return
        call = stream.call
        if call is not None and call.timer is not None:
            call.timer.cancel()
            call.timer = None
        status = STATUS_200 if http_status is None else header_field(b":status", http_status)
        block = status + _CONTENT_TYPE + _status_fields(code, details) + extra
        if context is not None:
            context.headers_sent = True
            if context.initial:
                block += _metadata_fields(context.initial)
            if context.trailing:
                block += _metadata_fields(context.trailing)
        self.respond_trailers_only(stream, block)


class NativeGrpcServer:
    """The inference service on the native HTTP/2 server; grpc.aio's server interface
    (``add_insecure_port``, ``await start()``, ``await stop(grace)``)."""

    def __init__(
        self,
        servicer: InferenceServicer,
        *,
        max_send_message_length: int = DEFAULT_MAX_GRPC_MESSAGE_LENGTH,
        max_receive_message_length: int = DEFAULT_MAX_GRPC_MESSAGE_LENGTH,
        max_concurrent_rpcs: int | None = None,
        max_concurrent_streams: int = 100,
        max_header_list_size: int = 16384,
        max_connections: int | None = None,
        budget: PeerBudget = PeerBudget(),
        interceptors: Sequence[Any] = (),
    ) -> None:
        def wrap(name: str, behavior: Any) -> Any:
            for interceptor in reversed(interceptors):
                behavior = interceptor.wrap_async(name, behavior)
            return behavior

        self.servicer = servicer
        self.methods: dict[bytes, Behavior] = {
            f"/{SERVICE_NAME}/{name}".encode(): behavior
            for name, behavior in servicer.async_handlers(wrap).items()
        }
        self.max_send_message_length = max_send_message_length
        self.max_receive_message_length = max_receive_message_length
        self.max_concurrent_rpcs = max_concurrent_rpcs
        self.max_concurrent_streams = max_concurrent_streams
        self.max_header_list_size = max_header_list_size
        self.max_connections = max_connections
        self.budget = budget
        self.connections: set[GrpcConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        #: Calls running, and calls queued to start (see :meth:`queue`).
        self.active = 0
        self.queued = 0
        self._queue: list[tuple[GrpcConnection, _Starting]] = []
        self.stopping = False
        self._sockets: list[socket.socket] = []
        self._acceptors: list[Acceptor] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: asyncio.Event | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "the server is not started"
        return self._loop

    def add_insecure_port(self, address: str) -> int:
        """Listen on ``host:port`` (``[::]:port`` for every address); returns the port."""
        host, _, port = address.rpartition(":")
        sock = bind_reuseport_socket(host.strip("[]"), int(port))
        self._sockets.append(sock)
        return int(sock.getsockname()[1])

    async def start(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self.servicer.loop = loop
        for sock in self._sockets:
            self._acceptors.append(
                Acceptor(
                    loop, sock, lambda: GrpcConnection(self),
                    max_connections=self.max_connections, open_connections=self._open_connections,
                )
            )  # fmt: skip
        self._sweeper = loop.create_task(self._sweep())

    def _open_connections(self) -> int:
        return len(self.connections)

    async def _sweep(self) -> None:
        """Apply each connection's timeouts a few times a second (one timer for all)."""
        budget = self.budget
        shortest = min(budget.handshake_timeout_s, budget.header_timeout_s, budget.idle_timeout_s)
        tick = min(1.0, max(0.05, shortest / 4))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for connection in list(self.connections):
                connection.check_timeouts(now)

    def queue(self, connection: GrpcConnection, starting: _Starting) -> None:
        """Start ``starting`` (calls whose request ended in a read of ``connection``) with the
        other calls of this event-loop pass, after its reads."""
        if not self._queue:
            self.loop.call_soon(self._start_queued)
        self._queue.append((connection, starting))
        self.queued += len(starting)

    def _start_queued(self) -> None:
        queue, self._queue = self._queue, []
        self.queued = 0
        for connection, starting in queue:
            connection.start_calls(starting)
        for connection, _ in queue:
            connection.send_held()

    def connection_closed(self, connection: GrpcConnection) -> None:
        self.connections.discard(connection)
        if not self.connections and self._idle is not None:
            self._idle.set()

    async def stop(self, grace: float | None) -> None:
        """Refuse new calls; let the running ones finish for up to ``grace`` seconds (``None``
        or 0: cancel them now); then close every connection."""
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for acceptor in self._acceptors:
            acceptor.close()
        for sock in self._sockets:
            sock.close()
        for acceptor in self._acceptors:
            await acceptor.wait_closed()
        if self.connections and grace:
            for connection in list(self.connections):
                connection.drain()
            assert self._idle is not None
            if self.connections:
                self._idle.clear()
                try:
                    await asyncio.wait_for(self._idle.wait(), grace)
                except TimeoutError:
                    logger.info(
                        "gRPC: %d calls still running after %.1f s; cancelling them",
                        self.active,
                        grace,
                    )
        for connection in list(self.connections):
            connection.abort()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=5)
