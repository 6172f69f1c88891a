"""``H2Connection``: the server side of one HTTP/2 connection (RFC 9113) as an asyncio protocol.

The connection itself is :class:`moorage.core.http2.Endpoint`'s, shared with the client: the
client preface, SETTINGS both ways, the frame reader, header blocks across HEADERS and
CONTINUATION decoded by the bounded HPACK decoder (which hands back the same tuple for a block
that repeats), PING, the connection windows, DATA padding, GOAWAY and every RFC 9113 check on
them, and the flood budgets of :class:`~moorage.core.http2.limits.PeerBudget` (PINGs while no
response is sent, SETTINGS, RST_STREAMs and refused streams, frames that carry nothing). What
is here is what only a server does, through the Endpoint's hooks and for the event loop:

- The stream table: client-initiated (odd) streams only, beyond ``max_concurrent_streams``
  (or while going away) refused with RST_STREAM REFUSED_STREAM; requests and their bodies;
  stream windows both ways (WINDOW_UPDATE once half of a stream's window is used; outgoing
  DATA waits for the peer's windows and for the transport's ``resume_writing``); RST_STREAM
  both ways. A stream we reset or answered before its request ended may still receive what
  its window allowed (ignored, counted); anything more is FLOW_CONTROL_ERROR, and frames on
  other closed streams are STREAM_CLOSED (section 5.1).
- Responses: HEADERS, DATA and trailers, written once per read with what the read caused (or,
  between :meth:`~H2Connection.hold_writes` and :meth:`~H2Connection.send_held`, once for
  what a subclass did in between); header blocks are literals that never touch the client's
  table (a table size update to 0 opens the first one).
- Budgets outside the frame layer: output queued for a peer that does not read (past
  ``max_queued_output_bytes`` we stop reading it until it does); request bytes held per
  connection (``max_buffered_request_bytes``: the stream going past it is refused); the
  handshake, header-block and idle timeouts, checked by :meth:`H2Connection.check_timeouts`,
  which the server calls a few times a second.
- GOAWAY on protocol errors, and for a graceful :meth:`~H2Connection.drain`; after GOAWAY the
  socket lingers until the peer closes (see :meth:`H2Connection._close`).

Not supported: server push (never sent; a client's PUSH_PROMISE is a protocol error), the
HTTP/1.1 ``Upgrade: h2c`` dance and TLS (clients connect with prior knowledge, as gRPC clients
do over plaintext), CONNECT and extended CONNECT.

Subclasses implement the application: :meth:`~H2Connection.on_request` (a new stream's
headers), :meth:`~H2Connection.on_body` (more of its body), :meth:`~H2Connection.on_request_end`
(END_STREAM), :meth:`~H2Connection.on_stream_reset` and :meth:`~H2Connection.on_connection_lost`,
and answer with :meth:`~H2Connection.respond` or :meth:`~H2Connection.respond_trailers_only`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from typing import Any, cast

from moorage.core.http2.connection import Endpoint
from moorage.core.http2.frames import (
    DATA,
    END_HEADERS,
    END_STREAM,
    HEAD,
    HEADERS,
    MAX_WINDOW,
    ConnectionFailure,
    ErrorCode,
    Setting,
    StreamFailure,
    error_name,
    frame_header,
    grow_window,
    header_block_frames,
    rst_stream,
    window_update,
)
from moorage.core.http2.hpack import TABLE_SIZE_ZERO, Headers
from moorage.core.http2.limits import PeerBudget

__all__ = ["H2Connection", "Stream"]

logger = logging.getLogger(__name__)

#: After GOAWAY, how long the peer may take to close its side before the connection is cut.
LINGER_S = 1.0
#: No credit left on a closed stream: DATA on it is STREAM_CLOSED.
_NO_CREDIT = -1


class Stream:
    """One request stream. ``body`` collects its DATA; ``call`` is the application's state."""

    __slots__ = (
        "body", "call", "closed", "id", "out", "out_len", "recv_window", "remote_closed",
        "send_window", "trailers",
    )  # fmt: skip

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.id = stream_id
        self.body = bytearray()
        self.call: Any = None
        #: The client sent END_STREAM.
        self.remote_closed = False
        #: Finished for us: the response ended, or the stream was reset, or the connection lost.
        self.closed = False
        self.send_window = send_window
        self.recv_window = recv_window
        #: Response DATA waiting for flow-control window, and the trailers to send after it.
        self.out: collections.deque[memoryview] = collections.deque()
        self.out_len = 0
        self.trailers: bytes | None = None


