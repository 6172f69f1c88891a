"""An HTTP/2 client connection (RFC 9113) for request/response exchanges, on asyncio.Protocol.

Just what unary gRPC calls need, written for a low CPU cost per exchange: one write per
small request (HEADERS and DATA joined), frames parsed in place from what the socket
delivered, the control frames an input burst calls for (SETTINGS and PING acks,
WINDOW_UPDATE) sent in one write, and one future per stream.

- Connection preface and SETTINGS (and their ACKs); the peer's HEADER_TABLE_SIZE is never
  needed (:mod:`moorage.client._hpack` encodes without the dynamic table).
- HEADERS + CONTINUATION, DATA (padding stripped), trailers, 1xx responses skipped.
- Flow control both ways, connection and stream level: bodies larger than the peer's windows
  wait for its WINDOW_UPDATEs (and for the socket to drain); what arrives is acknowledged
  once half of a window has been used.
- SETTINGS_MAX_CONCURRENT_STREAMS: a request above the limit waits for a stream to end.
- SETTINGS_MAX_FRAME_SIZE both ways; PING answered; RST_STREAM both ways; GOAWAY: streams
  above the last stream id fail as *refused* (never processed: safe to retry), the
  connection takes no new streams and closes once the others end.
- A deadline resets the stream with CANCEL; so does a cancelled caller.

Failures are :class:`StreamError` (with ``refused`` when the server cannot have seen the
request, ``connection`` when the connection broke); the gRPC layer gives them meaning.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
from collections import deque
from typing import Any

from moorage.client._hpack import Field, HeaderDecoder, HeaderEncoder, HPACKError

__all__ = [
    "BodyTooLarge",
    "Connection",
    "DeadlineExceeded",
    "Stream",
    "StreamError",
    "connect",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x6, 0x7, 0x8, 0x9
ERROR_NAMES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM", 0x8: "CANCEL", 0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM", 0xC: "INADEQUATE_SECURITY", 0xD: "HTTP_1_1_REQUIRED",
}  # fmt: skip
_HEADER_TABLE_SIZE, _ENABLE_PUSH, _MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
_INITIAL_WINDOW_SIZE, _MAX_FRAME_SIZE = 0x4, 0x5

_FRAME = struct.Struct(">BHBBL")  # length (24 bits as 8 + 16), type, flags, stream id
_SETTING = struct.Struct(">HL")
_U32 = struct.Struct(">L")
_GOAWAY = struct.Struct(">LL")
_MAX_WINDOW = 2**31 - 1
_MAX_STREAM_ID = 2**31 - 1
_DEFAULT_WINDOW = 65_535

#: What this side asks of the server: no push; 8 MiB per stream and 32 MiB per connection
#: of unacknowledged DATA (acknowledged at half); DATA frames of up to 1 MiB.
STREAM_WINDOW = 8 << 20
CONNECTION_WINDOW = 32 << 20
MAX_FRAME_IN = 1 << 20
MAX_HEADER_BLOCK = 1 << 20  # a header block (with its CONTINUATIONs) above this is refused
_CLIENT_SETTINGS = (
    (_ENABLE_PUSH, 0),
    (_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
    (_MAX_FRAME_SIZE, MAX_FRAME_IN),
)
_SMALL_BODY = 64 * 1024  # a body up to this, within the windows, goes out with its HEADERS
_READ_SIZE = 256 * 1024  # the read buffer (asyncio's own read size)
_DEADLINE_SLACK = 1e-4  # a deadline this close counts as passed (timers may fire early)


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    length = len(payload)
    return _FRAME.pack(length >> 16, length & 0xFFFF, ftype, flags, stream_id) + payload


def _settings_frame(settings: tuple[tuple[int, int], ...]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in settings))


_OPENING = (
    PREFACE
    + _settings_frame(_CLIENT_SETTINGS)
    + frame(WINDOW_UPDATE, 0, 0, _U32.pack(CONNECTION_WINDOW - _DEFAULT_WINDOW))
)
_SETTINGS_ACK = frame(SETTINGS, ACK, 0)


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
        self.headers: tuple[tuple[str, str], ...] | None = None
        self.trailers: tuple[tuple[str, str], ...] | None = None
        self.data: list[bytes | memoryview] = []
        self.received = 0
        self.unacked = 0
        self.pending: deque[memoryview] | None = None  # body not yet sent (flow control)
        self.ended = False  # the server ended its side
        self.deadline: float | None = None


class Connection(asyncio.BufferedProtocol):
    """One HTTP/2 connection to a server; :meth:`request` runs one exchange on a new stream.

    A buffered protocol: the socket is read into one buffer of this connection. (A plain
    ``Protocol`` gets a new ``bytes`` from ``sock.recv(256 KiB)`` per read, which allocates
    and frees 256 KiB each time: ~20 us per read on the bench machine.)
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._decoder = HeaderDecoder()
        self._encoder = HeaderEncoder()
        self._streams: dict[int, Stream] = {}
        self._next_id = 1
        self._closed = False
        self._goaway: int | None = None  # last stream id of the server's GOAWAY
        self._failure = ""  # why the connection ended, for the streams it takes down
        self.alpn_error: str | None = None
        # the server's settings (RFC 9113 §6.5.2 defaults until its SETTINGS arrive)
        self._max_streams = _MAX_STREAM_ID
        self._initial_window = _DEFAULT_WINDOW
        self._max_frame_out = 16_384
        self._send_window = _DEFAULT_WINDOW
        # what the server may still send us before our next WINDOW_UPDATE
        self._recv_window = CONNECTION_WINDOW
        self._recv_unacked = 0
        self._blocked: list[Stream] = []  # streams with body waiting for window or drain
        self._paused = False
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        # one timer for all deadlines, due no later than the nearest one (a timer per stream
        # would be made and cancelled on every call)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        # input parsing: an incomplete frame waits here; a header block across CONTINUATIONs
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._need = 0
        self._continued: tuple[int, int, list[bytes]] | None = None
        # output waiting for one write: the control frames an input burst calls for, and what
        # must follow them (order matters: a SETTINGS ack, then frames it allows)
        self._out: list[bytes] = []
        self._buffer = bytearray(_READ_SIZE)
        self._view = memoryview(self._buffer)
        self._receiving = False
        self._flush_soon: asyncio.Handle | None = None

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
        transport.write(_OPENING)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self._partial:
            self._partial.append(data)
            self._partial_size += len(data)
            if self._partial_size < self._need:
                return
            data = b"".join(self._partial)
            self._partial.clear()
        self._receiving = True
        try:
            self._frames(data)
        except _ConnectionError as exc:
            self._protocol_error(exc.code, str(exc))
        except HPACKError as exc:
            self._protocol_error(COMPRESSION_ERROR, f"invalid header block: {exc}")
        except (IndexError, ValueError, struct.error) as exc:  # lengths that do not add up
            self._protocol_error(PROTOCOL_ERROR, f"malformed frame: {exc}")
        finally:
            self._receiving = False
        if self._out:
            self._flush()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost fails what is left

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._failure:
            self._failure = f"connection lost: {exc}" if exc else "connection closed by the server"
        streams = list(self._streams.values())
        self._streams.clear()
        self._blocked.clear()
        goaway = self._goaway
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
        return not self._closed and self._goaway is None and self._next_id < _MAX_STREAM_ID

    @property
    def idle(self) -> bool:
        return not self._streams

    async def request(
        self,
        fields: tuple[Field, ...],
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
        if len(self._streams) >= self._max_streams:
            await self._wait_for_slot(deadline)
        if not self.usable:
            raise StreamError(self._failure or "connection going away", refused=True)
        transport = self._transport
        assert transport is not None
        stream_id = self._next_id
        self._next_id += 2
        waiter: asyncio.Future[Stream] = self._loop.create_future()
        stream = Stream(stream_id, waiter, self._initial_window, limit)
        self._streams[stream_id] = stream
        # encoded here, in the order the blocks go out (the server's table follows it)
        block = self._encoder.encode(fields)
        if extra:
            block += extra
        size = len(block)
        max_frame = self._max_frame_out
        if size <= max_frame:
            head = _FRAME.pack(size >> 16, size & 0xFFFF, HEADERS, END_HEADERS, stream_id) + block
        else:
            head = self._continued_headers(stream_id, block)
        length = len(prefix) + len(body)
        if (
            length <= _SMALL_BODY
            and length <= max_frame
            and length <= self._send_window
            and length <= stream.send_window
            and not self._paused
        ):
            self._send_window -= length
            stream.send_window -= length
            data = _FRAME.pack(length >> 16, length & 0xFFFF, DATA, END_STREAM, stream_id)
            # written now, not batched with the other callers an input burst woke: a server
            # then works on this call while they run (batching saved ~30 us of client CPU
            # per call at 32 in flight, and halved moorage-server's calls/s by lock-step)
            if self._out:
                self._send(b"".join((head, data, prefix, body)))
            else:
                transport.write(b"".join((head, data, prefix, body)))
        else:
            self._out.append(head)
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

    def close(self, code: int = NO_ERROR) -> None:
        """Say GOAWAY and close; streams still open fail as a lost connection."""
        transport = self._transport
        if transport is None or self._closed:
            return
        self._failure = self._failure or "connection closed by the client"
        self._closed = True
        with contextlib.suppress(RuntimeError):  # its event loop is already closed
            self._out.append(frame(GOAWAY, 0, 0, _GOAWAY.pack(0, code)))
            self._flush()
            transport.close()

    # ------------------------------------------------------------------------- sending
    def _send(self, data: bytes) -> None:
        """Queue ``data`` behind what is queued; written once, soon (or after the input)."""
        self._out.append(data)
        if not self._receiving and self._flush_soon is None:
            self._flush_soon = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = None
        out, self._out = self._out, []
        transport = self._transport
        if out and transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _continued_headers(self, stream_id: int, block: bytes) -> bytes:
        step = self._max_frame_out
        parts = [block[i : i + step] for i in range(0, len(block), step)]
        frames = [frame(HEADERS, END_HEADERS if len(parts) == 1 else 0, stream_id, parts[0])]
        for i, part in enumerate(parts[1:], 2):
            flags = END_HEADERS if i == len(parts) else 0
            frames.append(frame(CONTINUATION, flags, stream_id, part))
        return b"".join(frames)

    def _pump(self, stream: Stream) -> None:
        """Send as much of ``stream``'s pending body as windows and the socket allow."""
        pending = stream.pending
        transport = self._transport
        if pending is None or transport is None or transport.is_closing():
            return
        if self._out:  # what is queued first: a SETTINGS ack must precede frames it allows
            self._flush()
        while pending:
            allowed = min(self._send_window, stream.send_window, self._max_frame_out)
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
            self._send_window -= size
            stream.send_window -= size
            flags = 0 if pending else END_STREAM
            header = _FRAME.pack(size >> 16, size & 0xFFFF, DATA, flags, stream.id)
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
        self._send(frame(RST_STREAM, 0, stream.id, _U32.pack(code)))
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
        if nearest < math.inf and not self._closed:
            self._arm(nearest)

    def _settle(self, stream: Stream, error: StreamError) -> None:
        if not stream.waiter.done():
            stream.waiter.set_exception(error)

    # ------------------------------------------------------------------------- streams
    async def _wait_for_slot(self, deadline: float | None) -> None:
        while len(self._streams) >= self._max_streams and self.usable:
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
        if self._goaway is not None and not self._streams:
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
            self._send(frame(RST_STREAM, 0, stream.id, _U32.pack(CANCEL)))
        if not stream.waiter.done():
            stream.waiter.set_result(stream)
        self._stream_ended()

    # ------------------------------------------------------------------------- receiving
    def _frames(self, data: bytes) -> None:
        pos, end = 0, len(data)
        unpack = _FRAME.unpack_from
        streams = self._streams
        while end - pos >= 9:
            high, low, ftype, flags, stream_id = unpack(data, pos)
            length = (high << 16) | low
            if length > MAX_FRAME_IN:  # above what we allowed (SETTINGS_MAX_FRAME_SIZE)
                raise _ConnectionError(FRAME_SIZE_ERROR, f"frame of {length} bytes")
            stop = pos + 9 + length
            if stop > end:
                break
            stream_id &= _MAX_STREAM_ID
            if self._continued is not None and ftype != CONTINUATION:
                raise _ConnectionError(PROTOCOL_ERROR, "header block interrupted")
            if ftype == DATA:
                self._on_data(streams.get(stream_id), stream_id, flags, data, pos + 9, stop)
            elif ftype == HEADERS:
                start = pos + 9
                if flags & PADDED:
                    if not length:
                        raise _ConnectionError(PROTOCOL_ERROR, "HEADERS padding too long")
                    start, stop_ = start + 1, stop - data[start]
                else:
                    stop_ = stop
                if flags & PRIORITY_FLAG:
                    start += 5
                if start > stop_:
                    raise _ConnectionError(PROTOCOL_ERROR, "HEADERS padding too long")
                if flags & END_HEADERS:
                    self._on_headers(stream_id, flags, data[start:stop_])
                else:
                    self._continued = (stream_id, flags, [data[start:stop_]])
            elif ftype == CONTINUATION:
                self._on_continuation(stream_id, flags, data[pos + 9 : stop])
            elif ftype == SETTINGS:
                if stream_id or (flags & ACK and length) or length % 6:
                    raise _ConnectionError(FRAME_SIZE_ERROR, "malformed SETTINGS")
                if not flags & ACK:
                    self._on_settings(data[pos + 9 : stop])
            elif ftype == WINDOW_UPDATE:
                if length != 4:
                    raise _ConnectionError(FRAME_SIZE_ERROR, "malformed WINDOW_UPDATE")
                self._on_window_update(stream_id, _U32.unpack_from(data, pos + 9)[0])
            elif ftype == PING:
                if length != 8 or stream_id:
                    raise _ConnectionError(FRAME_SIZE_ERROR, "malformed PING")
                if not flags & ACK:
                    self._out.append(frame(PING, ACK, 0, data[pos + 9 : stop]))
            elif ftype == RST_STREAM:
                if length != 4:
                    raise _ConnectionError(FRAME_SIZE_ERROR, "malformed RST_STREAM")
                self._on_reset(stream_id, _U32.unpack_from(data, pos + 9)[0])
            elif ftype == GOAWAY:
                if length < 8:
                    raise _ConnectionError(FRAME_SIZE_ERROR, "malformed GOAWAY")
                last, code = _GOAWAY.unpack_from(data, pos + 9)
                self._on_goaway(last & _MAX_STREAM_ID, code, data[pos + 17 : stop])
            elif ftype == PUSH_PROMISE:
                raise _ConnectionError(PROTOCOL_ERROR, "PUSH_PROMISE with push disabled")
            # PRIORITY and unknown frame types are ignored (RFC 9113 §5.5)
            pos = stop
        if pos < end:
            rest = data[pos:]
            self._partial = [rest]
            self._partial_size = len(rest)
            if len(rest) >= 9:
                high, low = rest[0], (rest[1] << 8) | rest[2]
                self._need = 9 + ((high << 16) | low)
            else:
                self._need = 9

    def _on_data(
        self, stream: Stream | None, stream_id: int, flags: int, data: bytes, start: int, stop: int
    ) -> None:
        if not stream_id:
            raise _ConnectionError(PROTOCOL_ERROR, "DATA on stream 0")
        size = stop - start  # flow control counts padding too
        self._recv_window -= size
        if self._recv_window < 0:
            raise _ConnectionError(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self._recv_unacked += size
        if self._recv_unacked >= CONNECTION_WINDOW // 2:
            self._out.append(frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._recv_unacked)))
            self._recv_window += self._recv_unacked
            self._recv_unacked = 0
        if stream is None:
            return  # a stream we reset or gave up on
        if flags & PADDED:
            if size == 0 or data[start] >= size:
                raise _ConnectionError(PROTOCOL_ERROR, "DATA padding too long")
            start, stop = start + 1, stop - data[start]
        if start < stop:
            if stream.headers is None:
                raise _ConnectionError(PROTOCOL_ERROR, "DATA before HEADERS")
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
        stream.unacked += size
        if stream.unacked >= STREAM_WINDOW // 2:
            self._out.append(frame(WINDOW_UPDATE, 0, stream.id, _U32.pack(stream.unacked)))
            stream.unacked = 0

    def _on_continuation(self, stream_id: int, flags: int, fragment: bytes) -> None:
        continued = self._continued
        if continued is None or continued[0] != stream_id:
            raise _ConnectionError(PROTOCOL_ERROR, "unexpected CONTINUATION")
        fragments = continued[2]
        fragments.append(fragment)
        if sum(len(f) for f in fragments) > MAX_HEADER_BLOCK:
            raise _ConnectionError(PROTOCOL_ERROR, "header block too large")
        if flags & END_HEADERS:
            self._continued = None
            self._on_headers(stream_id, continued[1], b"".join(fragments))

    def _on_headers(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self._decoder.decode(block)  # always: the table must follow the server's
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if stream.headers is None:
            if headers and headers[0][0] == ":status" and headers[0][1][:1] == "1":
                return  # informational (1xx): the real response follows
            stream.headers = headers
        else:
            if not flags & END_STREAM:
                self._reset(stream, PROTOCOL_ERROR)
                self._settle(stream, StreamError("trailers without END_STREAM"))
                return
            stream.trailers = headers
        if flags & END_STREAM:
            self._finish(stream)

    def _on_settings(self, payload: bytes) -> None:
        for offset in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, offset)
            if key == _HEADER_TABLE_SIZE:
                self._encoder.resize(value)
            elif key == _MAX_CONCURRENT_STREAMS:
                self._max_streams = value
                if len(self._streams) < value:
                    self._wake_all()
            elif key == _INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    raise _ConnectionError(FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large")
                delta = value - self._initial_window
                self._initial_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
            elif key == _MAX_FRAME_SIZE:
                if not 16_384 <= value <= 16_777_215:
                    raise _ConnectionError(PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value}")
                self._max_frame_out = value
            elif key == _ENABLE_PUSH and value > 1:
                raise _ConnectionError(PROTOCOL_ERROR, f"ENABLE_PUSH {value}")
        self._out.append(_SETTINGS_ACK)
        self._unblock()

    def _on_window_update(self, stream_id: int, increment: int) -> None:
        increment &= _MAX_WINDOW
        if stream_id == 0:
            if not increment:
                raise _ConnectionError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > _MAX_WINDOW:
                raise _ConnectionError(FLOW_CONTROL_ERROR, "connection window overflow")
            self._unblock()
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.send_window += increment
        if not increment or stream.send_window > _MAX_WINDOW:
            self._reset(stream, PROTOCOL_ERROR if not increment else FLOW_CONTROL_ERROR)
            self._settle(stream, StreamError("invalid stream WINDOW_UPDATE"))
        elif stream.pending is not None and not self._paused:
            if stream in self._blocked:
                self._blocked.remove(stream)
            self._pump(stream)

    def _on_reset(self, stream_id: int, code: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        stream.pending = None
        if stream in self._blocked:
            self._blocked.remove(stream)
        name = ERROR_NAMES.get(code, hex(code))
        self._settle(
            stream,
            StreamError(f"stream reset by the server ({name})", code=code, refused=code == 7),
        )
        self._stream_ended()

    def _on_goaway(self, last: int, code: int, debug: bytes) -> None:
        self._goaway = last if self._goaway is None else min(last, self._goaway)
        reason = ERROR_NAMES.get(code, hex(code))
        text = debug[:200].decode("utf-8", "replace")
        self._failure = f"server sent GOAWAY ({reason}{': ' + text if text else ''})"
        for stream_id in [s for s in self._streams if s > last]:
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
        self._failure = f"HTTP/2 protocol error ({ERROR_NAMES.get(code, code)}): {message}"
        self._out.append(frame(GOAWAY, 0, 0, _GOAWAY.pack(0, code)))
        self._flush()
        self._fail_connection(self._failure)

    def _fail_connection(self, message: str) -> None:
        self._failure = self._failure or message
        self._closed = True
        if self._transport is not None:
            self._transport.close()


class _ConnectionError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


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
