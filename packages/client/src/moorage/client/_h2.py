"""An HTTP/2 client connection (RFC 9113) for request/response exchanges, on asyncio.

The frame layer, SETTINGS, connection windows, PING, GOAWAY parsing, header blocks (HPACK)
and every protocol check are :class:`moorage.core.http2.Endpoint`'s, shared with the server;
this module adds what only a client does, written for a low CPU cost per exchange: the stream
table, one write per small request (HEADERS and DATA joined), frames parsed in place from
what the socket delivered, the control frames an input burst calls for (SETTINGS and PING
acks, WINDOW_UPDATE) sent in one write, one future per stream, deadlines on one timer.

- Flow control both ways: bodies larger than the server's windows wait for its WINDOW_UPDATEs
  (and for the socket to drain); what arrives is acknowledged once half of a window has been
  used, and DATA beyond a stream's window is a stream error (FLOW_CONTROL_ERROR).
- SETTINGS_MAX_CONCURRENT_STREAMS: a request above the limit waits for a stream to end.
- HEADERS, DATA or WINDOW_UPDATE on a stream this side never opened: PROTOCOL_ERROR.
- 1xx responses skipped; trailers without END_STREAM reset the stream.
- RST_STREAM both ways; GOAWAY: streams above the last stream id fail as *refused* (never
  processed: safe to retry), the connection takes no new streams and closes once the others
  end. A protocol error from the server: GOAWAY with its code, the connection closed.
- A deadline resets the stream with CANCEL; so does a cancelled caller.

Failures are :class:`StreamError` (with ``refused`` when the server cannot have seen the
request, ``connection`` when the connection broke); the gRPC layer gives them meaning.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from typing import Any

from moorage.core.http2.connection import Endpoint
from moorage.core.http2.frames import (
    DATA,
    END_STREAM,
    HEAD,
    MAX_STREAM_ID,
    ConnectionFailure,
    ErrorCode,
    Setting,
    StreamFailure,
    error_name,
    grow_window,
    header_block_frames,
    rst_stream,
    window_update,
)
from moorage.core.http2.hpack import Headers
from moorage.core.http2.limits import PeerBudget

__all__ = [
    "BodyTooLarge",
    "Connection",
    "DeadlineExceeded",
    "Stream",
    "StreamError",
    "connect",
]

CANCEL = ErrorCode.CANCEL
REFUSED_STREAM = ErrorCode.REFUSED_STREAM

#: What this side asks of the server: no push; 8 MiB per stream and 32 MiB per connection
#: of unacknowledged DATA (acknowledged at half); DATA frames of up to 1 MiB; header blocks
#: (with their CONTINUATIONs) of up to 1 MiB, decoded header lists of up to 1 MiB.
STREAM_WINDOW = 8 << 20
CONNECTION_WINDOW = 32 << 20
MAX_FRAME_IN = 1 << 20
MAX_HEADER_BLOCK = 1 << 20
MAX_HEADER_LIST = 1 << 20
#: What a server may make the client do per second before the connection is ended (GOAWAY
#: ENHANCE_YOUR_CALM): core's defaults, but RST_STREAMs answer our own requests (a server
#: refusing streams under load resets as many as it is sent), so their rate is the server's.
_BUDGET = PeerBudget(resets_per_second=1_000_000)
_CLIENT_SETTINGS = (
    (Setting.ENABLE_PUSH, 0),
    (Setting.INITIAL_WINDOW_SIZE, STREAM_WINDOW),
    (Setting.MAX_FRAME_SIZE, MAX_FRAME_IN),
)
_SMALL_BODY = 64 * 1024  # a body up to this, within the windows, goes out with its HEADERS
_READ_SIZE = 256 * 1024  # the read buffer (asyncio's own read size)
_DEADLINE_SLACK = 1e-4  # a deadline this close counts as passed (timers may fire early)


class StreamError(Exception):
    """A request that got no complete response.

    ``refused``: the server cannot have processed it (REFUSED_STREAM, above a GOAWAY's last
    stream id, or never sent); ``connection``: the connection failed under it; ``code``: the
    HTTP/2 error code of a RST_STREAM from the server.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        refused: bool = False,
        connection: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.refused = refused
        self.connection = connection


class DeadlineExceeded(StreamError):
    """The deadline passed before the response was complete (the stream was reset)."""


class BodyTooLarge(StreamError):
    """The response body went over the caller's limit (the stream was reset)."""

    def __init__(self, message: str, first: bytes) -> None:
        super().__init__(message)
        self.first = first  # the start of the body (a gRPC length prefix)