class H2Connection(Endpoint, asyncio.Protocol):
    """The server side of one connection; see the module docstring.

    ``max_header_list_size`` is the header list a request may have (advertised as
    SETTINGS_MAX_HEADER_LIST_SIZE; the application answers a larger one with an error and
    keeps the connection); the HPACK decoder's hard limits are set well above it: a list of
    ``max(8 * max_header_list_size, 64 KiB)`` and an encoded block of
    ``4 * max_header_list_size + 1 KiB`` (Huffman codes are at most 30 bits a byte), past
    which the connection ends.
    """

    def __init__(
        self,
        *,
        max_concurrent_streams: int = 100,
        max_header_list_size: int = 16384,
        stream_window: int = 4 * 1024 * 1024,
        connection_window: int = 16 * 1024 * 1024,
        max_frame_size: int = 1024 * 1024,
        budget: PeerBudget = PeerBudget(),
    ) -> None:
        super().__init__(
            client=False,
            settings=(
                (Setting.MAX_CONCURRENT_STREAMS, max_concurrent_streams),
                (Setting.INITIAL_WINDOW_SIZE, stream_window),
                (Setting.MAX_FRAME_SIZE, max_frame_size),
                (Setting.MAX_HEADER_LIST_SIZE, max_header_list_size),
            ),
            connection_window=connection_window,
            max_header_list_size=max(8 * max_header_list_size, 65536),
            max_header_block=4 * max_header_list_size + 1024,
            budget=budget,
        )
        self.max_concurrent_streams = max_concurrent_streams
        self.max_header_list_size = max_header_list_size
        #: Recently closed streams -> how much DATA the peer may still send on them (the
        #: stream window left when we reset it or answered early) or ``_NO_CREDIT``.
        self._closed_streams: dict[int, int] = {}
        self._closed_limit = max(64, 4 * max_concurrent_streams)
        self._created = self._idle_since = self._block_started = 0.0
        self._idle_sid = 0
        self._idle_pending = 0
        #: Request body bytes held by the open streams (``budget.max_buffered_request_bytes``).
        self._body_bytes = 0
        self.transport: asyncio.Transport | None = None
        self._streams: dict[int, Stream] = {}
        self._blocked: dict[int, Stream] = {}
        self._paused = False
        self._first_block = True
        #: Writes go to ``self.out`` (Endpoint's), to be sent together: while a read is being
        #: handled, and between hold_writes and send_held.
        self._holding = False
        self.draining = False
        self._linger: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self.transport = transport = cast(asyncio.Transport, transport)
        self._created = self._idle_since = time.monotonic()
        high = self.budget.max_queued_output_bytes
        transport.set_write_buffer_limits(high=high, low=high // 4)
        transport.write(self.opening())

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._holding = True
        try:
            self.receive(data)
            if not self.closed:
                self.on_read_done()
        except ConnectionFailure as exc:
            self._fail(exc.code, str(exc))
        except Exception:
            logger.exception("HTTP/2 connection failed")
            self._fail(ErrorCode.INTERNAL_ERROR, "internal error")
        finally:
            self.send_held()

    def hold_writes(self) -> None:
        """Keep what is written from now on, to send it in one go at :meth:`send_held`."""
        self._holding = True

    def send_held(self) -> None:
        """Send what was written since :meth:`hold_writes` (or since the read began)."""
        self._holding = False
        out = self.out
        if out:
            self.out = []
            if not self.closed:
                assert self.transport is not None
                self.transport.writelines(out)

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._linger is not None:
            self._linger.cancel()
        streams = list(self._streams.values())
        self._streams.clear()
        self._blocked.clear()
        for stream in streams:
            stream.closed = True
            self.on_stream_reset(stream)
        self.on_connection_lost()

    def pause_writing(self) -> None:
        """The peer is not reading what we send: stop reading what it sends (PINGs and
        SETTINGS would otherwise queue answers without bound) until it catches up."""
        self._paused = True
        if not self.closed and self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if not self.closed and self.transport is not None:
            self.transport.resume_reading()
        self._flush_blocked()

    # ------------------------------------------------------------------ application hooks
    def on_request(self, stream: Stream, headers: Headers) -> None:
        """A new stream's request headers (the stream is open)."""

    def on_body(self, stream: Stream) -> None:
        """More of the request body arrived in ``stream.body`` (END_STREAM not yet)."""

    def on_request_end(self, stream: Stream) -> None:
        """The client ended the request; ``stream.body`` holds the whole body."""

    def on_buffer_exceeded(self, stream: Stream) -> None:
        """``stream``'s DATA took the connection's buffered request bytes past the budget:
        the stream must end (by default RST_STREAM ENHANCE_YOUR_CALM)."""
        self.reset(stream, ErrorCode.ENHANCE_YOUR_CALM)

    def on_read_done(self) -> None:
        """Every frame of one read was handled (a stream reset in the same read is closed by
        now: work started here is work for a live stream)."""

    def on_stream_reset(self, stream: Stream) -> None:
        """The stream ended before its response: reset by the peer or the connection lost."""

    def on_connection_lost(self) -> None:
        """The connection is gone (after :meth:`on_stream_reset` for each open stream)."""

    # ------------------------------------------------------------------ responses
    def respond(self, stream: Stream, head: bytes, data: Sequence[bytes], trailers: bytes) -> None:
        """HEADERS ``head``, DATA ``data`` (the pieces concatenated, flow-controlled), then
        HEADERS ``trailers`` with END_STREAM. Header blocks are HPACK-encoded."""
        if stream.closed:
            return
        self.pings.count = 0  # a PING while responses flow is not a strike (grpcio's policy)
        sid = stream.id
        size = 0
        for piece in data:
            size += len(piece)
        headers = self._header_frames(sid, head, 0)
        if (
            size <= self.peer_max_frame
            and size <= stream.send_window
            and size <= self.send_window
            and not self._paused
        ):
            stream.send_window -= size
            self.send_window -= size
            end = self._header_frames(sid, trailers, END_STREAM)
            self._write(b"".join((headers, frame_header(DATA, 0, sid, size), *data, end)))
            self._finish(stream)
            return
        self._write(headers)
        stream.out.extend(memoryview(piece) for piece in data if len(piece))
        stream.out_len = size
        stream.trailers = trailers
        self._flush(stream)

    def respond_trailers_only(self, stream: Stream, block: bytes) -> None:
        """One HEADERS frame with END_STREAM (a response without a body)."""
        if stream.closed:
            return
        self.pings.count = 0
        self._write(self._header_frames(stream.id, block, END_STREAM))
        self._finish(stream)

    def reset(self, stream: Stream, code: ErrorCode) -> None:
        """RST_STREAM: abandon ``stream`` (its call is told through :meth:`on_stream_reset`)."""
        if stream.closed:
            return
        self._write(rst_stream(stream.id, code))
        self._discard(stream, stream.recv_window if not stream.remote_closed else _NO_CREDIT)
        self.on_stream_reset(stream)

    def drain(self) -> None:
        """Graceful shutdown: GOAWAY naming the last stream taken; the open streams finish, new
        ones are refused; the connection closes once none is left."""
        if self.closed or self.draining:
            return
        self.draining = True
        self._write(self.goaway_frame(ErrorCode.NO_ERROR))
        if not self._streams:
            self._close()

    def abort(self) -> None:
        """Close now (the open streams are reset)."""
        if self.transport is not None:
            self.transport.abort()

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def check_timeouts(self, now: float) -> None:
        """Apply the handshake, header-block and idle timeouts at ``now`` (``time.monotonic``).

        Idle means: no call running, no new stream since the last check, and no response
        moving (a response stuck behind a window the peer never opens is no activity: that
        is how a slow reader would hold it). After ``idle_timeout_s`` of it, the streams left
        (requests still arriving, responses stuck) are reset (CANCEL) and the connection ends
        with GOAWAY NO_ERROR, as grpcio's ``max_connection_idle_ms`` does.
        """
        if self.closed:
            return
        budget = self.budget
        if not self.handshake_done:
            if now - self._created > budget.handshake_timeout_s:
                self._fail(ErrorCode.PROTOCOL_ERROR, "no client preface and SETTINGS in time")
            return
        if self.header_block_stream and now - self._block_started > budget.header_timeout_s:
            self._fail(ErrorCode.ENHANCE_YOUR_CALM, "header block not completed in time")
            return
        running = False
        pending = 0
        for stream in self._streams.values():
            if stream.remote_closed:
                if stream.out_len:
                    pending += stream.out_len
                else:
                    running = True
        moving = pending < self._idle_pending
        self._idle_pending = pending
        if running or moving or self.last_peer_stream != self._idle_sid:
            self._idle_sid = self.last_peer_stream
            self._idle_since = now
            return
        if now - self._idle_since > budget.idle_timeout_s:
            logger.debug("HTTP/2 connection idle for %.1f s: closing", now - self._idle_since)
            for stream in list(self._streams.values()):
                self.reset(stream, ErrorCode.CANCEL)
            self.drain()

    # ------------------------------------------------------------------ Endpoint's hooks
    def on_headers(self, stream_id: int, end_stream: bool, headers: Headers) -> None:
        if not stream_id & 1:
            raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        stream = self._streams.get(stream_id)
        if stream is not None:  # trailers: gRPC clients send none; they end the request
            if stream.remote_closed:
                raise StreamFailure(ErrorCode.STREAM_CLOSED, "HEADERS after END_STREAM")
            if not end_stream:
                raise StreamFailure(ErrorCode.PROTOCOL_ERROR, "trailers without END_STREAM")
            stream.remote_closed = True
            self.on_request_end(stream)
            return
        if stream_id <= self.last_peer_stream:
            credit = self._closed_streams.get(stream_id)
            if credit is None:  # section 5.1.1: a new stream must have a higher identifier
                raise ConnectionFailure(
                    ErrorCode.PROTOCOL_ERROR, f"HEADERS on old stream {stream_id}"
                )
            if credit == _NO_CREDIT:
                raise ConnectionFailure(
                    ErrorCode.STREAM_CLOSED, f"HEADERS on closed stream {stream_id}"
                )
            if end_stream:  # trailers in flight on a stream we reset: ignored
                self._closed_streams[stream_id] = _NO_CREDIT
            return
        self.last_peer_stream = stream_id
        self.pings.count = 0  # PINGs beside calls are not a flood (grpcio: pings with data)
        if (
            self.draining
            or self.goaway_last is not None
            or len(self._streams) >= self.max_concurrent_streams
        ):
            if not self.resets.spend():
                raise ConnectionFailure(ErrorCode.ENHANCE_YOUR_CALM, "too many refused streams")
            self._write(rst_stream(stream_id, ErrorCode.REFUSED_STREAM))
            self._remember_closed(stream_id, _NO_CREDIT if end_stream else self.stream_window)
            return
        stream = Stream(stream_id, self.peer_initial_window, self.stream_window)
        self._streams[stream_id] = stream
        self.on_request(stream, headers)
        if end_stream and not stream.closed:
            stream.remote_closed = True
            self.on_request_end(stream)

    def on_header_block_start(self, stream_id: int) -> None:
        self._block_started = time.monotonic()  # the header timeout runs from here

    def on_data(
        self, stream_id: int, flags: int, data: bytes, start: int, stop: int, size: int
    ) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_peer_stream:
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream")
            self._closed_data(stream_id, flags, size)
            return
        if stream.remote_closed:
            raise StreamFailure(ErrorCode.STREAM_CLOSED, "DATA after END_STREAM")
        if size > stream.recv_window:
            raise StreamFailure(ErrorCode.FLOW_CONTROL_ERROR, "stream window exceeded")
        stream.recv_window -= size
        stream.body += memoryview(data)[start:stop]
        self._body_bytes += stop - start
        if self._body_bytes > self.budget.max_buffered_request_bytes:
            self.on_buffer_exceeded(stream)
            return
        if flags & END_STREAM:
            stream.remote_closed = True
            self.on_request_end(stream)
            return
        self.on_body(stream)
        window = self.stream_window
        if not stream.closed and stream.recv_window < window // 2:
            self._write(window_update(stream_id, window - stream.recv_window))
            stream.recv_window = window

    def _closed_data(self, stream_id: int, flags: int, size: int) -> None:
        """DATA on a closed stream: what was in flight when we reset it (or answered it early)
        is ignored; more than its window allowed, or DATA on a stream that ended or that the
        peer reset, is a connection error."""
        credit = self._closed_streams.get(stream_id, _NO_CREDIT)
        if credit == _NO_CREDIT:
            raise ConnectionFailure(ErrorCode.STREAM_CLOSED, f"DATA on closed stream {stream_id}")
        if size > credit:
            raise ConnectionFailure(
                ErrorCode.FLOW_CONTROL_ERROR, f"DATA beyond the window of reset stream {stream_id}"
            )
        self._closed_streams[stream_id] = _NO_CREDIT if flags & END_STREAM else credit - size

    def on_stream_window(self, stream_id: int, increment: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_peer_stream:
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on idle stream")
            return
        stream.send_window = grow_window(stream.send_window, increment, stream_id)
        if stream.out_len:
            self._flush(stream)

    def on_initial_window(self, delta: int) -> None:
        for stream in self._streams.values():
            stream.send_window += delta
            if stream.send_window > MAX_WINDOW:
                raise ConnectionFailure(ErrorCode.FLOW_CONTROL_ERROR, "window overflow")

    def on_window_open(self) -> None:
        self._flush_blocked()

    def on_reset(self, stream_id: int, code: int) -> None:
        if stream_id > self.last_peer_stream:
            raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._discard(stream, _NO_CREDIT)
            self.on_stream_reset(stream)

    def on_goaway(self, last_stream_id: int, code: int, debug: bytes) -> None:
        if not self._streams:  # else the open streams finish first (see _discard)
            self._close()

    def on_stream_error(self, stream_id: int, exc: StreamFailure) -> None:
        logger.debug("HTTP/2 stream %d reset: %s", stream_id, exc)
        stream = self._streams.get(stream_id)
        if stream is not None:
            self.reset(stream, exc.code)
        else:
            self._write(rst_stream(stream_id, exc.code))

    # ------------------------------------------------------------------ writing
    def _write(self, data: bytes) -> None:
        if self._holding:
            self.out.append(data)
        elif not self.closed:
            assert self.transport is not None
            self.transport.write(data)

    def _header_frames(self, sid: int, block: bytes, flags: int) -> bytes:
        if self._first_block:
            self._first_block = False
            block = TABLE_SIZE_ZERO + block
        size = len(block)
        if size <= self.peer_max_frame:  # the common case: one HEADERS frame
            return HEAD.pack(size << 8 | HEADERS, flags | END_HEADERS, sid) + block
        return header_block_frames(sid, block, flags, self.peer_max_frame)

    def _flush(self, stream: Stream) -> None:
        out = stream.out
        sid = stream.id
        while stream.out_len and not self._paused and not self.closed:
            window = min(stream.send_window, self.send_window)
            if window <= 0:
                break
            size = min(stream.out_len, window, self.peer_max_frame)
            pieces: list[bytes | memoryview] = [frame_header(DATA, 0, sid, size)]
            need = size
            while need:
                piece = out[0]
                if len(piece) <= need:
                    pieces.append(piece)
                    out.popleft()
                    need -= len(piece)
                else:
                    pieces.append(piece[:need])
                    out[0] = piece[need:]
                    need = 0
            if self._holding:
                self.out.extend(pieces)
            else:
                assert self.transport is not None
                self.transport.writelines(pieces)
            stream.out_len -= size
            stream.send_window -= size
            self.send_window -= size
        if stream.out_len:
            self._blocked[sid] = stream
            return
        self._blocked.pop(sid, None)
        if stream.trailers is not None and not stream.closed:
            self._write(self._header_frames(sid, stream.trailers, END_STREAM))
            stream.trailers = None
            self._finish(stream)

    def _flush_blocked(self) -> None:
        for stream in list(self._blocked.values()):
            if self.send_window <= 0 or self._paused:
                return
            self._flush(stream)

    def _finish(self, stream: Stream) -> None:
        """The response ended: the stream is done (RST_STREAM NO_ERROR tells a client still
        sending its request to stop, section 8.1)."""
        if not stream.remote_closed:
            self._write(rst_stream(stream.id, ErrorCode.NO_ERROR))
            self._discard(stream, stream.recv_window)
        else:
            self._discard(stream, _NO_CREDIT)

    def _remember_closed(self, sid: int, credit: int) -> None:
        closed = self._closed_streams
        closed[sid] = credit
        if len(closed) > self._closed_limit:
            del closed[next(iter(closed))]

    def _discard(self, stream: Stream, credit: int) -> None:
        """Forget ``stream``; the peer may still send ``credit`` bytes of DATA on it."""
        self._remember_closed(stream.id, credit)
        self._body_bytes -= len(stream.body)
        stream.closed = True
        stream.out.clear()
        stream.out_len = 0
        self._streams.pop(stream.id, None)
        self._blocked.pop(stream.id, None)
        if (self.draining or self.goaway_last is not None) and not self._streams:
            self._close()

    def _close(self) -> None:
        """Send what is buffered, then half-close and read (and drop) until the peer closes:
        closing a socket with unread input makes the kernel send RST, which can destroy the
        GOAWAY in flight. The peer gets ``LINGER_S`` to close its side."""
        transport = self.transport
        if transport is None or self.closed:
            return
        self.closed = True
        out, self.out = self.out, []
        if out:
            transport.writelines(out)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._linger = asyncio.get_running_loop().call_later(LINGER_S, transport.abort)

    def _fail(self, code: int, message: str) -> None:
        logger.debug("HTTP/2 connection error %s: %s", error_name(code), message)
        self._write(self.goaway_frame(code, message.encode()))
        self._close()
