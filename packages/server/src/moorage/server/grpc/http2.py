"""``H2Connection``: the server side of one HTTP/2 connection (RFC 9113) as an asyncio protocol.

What it does: the client preface and both SETTINGS exchanges (ACKed; the peer's
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE and ENABLE_PUSH are applied and checked); HEADERS and
CONTINUATION with HPACK decoding (``hpack.Decoder``, with a cache of decoded blocks, see
:meth:`H2Connection._decode`); DATA with padding; flow control in both directions (windows of
``stream_window`` / ``connection_window`` advertised, WINDOW_UPDATE sent once half a window is
used; outgoing DATA waits for the peer's windows and for the transport's ``resume_writing``);
PING answered; RST_STREAM both ways; GOAWAY on protocol errors and for a graceful
:meth:`~H2Connection.drain`. PRIORITY frames and HEADERS priority fields are parsed and ignored.
Streams beyond ``max_concurrent_streams`` are refused (RST_STREAM REFUSED_STREAM).

Budgets (:class:`~moorage.core.http2.limits.PeerBudget`): PINGs (while no response is sent),
SETTINGS, RST_STREAMs received or refused streams, and frames that carry nothing (empty DATA,
HEADERS or CONTINUATION fragments, PRIORITY, unknown types) per connection and per second, past
which the connection ends with GOAWAY ENHANCE_YOUR_CALM; output queued for a peer that does
not read (past ``max_queued_output_bytes`` we stop reading it until it does); request bytes
held per connection (``max_buffered_request_bytes``: the stream going past it is refused); and
the handshake, header-block and idle timeouts, checked by
:meth:`H2Connection.check_timeouts`, which the server calls a few times a second. A stream we
reset or answered before its request ended may still receive what its window allowed
(ignored, counted); anything more is FLOW_CONTROL_ERROR, and frames on other closed streams
are STREAM_CLOSED (section 5.1).

Not supported: server push (never sent; a client's PUSH_PROMISE is a protocol error), the
HTTP/1.1 ``Upgrade: h2c`` dance and TLS (clients connect with prior knowledge, as gRPC clients
do over plaintext), CONNECT and extended CONNECT.

Subclasses implement the application: :meth:`on_request` (a new stream's headers),
:meth:`on_data` (more of its body), :meth:`on_request_end` (END_STREAM),
:meth:`on_stream_reset` and :meth:`on_connection_lost`, and answer with :meth:`respond` or
:meth:`respond_trailers_only`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from typing import Any, cast

import hpack

from moorage.core.http2.limits import PeerBudget
from moorage.server.grpc.frames import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_MAX_FRAME,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEAD,
    HEADERS,
    MAX_FRAME_LIMIT,
    MAX_WINDOW,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    TABLE_SIZE_ZERO,
    WINDOW_UPDATE,
    ErrorCode,
    Setting,
    frame,
    frame_header,
    goaway,
    rst_stream,
    settings,
    window_update,
)

__all__ = ["ConnectionFailure", "H2Connection", "Headers", "Stream", "StreamFailure"]

logger = logging.getLogger(__name__)

Headers = tuple[tuple[bytes, bytes], ...]

#: After GOAWAY, how long the peer may take to close its side before the connection is cut.
LINGER_S = 1.0
#: Decoded header blocks remembered per connection (see :meth:`H2Connection._decode`).
_HEADER_CACHE_SIZE = 64
#: No credit left on a closed stream: DATA on it is STREAM_CLOSED.
_NO_CREDIT = -1


class ConnectionFailure(Exception):
    """A connection error (RFC 9113 section 5.4.1): GOAWAY with ``code``, then close."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamFailure(Exception):
    """A stream error (section 5.4.2): RST_STREAM with ``code``; the connection goes on."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


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


class H2Connection(asyncio.Protocol):
    """The frame layer of one server connection; see the module docstring."""

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
        self.max_concurrent_streams = max_concurrent_streams
        self.budget = budget
        self._pings, self._settings, self._resets, self._empty = budget.counters()
        #: Recently closed streams -> how much DATA the peer may still send on them (the
        #: stream window left when we reset it or answered early) or ``_NO_CREDIT``.
        self._closed_streams: dict[int, int] = {}
        self._closed_limit = max(64, 4 * max_concurrent_streams)
        self._created = self._idle_since = self._block_started = 0.0
        self._idle_sid = 0
        self._idle_pending = 0
        #: Request body bytes held by the open streams (``budget.max_buffered_request_bytes``).
        self._body_bytes = 0
        self.max_header_list_size = max_header_list_size
        self.max_frame_size = max_frame_size
        self._stream_window = stream_window
        self._connection_window = connection_window
        # A legitimate block is at most a few times the list size (Huffman codes are <= 30
        # bits a byte); larger ones are refused before decoding.
        self._max_header_block = 4 * max_header_list_size + 1024
        self._decoder = hpack.Decoder(max_header_list_size=max(8 * max_header_list_size, 65536))
        self._header_cache: dict[bytes, Headers] = {}
        self.transport: asyncio.Transport | None = None
        self._streams: dict[int, Stream] = {}
        self._last_stream_id = 0
        self._buf = bytearray()
        self._need_preface = True
        self._need_settings = True
        # A header block spread over HEADERS + CONTINUATION frames.
        self._block_stream = 0
        self._block = bytearray()
        self._block_end_stream = False
        # What the peer lets us send.
        self._peer_window = DEFAULT_WINDOW
        self._peer_max_frame = DEFAULT_MAX_FRAME
        self._send_window = DEFAULT_WINDOW
        # What we let the peer send on the connection.
        self._recv_window = connection_window
        self._blocked: dict[int, Stream] = {}
        self._paused = False
        self._first_block = True
        #: Writes made while a read is processed, sent together at its end.
        self._out: list[bytes | memoryview] | None = None
        self.closed = False
        self.draining = False
        self._peer_goaway = False
        self._linger: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self.transport = transport = cast(asyncio.Transport, transport)
        ours: dict[int, int] = {
            Setting.MAX_CONCURRENT_STREAMS: self.max_concurrent_streams,
            Setting.INITIAL_WINDOW_SIZE: self._stream_window,
            Setting.MAX_FRAME_SIZE: self.max_frame_size,
            Setting.MAX_HEADER_LIST_SIZE: self.max_header_list_size,
        }
        preface = settings(ours)
        if self._connection_window > DEFAULT_WINDOW:
            preface += window_update(0, self._connection_window - DEFAULT_WINDOW)
        self._created = self._idle_since = time.monotonic()
        high = self.budget.max_queued_output_bytes
        transport.set_write_buffer_limits(high=high, low=high // 4)
        transport.write(preface)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._out = []
        try:
            if self._need_preface:
                data = self._preface(data)
            if data:
                self._frames(data)
            if not self.closed:
                self.on_read_done()
        except ConnectionFailure as exc:
            self._fail(exc.code, str(exc))
        except Exception:
            logger.exception("HTTP/2 connection failed")
            self._fail(ErrorCode.INTERNAL_ERROR, "internal error")
        finally:
            out, self._out = self._out, None
            if out and not self.closed:
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

    def on_data(self, stream: Stream) -> None:
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
        self._pings.count = 0  # a PING while responses flow is not a strike (grpcio's policy)
        sid = stream.id
        size = sum(len(piece) for piece in data)
        headers = self._header_frames(sid, head, 0)
        if (
            size <= self._peer_max_frame
            and size <= stream.send_window
            and size <= self._send_window
            and not self._paused
        ):
            stream.send_window -= size
            self._send_window -= size
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
        self._pings.count = 0
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
        self._write(goaway(self._last_stream_id, ErrorCode.NO_ERROR))
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
        if self._need_settings:
            if now - self._created > budget.handshake_timeout_s:
                self._fail(ErrorCode.PROTOCOL_ERROR, "no client preface and SETTINGS in time")
            return
        if self._block_stream and now - self._block_started > budget.header_timeout_s:
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
        if running or moving or self._last_stream_id != self._idle_sid:
            self._idle_sid = self._last_stream_id
            self._idle_since = now
            return
        if now - self._idle_since > budget.idle_timeout_s:
            logger.debug("HTTP/2 connection idle for %.1f s: closing", now - self._idle_since)
            for stream in list(self._streams.values()):
                self.reset(stream, ErrorCode.CANCEL)
            self.drain()

    # ------------------------------------------------------------------ reading
    def _preface(self, data: bytes) -> bytes:
        self._buf += data
        buf = self._buf
        if len(buf) < len(PREFACE):
            if not PREFACE.startswith(buf):
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 client preface")
            return b""
        if buf[: len(PREFACE)] != PREFACE:
            raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 client preface")
        self._need_preface = False
        rest = bytes(buf[len(PREFACE) :])
        buf.clear()
        return rest

    def _frames(self, data: bytes) -> None:
        buf: bytes | bytearray
        if self._buf:
            self._buf += data
            buf = self._buf
        else:
            buf = data
        n = len(buf)
        pos = 0
        view = memoryview(buf)
        try:
            while n - pos >= 9 and not self.closed:
                length_kind, flags, sid = HEAD.unpack_from(buf, pos)
                length = length_kind >> 8
                if length > self.max_frame_size:
                    raise ConnectionFailure(
                        ErrorCode.FRAME_SIZE_ERROR,
                        f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE",
                    )
                end = pos + 9 + length
                if end > n:
                    break
                payload = view[pos + 9 : end]
                pos = end
                self._frame(length_kind & 0xFF, flags, sid & 0x7FFFFFFF, payload)
                payload.release()  # or self._buf stays locked against resizing
        finally:
            view.release()
        if buf is self._buf:
            del self._buf[:pos]
        elif pos < n:
            self._buf = bytearray(buf[pos:])

    def _frame(self, kind: int, flags: int, sid: int, payload: memoryview) -> None:
        if self._block_stream and kind != CONTINUATION:
            raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "header block interrupted")
        if self._need_settings:
            if kind != SETTINGS or flags & ACK:
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "preface without SETTINGS")
            self._need_settings = False
        try:
            if kind == DATA:
                self._on_data(sid, flags, payload)
            elif kind == HEADERS:
                self._on_headers(sid, flags, payload)
            elif kind == CONTINUATION:
                self._on_continuation(sid, flags, payload)
            elif kind == WINDOW_UPDATE:
                self._on_window_update(sid, payload)
            elif kind == SETTINGS:
                self._on_settings(sid, flags, payload)
            elif kind == PING:
                self._on_ping(sid, flags, payload)
            elif kind == RST_STREAM:
                self._on_rst_stream(sid, payload)
            elif kind == PRIORITY:
                if sid == 0:
                    raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
                if len(payload) != 5:
                    raise StreamFailure(ErrorCode.FRAME_SIZE_ERROR, "PRIORITY of bad size")
                self._spend_empty()
            elif kind == GOAWAY:
                self._on_goaway(sid, payload)
            elif kind == PUSH_PROMISE:
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "clients cannot push")
            else:  # unknown frame types are ignored (section 4.1), within the budget
                self._spend_empty()
        except StreamFailure as exc:
            logger.debug("HTTP/2 stream %d reset: %s", sid, exc)
            stream = self._streams.get(sid)
            if stream is not None:
                self.reset(stream, exc.code)
            else:
                self._write(rst_stream(sid, exc.code))

    def _spend_empty(self) -> None:
        if not self._empty.spend():
            raise ConnectionFailure(ErrorCode.ENHANCE_YOUR_CALM, "too many empty frames")

    def _on_data(self, sid: int, flags: int, payload: memoryview) -> None:
        if sid == 0:
            raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        length = len(payload)
        # The whole frame counts against the connection window, whatever becomes of the stream.
        if length > self._recv_window:
            raise ConnectionFailure(ErrorCode.FLOW_CONTROL_ERROR, "connection window exceeded")
        self._recv_window -= length
        if self._recv_window < self._connection_window // 2:
            self._write(window_update(0, self._connection_window - self._recv_window))
            self._recv_window = self._connection_window
        stream = self._streams.get(sid)
        if stream is None:
            if sid > self._last_stream_id:
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream")
            self._on_closed_data(sid, flags, length)
            return
        if not length and not flags & END_STREAM:
            self._spend_empty()
        if stream.remote_closed:
            raise StreamFailure(ErrorCode.STREAM_CLOSED, "DATA after END_STREAM")
        if length > stream.recv_window:
            raise StreamFailure(ErrorCode.FLOW_CONTROL_ERROR, "stream window exceeded")
        stream.recv_window -= length
        if flags & PADDED:
            if length == 0 or payload[0] >= length:
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "padding exceeds the frame")
            payload = payload[1 : length - payload[0]]
        stream.body += payload
        self._body_bytes += len(payload)
        if self._body_bytes > self.budget.max_buffered_request_bytes:
            self.on_buffer_exceeded(stream)
            return
        if flags & END_STREAM:
            stream.remote_closed = True
            self.on_request_end(stream)
            return
        self.on_data(stream)
        if not stream.closed and stream.recv_window < self._stream_window // 2:
            self._write(window_update(sid, self._stream_window - stream.recv_window))
            stream.recv_window = self._stream_window

    def _on_closed_data(self, sid: int, flags: int, length: int) -> None:
        """DATA on a closed stream: what was in flight when we reset it (or answered it early)
        is ignored; more than its window allowed, or DATA on a stream that ended or that the
        peer reset, is a connection error."""
        credit = self._closed_streams.get(sid, _NO_CREDIT)
        if credit == _NO_CREDIT:
            raise ConnectionFailure(ErrorCode.STREAM_CLOSED, f"DATA on closed stream {sid}")
        if length > credit:
            raise ConnectionFailure(
                ErrorCode.FLOW_CONTROL_ERROR, f"DATA beyond the window of reset stream {sid}"
            )
        self._closed_streams[sid] = _NO_CREDIT if flags & END_STREAM else credit - length
        if not length and not flags & END_STREAM:
            self._spend_empty()

    def _on_headers(self, sid: int, flags: int, payload: memoryview) -> None:
        if sid == 0 or sid % 2 == 0:
            raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, f"HEADERS on stream {sid}")
        start, end = 0, len(payload)
        if flags & PADDED:
            if end == 0:
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "padded HEADERS too short")
            start, end = 1, end - payload[0]
        if flags & PRIORITY_FLAG:
            start += 5
        if end < start:
            raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "padding exceeds the frame")
        fragment = payload[start:end]
        if flags & END_HEADERS:
            self._on_header_block(sid, bytes(fragment), bool(flags & END_STREAM))
            return
        if not fragment:
            self._spend_empty()
        self._block_started = time.monotonic()
        self._block_stream = sid
        self._block = bytearray(fragment)
        self._block_end_stream = bool(flags & END_STREAM)
        self._check_block_size()

    def _on_continuation(self, sid: int, flags: int, payload: memoryview) -> None:
        if not self._block_stream or sid != self._block_stream:
            raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "unexpected CONTINUATION")
        if not payload and not flags & END_HEADERS:
            self._spend_empty()
        self._block += payload
        self._check_block_size()
        if flags & END_HEADERS:
            block, self._block = bytes(self._block), bytearray()
            self._block_stream = 0
            self._on_header_block(sid, block, self._block_end_stream)

    def _check_block_size(self) -> None:
        if len(self._block) > self._max_header_block:
            raise ConnectionFailure(
                ErrorCode.ENHANCE_YOUR_CALM,
                f"header block over {self._max_header_block} bytes",
            )

    def _on_header_block(self, sid: int, block: bytes, end_stream: bool) -> None:
        headers = self._decode(block)  # always: the HPACK state must follow every block
        stream = self._streams.get(sid)
        if stream is not None:  # trailers: gRPC clients send none; they end the request
            if stream.remote_closed:
                raise StreamFailure(ErrorCode.STREAM_CLOSED, "HEADERS after END_STREAM")
            if not end_stream:
                raise StreamFailure(ErrorCode.PROTOCOL_ERROR, "trailers without END_STREAM")
            stream.remote_closed = True
            self.on_request_end(stream)
            return
        if sid <= self._last_stream_id:
            credit = self._closed_streams.get(sid)
            if credit is None:  # section 5.1.1: a new stream must have a higher identifier
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, f"HEADERS on old stream {sid}")
            if credit == _NO_CREDIT:
                raise ConnectionFailure(ErrorCode.STREAM_CLOSED, f"HEADERS on closed stream {sid}")
            if end_stream:  # trailers in flight on a stream we reset: ignored
                self._closed_streams[sid] = _NO_CREDIT
            return
        self._last_stream_id = sid
        self._pings.count = 0  # PINGs beside calls are not a flood (grpcio: pings with data)
        if self.draining or self._peer_goaway or len(self._streams) >= self.max_concurrent_streams:
            if not self._resets.spend():
                raise ConnectionFailure(ErrorCode.ENHANCE_YOUR_CALM, "too many refused streams")
            self._write(rst_stream(sid, ErrorCode.REFUSED_STREAM))
            self._remember_closed(sid, _NO_CREDIT if end_stream else self._stream_window)
            return
        stream = Stream(sid, self._peer_window, self._stream_window)
        self._streams[sid] = stream
        self.on_request(stream, headers)
        if end_stream and not stream.closed:
            stream.remote_closed = True
            self.on_request_end(stream)

    def _decode(self, block: bytes) -> Headers:
        """The decoded header block (raw bytes).

        Clients repeat the same headers on every call, which HPACK turns into a few bytes of
        references to its tables; decoding them in Python takes ~30 µs. A block whose decoding
        left the dynamic table as it was decodes the same way until the table changes, so such
        blocks are remembered, and forgotten whenever a block changes the table.
        """
        cache = self._header_cache
        headers = cache.get(block)
        if headers is not None:
            return headers
        table = self._decoder.header_table
        entries = table.dynamic_entries
        count, first, size = len(entries), entries[0] if entries else None, table.maxsize
        try:
            headers = tuple(self._decoder.decode(block, raw=True))
        except hpack.HPACKError as exc:
            raise ConnectionFailure(ErrorCode.COMPRESSION_ERROR, f"HPACK: {exc}") from None
        unchanged = len(entries) == count and (entries[0] if entries else None) is first
        if not unchanged or table.maxsize != size or len(cache) >= _HEADER_CACHE_SIZE:
            cache.clear()
        if unchanged and table.maxsize == size:
            cache[block] = headers
        return headers

    def _on_settings(self, sid: int, flags: int, payload: memoryview) -> None:
        if sid != 0:
            raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if len(payload):
                raise ConnectionFailure(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with payload")
            self._spend_empty()  # we sent one SETTINGS: only the first ACK means anything
            return
        if not self._settings.spend():
            raise ConnectionFailure(ErrorCode.ENHANCE_YOUR_CALM, "too many SETTINGS")
        if len(payload) % 6:
            raise ConnectionFailure(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS of bad size")
        grew = False
        data = bytes(payload)
        for offset in range(0, len(data), 6):
            key = int.from_bytes(data[offset : offset + 2], "big")
            value = int.from_bytes(data[offset + 2 : offset + 6], "big")
            if key == Setting.INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ConnectionFailure(ErrorCode.FLOW_CONTROL_ERROR, "window too large")
                delta = value - self._peer_window
                self._peer_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise ConnectionFailure(ErrorCode.FLOW_CONTROL_ERROR, "window overflow")
                grew = grew or delta > 0
            elif key == Setting.MAX_FRAME_SIZE:
                if not DEFAULT_MAX_FRAME <= value <= MAX_FRAME_LIMIT:
                    raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "bad MAX_FRAME_SIZE")
                self._peer_max_frame = value
            elif key == Setting.ENABLE_PUSH and value > 1:
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "bad ENABLE_PUSH")
            # HEADER_TABLE_SIZE needs nothing (our encoder keeps its table at 0); the others
            # are the peer's limits on what it receives, which a server respects by design.
        self._write(frame(SETTINGS, ACK, 0))
        if grew:
            self._flush_blocked()

    def _on_ping(self, sid: int, flags: int, payload: memoryview) -> None:
        if sid != 0:
            raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ConnectionFailure(ErrorCode.FRAME_SIZE_ERROR, "PING of bad size")
        if flags & ACK:
            self._spend_empty()  # we send no PINGs
        elif not self._pings.spend():
            raise ConnectionFailure(ErrorCode.ENHANCE_YOUR_CALM, "too_many_pings")
        else:
            self._write(frame(PING, ACK, 0, bytes(payload)))

    def _on_window_update(self, sid: int, payload: memoryview) -> None:
        if len(payload) != 4:
            raise ConnectionFailure(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE of bad size")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise ConnectionFailure(ErrorCode.FLOW_CONTROL_ERROR, "window overflow")
            self._flush_blocked()
            return
        stream = self._streams.get(sid)
        if stream is None:
            if sid > self._last_stream_id:
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on idle stream")
            return
        if increment == 0:
            raise StreamFailure(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            raise StreamFailure(ErrorCode.FLOW_CONTROL_ERROR, "window overflow")
        if stream.out_len:
            self._flush(stream)

    def _on_rst_stream(self, sid: int, payload: memoryview) -> None:
        if len(payload) != 4:
            raise ConnectionFailure(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM of bad size")
        if sid == 0 or sid > self._last_stream_id:
            raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        if not self._resets.spend():
            raise ConnectionFailure(ErrorCode.ENHANCE_YOUR_CALM, "too many RST_STREAM frames")
        stream = self._streams.get(sid)
        if stream is not None:
            self._discard(stream, _NO_CREDIT)
            self.on_stream_reset(stream)

    def _on_goaway(self, sid: int, payload: memoryview) -> None:
        if sid != 0:
            raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise ConnectionFailure(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY too short")
        self._peer_goaway = True
        if not self._streams:
            self._close()

    # ------------------------------------------------------------------ writing
    def _write(self, data: bytes) -> None:
        if self._out is not None:
            self._out.append(data)
        elif not self.closed:
            assert self.transport is not None
            self.transport.write(data)

    def _header_frames(self, sid: int, block: bytes, flags: int) -> bytes:
        if self._first_block:
            self._first_block = False
            block = TABLE_SIZE_ZERO + block
        limit = self._peer_max_frame
        if len(block) <= limit:
            return frame_header(HEADERS, flags | END_HEADERS, sid, len(block)) + block
        parts = [frame(HEADERS, flags, sid, block[:limit])]
        for offset in range(limit, len(block), limit):
            last = offset + limit >= len(block)
            chunk = block[offset : offset + limit]
            parts.append(frame(CONTINUATION, END_HEADERS if last else 0, sid, chunk))
        return b"".join(parts)

    def _flush(self, stream: Stream) -> None:
        out = stream.out
        sid = stream.id
        while stream.out_len and not self._paused and not self.closed:
            window = min(stream.send_window, self._send_window)
            if window <= 0:
                break
            size = min(stream.out_len, window, self._peer_max_frame)
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
            if self._out is not None:
                self._out.extend(pieces)
            else:
                assert self.transport is not None
                self.transport.writelines(pieces)
            stream.out_len -= size
            stream.send_window -= size
            self._send_window -= size
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
            if self._send_window <= 0 or self._paused:
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
        if (self.draining or self._peer_goaway) and not self._streams:
            self._close()

    def _close(self) -> None:
        """Send what is buffered, then half-close and read (and drop) until the peer closes:
        closing a socket with unread input makes the kernel send RST, which can destroy the
        GOAWAY in flight. The peer gets ``LINGER_S`` to close its side."""
        transport = self.transport
        if transport is None or self.closed:
            return
        self.closed = True
        out, self._out = self._out, None
        if out:
            transport.writelines(out)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._linger = asyncio.get_running_loop().call_later(LINGER_S, transport.abort)

    def _fail(self, code: ErrorCode, message: str) -> None:
        logger.debug("HTTP/2 connection error %s: %s", code.name, message)
        self._write(goaway(self._last_stream_id, code, message.encode()[:256]))
        self._close()