class Stream:
    """One request/response exchange: the response ``headers``, ``data`` chunks, ``trailers``."""

    __slots__ = (
        "data",
        "deadline",
        "ended",
        "headers",
        "id",
        "limit",
        "pending",
        "received",
        "send_window",
        "trailers",
        "unacked",
        "waiter",
    )

    def __init__(
        self, stream_id: int, waiter: asyncio.Future[Stream], window: int, limit: int | None
    ) -> None:
        self.id = stream_id
        self.waiter = waiter
        self.send_window = window
        self.limit = limit
        self.headers: Headers | None = None
        self.trailers: Headers | None = None
        self.data: list[bytes | memoryview] = []
        self.received = 0
        self.unacked = 0
        self.pending: deque[memoryview] | None = None  # body not yet sent (flow control)
        self.ended = False  # the server ended its side
        self.deadline: float | None = None


class Connection(Endpoint, asyncio.BufferedProtocol):
    """One HTTP/2 connection to a server; :meth:`request` runs one exchange on a new stream.

    A buffered protocol: the socket is read into one buffer of this connection. (A plain
    ``Protocol`` gets a new ``bytes`` from ``sock.recv(256 KiB)`` per read, which allocates
    and frees 256 KiB each time.)
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(
            client=True,
            settings=_CLIENT_SETTINGS,
            connection_window=CONNECTION_WINDOW,
            max_header_list_size=MAX_HEADER_LIST,
            max_header_block=MAX_HEADER_BLOCK,
            encoder=True,
            budget=_BUDGET,
        )
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, Stream] = {}
        self._next_id = 1
        self._failure = ""  # why the connection ended, for the streams it takes down
        self.alpn_error: str | None = None
        self._blocked: list[Stream] = []  # streams with body waiting for window or drain
        self._paused = False
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        # one timer for all deadlines, due no later than the nearest one (a timer per stream
        # would be made and cancelled on every call)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._buffer = bytearray(_READ_SIZE)
        self._view = memoryview(self._buffer)
        # self.out (Endpoint's) holds output waiting for one write: the control frames an input
        # burst calls for, and what must follow them (a SETTINGS ack, then frames it allows)
        self._receiving = False
        self._flush_soon: asyncio.Handle | None = None
        assert self.encoder is not None
        self._encoder = self.encoder

    # ------------------------------------------------------------------------- asyncio
    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._view[:nbytes]))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            alpn = ssl_object.selected_alpn_protocol()
            if alpn not in (None, "h2"):
                self.alpn_error = f"the server chose ALPN protocol {alpn!r}, not 'h2'"
                self._fail_connection(self.alpn_error)
                return
        transport.write(self.opening())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._receiving = True
        try:
            self.receive(data)
        except ConnectionFailure as exc:
            self._protocol_error(exc.code, str(exc))
        finally:
            self._receiving = False
        if self.out:
            self._flush()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost fails what is left

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._failure:
            self._failure = f"connection lost: {exc}" if exc else "connection closed by the server"
        streams = list(self._streams.values())
        self._streams.clear()
        self._blocked.clear()
        goaway = self.goaway_last
        for stream in streams:
            refused = goaway is not None and stream.id > goaway
            self._settle(stream, StreamError(self._failure, refused=refused, connection=True))
        self._wake_all()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._unblock()

    # ------------------------------------------------------------------------- requests
    @property
    def usable(self) -> bool:
        """Open, not going away, stream ids left: new requests may use it."""
        return not self.closed and self.goaway_last is None and self._next_id < MAX_STREAM_ID

    @property
    def idle(self) -> bool:
        return not self._streams

    async def request(
        self,
        fields: Headers,
        extra: bytes,
        prefix: bytes,
        body: bytes,
        deadline: float | None,
        limit: int | None = None,
    ) -> Stream:
        """Send HEADERS (``fields``, indexed, then the HPACK bytes ``extra``) and the body
        ``prefix + body``; the complete response.

        ``deadline`` is in ``loop.time()``; ``limit`` bounds the response body's size.
        """
        if len(self._streams) >= self.peer_max_streams:
            await self._wait_for_slot(deadline)
        if not self.usable:
            raise StreamError(self._failure or "connection going away", refused=True)
        transport = self._transport
        assert transport is not None
        stream_id = self._next_id
        self._next_id += 2
        self.pings.count = 0  # a PING while calls are made is not a strike (grpcio's policy)
        waiter: asyncio.Future[Stream] = self._loop.create_future()
        stream = Stream(stream_id, waiter, self.peer_initial_window, limit)
        self._streams[stream_id] = stream
        # encoded here, in the order the blocks go out (the server's table follows it)
        block = self._encoder.encode(fields)
        if extra:
            block += extra
        max_frame = self.peer_max_frame
        head = header_block_frames(stream_id, block, 0, max_frame)
        length = len(prefix) + len(body)
        if (
            length <= _SMALL_BODY
            and length <= max_frame
            and length <= self.send_window
            and length <= stream.send_window
            and not self._paused
        ):
            self.send_window -= length
            stream.send_window -= length
            data = HEAD.pack(length << 8 | DATA, END_STREAM, stream_id)
            # written now, not batched with the other callers an input burst woke: a server
            # then works on this call while they run (batching saved client CPU but put client
            # and server in lock-step, see bench/RESULTS.md "Native HTTP/2 gRPC transport")
            if self.out:
                self._send(b"".join((head, data, prefix, body)))
            else:
                transport.write(b"".join((head, data, prefix, body)))
        else:
            self.out.append(head)
            stream.pending = deque((memoryview(prefix), memoryview(body)))
            self._pump(stream)
        if deadline is not None:
            stream.deadline = deadline
            if deadline < self._timer_at:
                self._arm(deadline)
        try:
            return await waiter
        except asyncio.CancelledError:
            self._reset(stream, CANCEL)
            raise

    def close(self, code: int = ErrorCode.NO_ERROR) -> None:
        """Say GOAWAY and close; streams still open fail as a lost connection."""
        transport = self._transport
        if transport is None or self.closed:
            return
        self._failure = self._failure or "connection closed by the client"
        self.closed = True
        with contextlib.suppress(RuntimeError):  # its event loop is already closed
            self.out.append(self.goaway_frame(code))
            self._flush()
            transport.close()

    # ------------------------------------------------------------------------- sending
    def _send(self, data: bytes) -> None:
        """Queue ``data`` behind what is queued; written once, soon (or after the input)."""
        self.out.append(data)
        if not self._receiving and self._flush_soon is None:
            self._flush_soon = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = None
        out, self.out = self.out, []
        transport = self._transport
        if out and transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _pump(self, stream: Stream) -> None:
        """Send as much of ``stream``'s pending body as windows and the socket allow."""
        pending = stream.pending
        transport = self._transport
        if pending is None or transport is None or transport.is_closing():
            return
        if self.out:  # what is queued first: a SETTINGS ack must precede frames it allows
            self._flush()
        while pending:
            allowed = min(self.send_window, stream.send_window, self.peer_max_frame)
            if allowed <= 0 or self._paused:
                if stream not in self._blocked:
                    self._blocked.append(stream)
                return
            pieces: list[memoryview] = []
            size = 0
            while pending and size < allowed:
                chunk = pending[0]
                take = min(len(chunk), allowed - size)
                if take == len(chunk):
                    pieces.append(pending.popleft())
                else:
                    pieces.append(chunk[:take])
                    pending[0] = chunk[take:]
                size += take
            self.send_window -= size
            stream.send_window -= size
            flags = 0 if pending else END_STREAM
            header = HEAD.pack(size << 8 | DATA, flags, stream.id)
            transport.writelines([header, *pieces])
        stream.pending = None
        if stream in self._blocked:
            self._blocked.remove(stream)

    def _unblock(self) -> None:
        for stream in list(self._blocked):
            if self._paused:
                return
            self._blocked.remove(stream)
            if stream.id in self._streams:
                self._pump(stream)

    def _reset(self, stream: Stream, code: int) -> None:
        """Forget ``stream`` and tell the server (RST_STREAM ``code``), if it was open."""
        if self._streams.pop(stream.id, None) is None:
            return
        stream.pending = None
        if stream in self._blocked:
            self._blocked.remove(stream)
        self._send(rst_stream(stream.id, code))
        self._stream_ended()

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        """Reset the streams whose deadline passed; re-arm for the nearest other one."""
        self._timer, self._timer_at = None, math.inf
        now = self._loop.time() + _DEADLINE_SLACK
        nearest = math.inf
        for stream in list(self._streams.values()):
            deadline = stream.deadline
            if deadline is None:
                continue
            if deadline <= now:
                self._reset(stream, CANCEL)
                self._settle(stream, DeadlineExceeded("Deadline Exceeded"))
            elif deadline < nearest:
                nearest = deadline
        if nearest < math.inf and not self.closed:
            self._arm(nearest)

    def _settle(self, stream: Stream, error: StreamError) -> None:
        if not stream.waiter.done():
            stream.waiter.set_exception(error)

    # ------------------------------------------------------------------------- streams
    async def _wait_for_slot(self, deadline: float | None) -> None:
        while len(self._streams) >= self.peer_max_streams and self.usable:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._slot_waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                raise DeadlineExceeded("Deadline Exceeded") from None
            finally:
                if not waiter.done():
                    waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._slot_waiters.remove(waiter)

    def _stream_ended(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break
        if self.goaway_last is not None and not self._streams:
            self.close()

    def _wake_all(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _finish(self, stream: Stream) -> None:
        stream.ended = True
        if self._streams.pop(stream.id, None) is None:
            return
        if stream.pending is not None:  # answered before the whole body went out
            stream.pending = None
            if stream in self._blocked:
                self._blocked.remove(stream)
            self._send(rst_stream(stream.id, CANCEL))
        if not stream.waiter.done():
            stream.waiter.set_result(stream)
        self._stream_ended()

    # ------------------------------------------------------------------------- receiving
    def _opened(self, stream_id: int) -> bool:
        """Whether ``stream_id`` is one this side opened (it may have ended since)."""
        return bool(stream_id & 1) and stream_id < self._next_id

    def on_data(
        self, stream_id: int, flags: int, data: bytes, start: int, stop: int, size: int
    ) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            if not self._opened(stream_id):
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a stream we reset or gave up on
        unacked = stream.unacked + size
        if unacked > STREAM_WINDOW:
            raise StreamFailure(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        if start < stop:
            if stream.headers is None:
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "DATA before HEADERS")
            chunk = data[start:stop] if stop - start < 4096 else memoryview(data)[start:stop]
            stream.data.append(chunk)
            stream.received += stop - start
            if stream.limit is not None and stream.received > stream.limit:
                first = bytes(stream.data[0][:5])
                self._reset(stream, CANCEL)
                self._settle(stream, BodyTooLarge("response body over the limit", first))
                return
        if flags & END_STREAM:
            self._finish(stream)
            return
        if unacked >= STREAM_WINDOW // 2:
            self.out.append(window_update(stream.id, unacked))
            unacked = 0
        stream.unacked = unacked

    def on_headers(self, stream_id: int, end_stream: bool, headers: Headers) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            if not self._opened(stream_id):
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "HEADERS on an idle stream")
            return
        if stream.headers is None:
            if headers and headers[0][0] == b":status" and headers[0][1][:1] == b"1":
                return  # informational (1xx): the real response follows
            stream.headers = headers
        else:
            if not end_stream:
                raise StreamFailure(ErrorCode.PROTOCOL_ERROR, "trailers without END_STREAM")
            stream.trailers = headers
        if end_stream:
            self._finish(stream)

    def on_stream_error(self, stream_id: int, exc: StreamFailure) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            super().on_stream_error(stream_id, exc)
            return
        self._reset(stream, exc.code)
        self._settle(stream, StreamError(f"{exc} ({error_name(exc.code)})"))

    def on_max_streams(self, value: int) -> None:
        if len(self._streams) < value:
            self._wake_all()

    def on_initial_window(self, delta: int) -> None:
        for stream in self._streams.values():
            stream.send_window += delta
            if stream.send_window > 0x7FFFFFFF:
                raise ConnectionFailure(ErrorCode.FLOW_CONTROL_ERROR, "stream window overflow")

    def on_window_open(self) -> None:
        self._unblock()

    def on_stream_window(self, stream_id: int, increment: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            if not self._opened(stream_id):
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return
        stream.send_window = grow_window(stream.send_window, increment, stream_id)
        if stream.pending is not None and not self._paused:
            if stream in self._blocked:
                self._blocked.remove(stream)
            self._pump(stream)

    def on_reset(self, stream_id: int, code: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            if not self._opened(stream_id):
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
            return
        stream.pending = None
        if stream in self._blocked:
            self._blocked.remove(stream)
        self._settle(
            stream,
            StreamError(
                f"stream reset by the server ({error_name(code)})",
                code=code,
                refused=code == REFUSED_STREAM,
            ),
        )
        self._stream_ended()

    def on_goaway(self, last_stream_id: int, code: int, debug: bytes) -> None:
        text = debug[:200].decode("utf-8", "replace")
        reason = error_name(code)
        self._failure = f"server sent GOAWAY ({reason}{': ' + text if text else ''})"
        for stream_id in [s for s in self._streams if s > last_stream_id]:
            stream = self._streams.pop(stream_id)
            stream.pending = None
            if stream in self._blocked:
                self._blocked.remove(stream)
            self._settle(stream, StreamError(self._failure, refused=True))
        self._wake_all()
        if not self._streams:
            self.close()

    # ------------------------------------------------------------------------- failures
    def _protocol_error(self, code: int, message: str) -> None:
        self._failure = f"HTTP/2 protocol error ({error_name(code)}): {message}"
        self.out.append(self.goaway_frame(code, message.encode()))
        self._flush()
        self._fail_connection(self._failure)

    def _fail_connection(self, message: str) -> None:
        self._failure = self._failure or message
        self.closed = True
        if self._transport is not None:
            self._transport.close()


async def connect(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    *,
    ssl: Any = None,
    server_hostname: str | None = None,
) -> Connection:
    """A new :class:`Connection` (TCP, TLS with ALPN ``h2`` when ``ssl`` is a context)."""
    _, conn = await loop.create_connection(
        lambda: Connection(loop),
        host,
        port,
        ssl=ssl,
        server_hostname=server_hostname if ssl is not None else None,
    )
    if conn.alpn_error is not None:
        raise ConnectionError(conn.alpn_error)
    return conn
