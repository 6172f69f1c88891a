"""uvicorn's httptools protocol with the read timeouts uvicorn lacks.

uvicorn bounds only the keep-alive pause between requests (``timeout_keep_alive``); a client
that connects and says nothing, trickles its request headers (slowloris) or its body holds
the connection for ever. :class:`TimedHttpProtocol` gives each connection a deadline:

- headers: from the connection's start, or a request's first byte, until its headers are in
  (``header_timeout_s``);
- body: from the headers until the request's last byte (``body_timeout_s``), whatever the
  pace at which it arrives;
- none while the application answers, unless the client stops reading its response: a
  response stalled (the transport paused writing) for ``body_timeout_s`` ends the connection;
- between requests, uvicorn's keep-alive timeout (``--http_keep_alive_timeout_seconds``): the
  idle connection is closed, without a response. uvicorn arms a timer for it after every
  response and cancels it at the next request; here it is one more deadline.

The request line and headers are also bounded in bytes (``max_header_bytes``; uvicorn's
httptools parser has no limit and buffers a header without end): past it the client gets
``431 Request Header Fields Too Large`` and the connection closes. The bytes are counted per
read while headers are awaited, an addition per read.

Deadlines are plain numbers set at those points (no timer per request); :func:`sweep`, called
twice a second by the server, answers the connections past theirs with ``408 Request
Timeout`` (when no response was started, and not between requests) and closes them.

:class:`DirectApp` is the application the protocol runs per request: the inference requests
the hot path accepts (:meth:`~moorage.server.rest.hotpath.HotPath.direct`) are answered
without ASGI's messages, the head and body written at once, after the same checks uvicorn's
``send`` makes (header syntax, ``Connection: close``, a paused transport, a client gone);
every other request goes to the application through ASGI.

While more requests wait for their answer, the hot path's responses made without waiting
(the model ran inline) are held and written together (:class:`HeldWrites`): by the last answer
of the loop's pass, or at the latest once the pass is over. The pass's requests are answered
back to back, then each connection gets its write, so the CPU's caches hold one kind of work
at a time (about 10% less CPU a request at 8 connections). A lone request's answer is written
at once, and so is one that waited (a model on a thread, the batcher: holding it would wait
for the event loop's next pass, which a busy thread can delay by its GIL switch interval).
Anything else written on such a connection (a response through ASGI, a ``408`` or ``431``, a
``400`` from the parser) comes after: the connection sends what it holds first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from moorage.server._stepping import resume

__all__ = ["DirectApp", "HeldWrites", "RestLimits", "TimedHttpProtocol", "sweep"]

logger = logging.getLogger(__name__)


def _response(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n%s" % (status, len(body), body)
    )


_TIMEOUT_RESPONSE = _response(
    b"408 Request Timeout", b'{"error":"request not received in time","code":"timeout"}'
)
_TOO_LARGE_RESPONSE = _response(
    b"431 Request Header Fields Too Large",
    b'{"error":"request headers too large","code":"payload_too_large"}',
)


@dataclass(frozen=True, slots=True)
class RestLimits:
    """Seconds a REST client may take to send a request's headers, and then its body; the
    most bytes its request line and headers may take."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    #: Bytes of request line and headers.
    max_header_bytes: int = 64 * 1024


class HeldWrites:
    """Responses held to be written together, per transport in the order they were made: by
    :meth:`send`, which runs at the latest once the event loop's pass is over (the callbacks
    ready when the first was held have run)."""

    __slots__ = ("_out", "unanswered")

    def __init__(self) -> None:
        self._out: dict[asyncio.Transport, list[bytes]] = {}
        #: Requests read whose response is not complete, on every connection of the loop
        #: (kept by :class:`TimedHttpProtocol`).
        self.unanswered = 0

    def write(self, transport: asyncio.Transport, data: bytes) -> None:
        out = self._out
        if not out:
            asyncio.get_running_loop().call_soon(self.send)
        pieces = out.get(transport)
        if pieces is None:
            out[transport] = [data]
        else:
            pieces.append(data)

    def send(self) -> None:
        """Write everything held."""
        out = self._out
        if not out:  # (the common case of a request answered alone)
            return
        self._out = {}
        for transport, pieces in out.items():
            if not transport.is_closing():
                transport.writelines(pieces)

    def send_for(self, transport: asyncio.Transport) -> None:
        """Write what ``transport`` holds now, before anything else is written on it."""
        pieces = self._out.pop(transport, None)
        if pieces is not None and not transport.is_closing():
            transport.writelines(pieces)


