"""The connection-level state machine of HTTP/2 (RFC 9113), sans-IO, for a client or a server.

:class:`Endpoint` takes the bytes a socket delivered (:meth:`Endpoint.receive`) and leaves the
frames to send in :attr:`Endpoint.out`; it holds no socket and no event loop. What it does for
both sides: the server's check of the client preface; the peer's SETTINGS first, validated and
applied (windows, frame size, concurrent streams, HPACK table size) and acknowledged; PING
answered; WINDOW_UPDATE on the connection (overflow and zero increments refused); the
connection receive window, reopened once half of it is used; DATA padding; header blocks
across HEADERS + CONTINUATION (interleaving refused, size bounded before decoding) decoded with
the connection's :class:`~moorage.core.http2.hpack.HeaderDecoder`; RST_STREAM, GOAWAY and
PRIORITY parsed and checked; PUSH_PROMISE refused (neither side here accepts push); unknown
frame types ignored. What a peer may legally send to make us work is counted against a
:class:`~moorage.core.http2.limits.PeerBudget` (PINGs, SETTINGS, RST_STREAMs and frames that
carry nothing, per second): past it, GOAWAY ENHANCE_YOUR_CALM. Every violation raises the
:class:`ConnectionFailure` RFC 9113 names; a :class:`StreamFailure` from a frame becomes
:meth:`Endpoint.on_stream_error` (RST_STREAM) and the connection goes on.

What is left to a subclass is its stream table, through hooks: :meth:`~Endpoint.on_headers`,
:meth:`~Endpoint.on_header_block_start`, :meth:`~Endpoint.on_data`,
:meth:`~Endpoint.on_reset`, :meth:`~Endpoint.on_stream_window`,
:meth:`~Endpoint.on_initial_window`, :meth:`~Endpoint.on_max_streams`,
:meth:`~Endpoint.on_window_open`, :meth:`~Endpoint.on_goaway`, :meth:`~Endpoint.on_stream_error`
(and :meth:`~Endpoint.on_ping_ack`, :meth:`~Endpoint.on_settings_ack`). Sending stream frames
(HEADERS, DATA within the windows) is the subclass's too; :data:`send_window`,
:data:`peer_initial_window` and :data:`peer_max_frame` say what the peer allows.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from moorage.core.http2.frames import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_MAX_FRAME,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    MAX_STREAM_ID,
    MAX_WINDOW,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    SETTINGS_ACK,
    WINDOW_UPDATE,
    ConnectionFailure,
    ErrorCode,
    FrameReader,
    Setting,
    StreamFailure,
    check_frame,
    goaway,
    grow_window,
    headers_fragment,
    parse_goaway,
    parse_settings,
    ping,
    rst_stream,
    settings,
    strip_padding,
    window_update,
)
from moorage.core.http2.hpack import HeaderDecoder, HeaderEncoder, HeaderListTooLarge, Headers
from moorage.core.http2.limits import PeerBudget

__all__ = ["Endpoint"]

_U32 = struct.Struct(">I")
_FRAGMENT_FLAGS = PADDED | PRIORITY_FLAG


class Endpoint:
    """One side of one HTTP/2 connection (see the module doc).

    ``settings`` are the (parameter, value) pairs this side advertises: its
    INITIAL_WINDOW_SIZE (the receive window of each stream) and MAX_FRAME_SIZE (the largest
    frame accepted) are taken from them. ``connection_window`` is the receive window of the
    connection (opened by a WINDOW_UPDATE after the SETTINGS). ``max_header_list_size`` and
    ``max_header_block`` bound a decoded header list and an encoded block (the HPACK
    decoder's hard limits). ``encoder``: keep a :class:`HeaderEncoder` that follows the peer's
    SETTINGS_HEADER_TABLE_SIZE (for a side that indexes what it sends). ``budget``: the rate
    limits of :meth:`receive` (the defaults of :class:`PeerBudget` when not given).
    """

    def __init__(
        self,
        *,
        client: bool,
        settings: Iterable[tuple[int, int]] = (),
        connection_window: int = DEFAULT_WINDOW,
        max_header_list_size: int = 1 << 20,
        max_header_block: int | None = None,
        encoder: bool = False,
        budget: PeerBudget | None = None,
    ) -> None:
        self.client = client
        self.budget = budget = budget or PeerBudget()
        #: Per-second counters of PINGs, SETTINGS, RST_STREAMs and empty frames received
        #: (a subclass may ``reset()`` the PING count while it sends responses).
        self.pings, self.settings_frames, self.resets, self.empty_frames = budget.counters()
        self.local_settings = tuple(settings)
        local = dict(self.local_settings)
        self.stream_window = local.get(Setting.INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)
        self.connection_window = connection_window
        self.reader = FrameReader(
            max_frame_size=local.get(Setting.MAX_FRAME_SIZE, DEFAULT_MAX_FRAME)
        )
        self.decoder = HeaderDecoder(
            max_table_size=local.get(Setting.HEADER_TABLE_SIZE, 4096),
            max_header_list_size=max_header_list_size,
            max_block_size=max_header_block,
        )
        self.encoder = HeaderEncoder() if encoder else None
        #: Frames to write, in order.
        self.out: list[bytes | memoryview] = []
        #: What the peer allows (its SETTINGS, RFC 9113 defaults until they arrive).
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = DEFAULT_MAX_FRAME
        self.peer_max_streams = MAX_STREAM_ID
        self.peer_max_header_list: int | None = None
        #: What this side may still send on the connection.
        self.send_window = DEFAULT_WINDOW
        #: What the peer may still send on the connection before our next WINDOW_UPDATE.
        self.recv_window = connection_window
        #: The last stream id of the peer's GOAWAY (the lowest, if several), once one came.
        self.goaway_last: int | None = None
        #: The highest stream id the peer opened (named by a GOAWAY of ours).
        self.last_peer_stream = 0
        #: Set by the subclass once the connection is closed (or closing): the frames left in
        #: a read are not handled.
        self.closed = False
        self._need_preface = not client
        self._preface_seen = b""
        self._need_settings = True
        # a header block spread over HEADERS + CONTINUATION: stream, flags, fragments, size
        self._block_stream = 0
        self._block_flags = 0
        self._block_parts: list[bytes] = []
        self._block_size = 0

    @property
    def handshake_done(self) -> bool:
        """The peer's preface (for a server) and first SETTINGS arrived."""
        return not self._need_settings

    @property
    def header_block_stream(self) -> int:
        """The stream of a header block still waiting for its CONTINUATIONs, or 0."""
        return self._block_stream

    # ------------------------------------------------------------------ output
    def opening(self) -> bytes:
        """What this side sends first: (the client preface,) SETTINGS, and the WINDOW_UPDATE
        that opens the connection window beyond its default."""
        out = (PREFACE if self.client else b"") + settings(self.local_settings)
        if self.connection_window > DEFAULT_WINDOW:
            out += window_update(0, self.connection_window - DEFAULT_WINDOW)
        return out

    def goaway_frame(self, code: int, debug: bytes = b"") -> bytes:
        """GOAWAY naming the last stream the peer opened (section 6.8)."""
        return goaway(self.last_peer_stream, code, debug[:256])

    # ------------------------------------------------------------------ input
    def receive(self, data: bytes) -> None:
        """Handle the bytes the peer sent: hooks are called, answers appended to :attr:`out`.
        Raises :class:`ConnectionFailure` (send :meth:`goaway_frame` and close)."""
        if self._need_preface:
            data = self._preface(data)
            if not data:
                return
        buffer, frames = self.reader.feed(data)
        for kind, flags, stream_id, start, stop in frames:
            if self.closed:
                return
            if self._block_stream and kind != CONTINUATION:
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "header block interrupted")
            if self._need_settings:
                if kind != SETTINGS or flags & ACK:
                    raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "preface without SETTINGS")
                self._need_settings = False
            try:
                if kind == DATA:
                    if not stream_id:
                        raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
                    self._data(buffer, flags, stream_id, start, stop)
                elif kind == HEADERS:
                    if not stream_id:
                        raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
                    if flags & _FRAGMENT_FLAGS:
                        start, stop = headers_fragment(buffer, start, stop, flags)
                    if flags & END_HEADERS:  # a whole block in one frame: the common case
                        headers = self.decoder.decode(buffer[start:stop])
                        self.on_headers(stream_id, bool(flags & END_STREAM), headers)
                    else:
                        self._fragment(stream_id, flags, buffer[start:stop], first=True)
                else:
                    check_frame(kind, flags, stream_id, stop - start)
                    self._control(kind, flags, stream_id, buffer, start, stop)
            except StreamFailure as exc:
                self.on_stream_error(exc.stream_id or stream_id, exc)

    def _preface(self, data: bytes) -> bytes:
        seen = self._preface_seen + data
        if len(seen) < len(PREFACE):
            if not PREFACE.startswith(seen):
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 client preface")
            self._preface_seen = seen
            return b""
        if not seen.startswith(PREFACE):
            raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 client preface")
        self._need_preface = False
        self._preface_seen = b""
        return seen[len(PREFACE) :]

    def _data(self, data: bytes, flags: int, stream_id: int, start: int, stop: int) -> None:
        size = stop - start  # flow control counts the padding too
        window = self.recv_window - size
        if window < 0:
            raise ConnectionFailure(
                ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the connection window"
            )
        if window <= self.connection_window >> 1:
            self.out.append(window_update(0, self.connection_window - window))
            window = self.connection_window
        self.recv_window = window
        if flags & PADDED:
            start, stop = strip_padding(data, start, stop)
        elif not size and not flags & END_STREAM:
            self.spend_empty()
        self.on_data(stream_id, flags, data, start, stop, size)

    def _fragment(self, stream_id: int, flags: int, fragment: bytes, *, first: bool) -> None:
        """One piece of a header block (HEADERS or CONTINUATION)."""
        if not fragment and not flags & END_HEADERS:
            self.spend_empty()
        if first:
            if flags & END_HEADERS:
                self._header_block(stream_id, flags, fragment)
                return
            self._block_stream, self._block_flags = stream_id, flags
            self._block_parts = [fragment]
            self._block_size = len(fragment)
            self.on_header_block_start(stream_id)
        else:
            if not self._block_stream or stream_id != self._block_stream:
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "unexpected CONTINUATION")
            self._block_parts.append(fragment)
            self._block_size += len(fragment)
        limit = self.decoder.max_block_size
        if self._block_size > limit:
            raise HeaderListTooLarge(
                f"header block over {limit} bytes", ErrorCode.ENHANCE_YOUR_CALM
            )
        if flags & END_HEADERS:
            block = b"".join(self._block_parts)
            first_flags = self._block_flags
            self._block_stream, self._block_parts, self._block_size = 0, [], 0
            self._header_block(stream_id, first_flags, block)

    def _header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self.decoder.decode(block)  # always: the table must follow the peer's
        self.on_headers(stream_id, bool(flags & END_STREAM), headers)

    def _control(
        self, kind: int, flags: int, stream_id: int, data: bytes, start: int, stop: int
    ) -> None:
        if kind == CONTINUATION:
            self._fragment(stream_id, flags, data[start:stop], first=False)
        elif kind == WINDOW_UPDATE:
            increment = _U32.unpack_from(data, start)[0] & MAX_WINDOW
            if stream_id:
                self.on_stream_window(stream_id, increment)
            else:
                self.send_window = grow_window(self.send_window, increment, 0)
                self.on_window_open()
        elif kind == SETTINGS:
            if flags & ACK:
                self.spend_empty()  # this side sends one SETTINGS: one ACK means something
                self.on_settings_ack()
            elif not self.settings_frames.spend():
                raise ConnectionFailure(ErrorCode.ENHANCE_YOUR_CALM, "too many SETTINGS")
            else:
                self._settings(data[start:stop])
        elif kind == PING:
            if flags & ACK:
                self.spend_empty()
                self.on_ping_ack(data[start:stop])
            elif not self.pings.spend():
                raise ConnectionFailure(ErrorCode.ENHANCE_YOUR_CALM, "too_many_pings")
            else:
                self.out.append(ping(data[start:stop], ack=True))
        elif kind == RST_STREAM:
            if not self.resets.spend():
                raise ConnectionFailure(ErrorCode.ENHANCE_YOUR_CALM, "too many RST_STREAM frames")
            self.on_reset(stream_id, _U32.unpack_from(data, start)[0])
        elif kind == GOAWAY:
            last, code, debug = parse_goaway(memoryview(data)[start:stop])
            self.goaway_last = last if self.goaway_last is None else min(last, self.goaway_last)
            self.on_goaway(last, code, debug)
        elif kind == PUSH_PROMISE:
            raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE: push is disabled")
        else:  # PRIORITY (checked by check_frame) and unknown types: ignored (section 5.5)
            self.spend_empty()

    def spend_empty(self) -> None:
        """Count a frame that carries nothing to act on (ENHANCE_YOUR_CALM past the budget)."""
        if not self.empty_frames.spend():
            raise ConnectionFailure(ErrorCode.ENHANCE_YOUR_CALM, "too many empty frames")

    def _settings(self, payload: bytes) -> None:
        for key, value in parse_settings(payload):
            if key == Setting.HEADER_TABLE_SIZE:
                if self.encoder is not None:
                    self.encoder.resize(value)
            elif key == Setting.MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
                self.on_max_streams(value)
            elif key == Setting.INITIAL_WINDOW_SIZE:
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                if delta:
                    self.on_initial_window(delta)
            elif key == Setting.MAX_FRAME_SIZE:
                self.peer_max_frame = value
            elif key == Setting.MAX_HEADER_LIST_SIZE:
                self.peer_max_header_list = value
            elif key == Setting.ENABLE_PUSH and value and self.client:
                raise ConnectionFailure(ErrorCode.PROTOCOL_ERROR, "a server sent ENABLE_PUSH 1")
        self.out.append(SETTINGS_ACK)
        self.on_window_open()

    # ------------------------------------------------------------------ hooks
    def on_headers(self, stream_id: int, end_stream: bool, headers: Headers) -> None:
        """A complete header block for ``stream_id`` (request, response or trailers)."""

    def on_header_block_start(self, stream_id: int) -> None:
        """A header block began that CONTINUATION frames must complete (:attr:`header_block_stream`
        until they do; :meth:`on_headers` then): a side that bounds the time a block may take
        starts its clock here. A block in one HEADERS frame does not call it."""

    def on_data(
        self, stream_id: int, flags: int, data: bytes, start: int, stop: int, size: int
    ) -> None:
        """DATA for ``stream_id``: its payload is ``data[start:stop]`` (padding removed);
        ``size`` counted against the stream's receive window (padding included)."""

    def on_reset(self, stream_id: int, code: int) -> None:
        """RST_STREAM from the peer."""

    def on_stream_window(self, stream_id: int, increment: int) -> None:
        """WINDOW_UPDATE on a stream (use :func:`~moorage.core.http2.frames.grow_window`)."""

    def on_initial_window(self, delta: int) -> None:
        """The peer's INITIAL_WINDOW_SIZE changed by ``delta``: every open stream's send
        window changes by as much (section 6.9.2; above 2^31-1 is a FLOW_CONTROL_ERROR)."""

    def on_max_streams(self, value: int) -> None:
        """The peer's SETTINGS_MAX_CONCURRENT_STREAMS."""

    def on_window_open(self) -> None:
        """The connection window grew, or new SETTINGS apply: blocked DATA may go on."""

    def on_goaway(self, last_stream_id: int, code: int, debug: bytes) -> None:
        """GOAWAY from the peer: streams above ``last_stream_id`` were never processed."""

    def on_ping_ack(self, payload: bytes) -> None:
        """The answer to a PING of ours."""

    def on_settings_ack(self) -> None:
        """The peer applied our SETTINGS."""

    def on_stream_error(self, stream_id: int, exc: StreamFailure) -> None:
        """A stream error: by default RST_STREAM with its code (a subclass also forgets the
        stream, then calls this)."""
        self.out.append(rst_stream(stream_id, exc.code))