class DirectApp:
    """The ASGI application the protocol runs: ``app``, except for the requests the hot path
    of ``source`` (a Starlette app whose middleware stack is a ``HotPath`` once built) answers
    directly."""

    def __init__(self, app: ASGIApp, source: Any) -> None:
        self.app = app
        self._source = source
        self._direct: Callable[[Scope], Any] | None = None
        #: The direct responses of the event loop's pass (one loop runs this app).
        self.held = HeldWrites()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        direct = self._direct or self._find()
        cycle = getattr(send, "__self__", None)
        answer = None
        if direct is not None and scope["type"] == "http" and type(cycle) is RequestResponseCycle:
            answer = direct(scope)
        if answer is None:
            await self.app(scope, receive, send)
            return
        assert isinstance(cycle, RequestResponseCycle)
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        coro = answer(body)
        try:  # its first step by hand: did it answer without waiting?
            blocked = coro.send(None)
        except StopIteration as done:
            status, headers, payload = done.value
            await _respond(cycle, status, headers, payload, self.held, hold=True)
            return
        status, headers, payload = await resume(coro, blocked)
        await _respond(cycle, status, headers, payload, self.held, hold=False)

    def _find(self) -> Callable[[Scope], Any] | None:
        """The hot path's ``direct``, once the app has built its middleware stack."""
        stack = getattr(self._source, "middleware_stack", None)
        if stack is None:
            return None  # not built before its first request: that one goes through ASGI
        self._direct = getattr(stack, "direct", None) or _no_direct
        return self._direct


def _no_direct(scope: Scope) -> None:
    return None


async def _respond(
    cycle: RequestResponseCycle,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes | memoryview,
    held: HeldWrites,
    *,
    hold: bool,
) -> None:
    """What uvicorn's ``send`` does for a start and a last body message, in one write: held
    (with ``hold``) while other requests wait for their answer, unless the connection closes
    after it; otherwise sent at once with what is held."""
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    if cycle.disconnected:
        return
    content: list[bytes | memoryview] = [STATUS_LINE[status]]
    for name, value in cycle.default_headers:
        content.extend((name, b": ", value, b"\r\n"))
    says_close = False
    for name, value in headers:
        if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
            raise RuntimeError(f"invalid HTTP response header {name!r}")  # uvicorn: a 500
        if name == b"connection" and b"close" in value.lower():
            cycle.keep_alive = False
            says_close = True
        content.extend((name, b": ", value, b"\r\n"))
    if not cycle.keep_alive and not says_close:
        content.append(b"connection: close\r\n")
    content.append(b"\r\n")
    content.append(body)
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.response_complete = True
    cycle.message_event.set()
    transport = cycle.transport
    data = b"".join(content)
    if hold and cycle.keep_alive and held.unanswered > 1:  # (this request is one of them)
        held.write(transport, data)
    else:
        held.send()
        transport.write(data)
        if not cycle.keep_alive:
            transport.close()
    cycle.on_response()


class TimedHttpProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with a read deadline (see the module docstring); ``app``:
    the application to run instead of the config's (a :class:`DirectApp` around it)."""

    def __init__(
        self, *args: Any, limits: RestLimits, app: ASGIApp | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        #: The direct responses held (``app``'s), sent before anything else on this connection.
        self._held: HeldWrites | None = None
        if app is not None:
            self.app = app
            if isinstance(app, DirectApp):
                self._held = app.held
        self._header_s = limits.header_timeout_s
        self._body_s = limits.body_timeout_s
        self._max_header_bytes = limits.max_header_bytes
        #: ``time.monotonic()`` past which the request being read is late; 0 when none is.
        self.deadline = 0.0
        #: Bytes read while a request's headers are awaited (-1: not awaiting them).
        self._header_bytes = -1
        #: ``deadline`` is that of a response the client stopped reading.
        self._write_stalled = False
        #: A request is being read (from its first byte to its last).
        self._reading = False
        #: ``deadline`` is the keep-alive timeout: the connection waits for its next request.
        self._idle = False
        #: This connection's share of ``HeldWrites.unanswered``.
        self._unanswered = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.deadline = time.monotonic() + self._header_s
        self._header_bytes = 0

    def data_received(self, data: bytes) -> None:
        # What this read causes (a response, an error) goes out after what the connection
        # holds.
        if self._held is not None:
            self._held.send_for(self.transport)
        if self._header_bytes < 0:
            super().data_received(data)
            return
        self._header_bytes += len(data)
        super().data_received(data)
        # Still awaiting headers after the whole read was parsed: what was read is headers.
        if self._header_bytes > self._max_header_bytes:
            self._refuse(_TOO_LARGE_RESPONSE, "request headers too large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading = True
        self._idle = False
        self.deadline = time.monotonic() + self._header_s
        if self._header_bytes < 0:
            self._header_bytes = 0

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self.deadline = time.monotonic() + self._body_s
        self._header_bytes = -1

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading = False
        self.deadline = 0.0
        if self._held is not None and not self.cycle.response_complete:
            self._unanswered += 1
            self._held.unanswered += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self._unanswered:
            assert self._held is not None
            self._held.unanswered -= self._unanswered
            self._unanswered = 0
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        if self._unanswered:
            assert self._held is not None
            self._unanswered -= 1
            self._held.unanswered -= 1
        if self.pipeline or self.transport.is_closing():
            # uvicorn's: counts the request, starts the next pipelined one (no timer then)
            super().on_response_complete()
            return
        # What uvicorn's does otherwise, with the keep-alive wait a deadline, not a timer.
        self.server_state.total_requests += 1
        self.flow.resume_reading()
        if not self._reading:  # (a request already arriving keeps its own deadline)
            self.deadline = time.monotonic() + self.timeout_keep_alive
            self._idle = True
            self._write_stalled = False  # an unread response: the keep-alive timeout ends it

    def pause_writing(self) -> None:
        super().pause_writing()
        if not self.deadline:  # a response the client does not read: it may stall so long
            self.deadline = time.monotonic() + self._body_s
            self._write_stalled = True

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_stalled:
            self._write_stalled = False
            self.deadline = 0.0

    def read_timed_out(self) -> None:
        """The request did not arrive in time: 408 (unless a response started), then close;
        no next request within the keep-alive timeout: close."""
        if self._idle:
            self.deadline = 0.0
            self._idle = False
            if not self.transport.is_closing():
                logger.debug("REST client %s: keep-alive timeout: closing", self.client)
                self.transport.close()
            return
        self._refuse(_TIMEOUT_RESPONSE, "request not received in time")

    def _refuse(self, response: bytes, why: str) -> None:
        self.deadline = 0.0
        self._write_stalled = False
        self._header_bytes = -1
        transport = self.transport
        if transport.is_closing():
            return
        if self._held is not None:
            self._held.send_for(transport)
        cycle = self.cycle
        logger.debug("REST client %s: %s: closing", self.client, why)
        if cycle is None or cycle.response_complete or not cycle.response_started:
            transport.write(response)  # (a complete response is the previous request's)
        if cycle is not None and not cycle.response_complete:
            # The application sees the client gone: receive() says http.disconnect, what it
            # sends is dropped.
            cycle.disconnected = True
            cycle.keep_alive = False
            cycle.message_event.set()
        transport.close()


def sweep(connections: Iterable[Any], now: float) -> None:
    """Time out the connections whose request is late at ``now`` (``time.monotonic``)."""
    for connection in list(connections):
        deadline = getattr(connection, "deadline", 0.0)
        if deadline and deadline < now:
            connection.read_timed_out()
