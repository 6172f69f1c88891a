"""The connection state machine (:class:`moorage.core.http2.Endpoint`), fed bytes as a peer
would send them: conformance cases modelled on h2spec's list for RFC 9113 (preface, frame
size, header compression and blocks, padding, SETTINGS, PING, WINDOW_UPDATE, CONTINUATION,
unknown frames, push), the flood budgets, and interoperation with the ``h2`` library on both
sides."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events
import hpack
import pytest

from moorage.core.http2 import ConnectionFailure, Endpoint, ErrorCode, Setting, StreamFailure
from moorage.core.http2.frames import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    MAX_WINDOW,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    SETTINGS_ACK,
    WINDOW_UPDATE,
    FrameReader,
    frame,
    settings,
    window_update,
)
from moorage.core.http2.hpack import header_field
from moorage.core.http2.limits import PeerBudget

REQUEST = (
    header_field(b":method", b"POST") + header_field(b":scheme", b"http")
    + header_field(b":path", b"/s/m") + header_field(b":authority", b"h")
)  # fmt: skip


class Recorder(Endpoint):
    """An endpoint that records its hooks."""

    def __init__(self, *, client: bool = False, **options: Any) -> None:
        super().__init__(client=client, **options)
        self.events: list[tuple[Any, ...]] = []

    def on_headers(self, stream_id: int, end_stream: bool, headers: Any) -> None:
        self.events.append(("headers", stream_id, end_stream, headers))

    def on_data(
        self, stream_id: int, flags: int, data: bytes, start: int, stop: int, size: int
    ) -> None:
        self.events.append(("data", stream_id, data[start:stop], size))

    def on_reset(self, stream_id: int, code: int) -> None:
        self.events.append(("reset", stream_id, code))

    def on_stream_window(self, stream_id: int, increment: int) -> None:
        self.events.append(("window", stream_id, increment))

    def on_initial_window(self, delta: int) -> None:
        self.events.append(("initial", delta))

    def on_goaway(self, last_stream_id: int, code: int, debug: bytes) -> None:
        self.events.append(("goaway", last_stream_id, code, debug))

    def on_stream_error(self, stream_id: int, exc: StreamFailure) -> None:
        self.events.append(("stream-error", stream_id, exc.code))
        super().on_stream_error(stream_id, exc)


def server(**options: Any) -> Recorder:
    """A server endpoint past the handshake (the client preface and SETTINGS received)."""
    endpoint = Recorder(**options)
    endpoint.receive(PREFACE + settings({}))
    endpoint.out.clear()
    return endpoint


def fails(endpoint: Endpoint, data: bytes, code: ErrorCode) -> ConnectionFailure:
    with pytest.raises(ConnectionFailure) as info:
        endpoint.receive(data)
    assert info.value.code == code, str(info.value)
    return info.value


def sent(endpoint: Endpoint) -> list[tuple[int, int, int, bytes]]:
    data = b"".join(endpoint.out)
    buffer, found = FrameReader(max_frame_size=1 << 24).feed(data)
    return [(k, f, s, buffer[a:b]) for k, f, s, a, b in found]


# ----------------------------------------------------------------------------- 3.4 preface
def test_server_answers_a_preface_cut_anywhere() -> None:
    endpoint = Recorder()
    wire = PREFACE + settings({Setting.INITIAL_WINDOW_SIZE: 100}) + frame(PING, 0, 0, b"p" * 8)
    for i in range(len(wire)):
        endpoint.receive(wire[i : i + 1])
    assert [k for k, *_ in sent(endpoint)] == [SETTINGS, PING]
    assert endpoint.peer_initial_window == 100


@pytest.mark.parametrize(
    "wire",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
        PREFACE + frame(PING, 0, 0, b"p" * 8),  # 3.4: the preface's first frame is SETTINGS
        PREFACE + SETTINGS_ACK,
    ],
)
def test_invalid_preface(wire: bytes) -> None:
    fails(Recorder(), wire, ErrorCode.PROTOCOL_ERROR)


def test_opening() -> None:
    client = Recorder(client=True, settings=[(Setting.ENABLE_PUSH, 0)], connection_window=1 << 20)
    wire = client.opening()
    assert wire.startswith(PREFACE)
    frames = FrameReader().feed(wire[len(PREFACE) :])[1]
    assert [k for k, *_ in frames] == [SETTINGS, WINDOW_UPDATE]


# ----------------------------------------------------------------------------- 4.2, 4.3
def test_frame_over_our_max_frame_size() -> None:
    fails(server(), frame(DATA, 0, 1, bytes(16385)), ErrorCode.FRAME_SIZE_ERROR)
    big = server(settings=[(Setting.MAX_FRAME_SIZE, 1 << 20)], connection_window=1 << 21)
    big.receive(frame(HEADERS, END_HEADERS, 1, REQUEST) + frame(DATA, 0, 1, bytes(1 << 20)))


def test_invalid_header_block_is_a_compression_error() -> None:
    fails(server(), frame(HEADERS, END_HEADERS, 1, b"\x80"), ErrorCode.COMPRESSION_ERROR)


def test_header_block_bound_before_decoding() -> None:
    endpoint = server(max_header_block=1000)
    endpoint.receive(frame(HEADERS, 0, 1, REQUEST))
    continuation = frame(CONTINUATION, 0, 1, bytes(500))
    fails(endpoint, continuation * 3, ErrorCode.ENHANCE_YOUR_CALM)


# ----------------------------------------------------------------------------- 5.5, 6.10
def test_unknown_frames_are_ignored_but_not_inside_a_header_block() -> None:
    endpoint = server()
    endpoint.receive(frame(0x20, 0xFF, 0, b"x") + frame(0x21, 0, 3, b""))
    assert endpoint.events == [] and endpoint.out == []
    endpoint.receive(frame(HEADERS, END_STREAM, 1, REQUEST[:5]))
    fails(endpoint, frame(0x20, 0, 0, b""), ErrorCode.PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "follow",
    [
        frame(CONTINUATION, END_HEADERS, 3, b""),  # another stream
        frame(DATA, 0, 1, b"x"),
        frame(HEADERS, END_HEADERS, 3, REQUEST),
        frame(PRIORITY, 0, 1, bytes(5)),
    ],
)
def test_header_block_interrupted(follow: bytes) -> None:
    endpoint = server()
    endpoint.receive(frame(HEADERS, 0, 1, REQUEST[:5]))
    fails(endpoint, follow, ErrorCode.PROTOCOL_ERROR)


def test_continuation_without_headers() -> None:
    fails(server(), frame(CONTINUATION, END_HEADERS, 1, REQUEST), ErrorCode.PROTOCOL_ERROR)


def test_header_block_across_continuations() -> None:
    endpoint = server()
    parts = [REQUEST[i : i + 4] for i in range(0, len(REQUEST), 4)]
    wire = frame(HEADERS, END_STREAM, 1, parts[0])
    wire += b"".join(frame(CONTINUATION, 0, 1, p) for p in parts[1:-1])
    wire += frame(CONTINUATION, END_HEADERS, 1, parts[-1])
    endpoint.receive(wire)
    expected = tuple(hpack.Decoder().decode(REQUEST, raw=True))
    assert endpoint.events == [("headers", 1, True, expected)]


def test_a_header_block_in_pieces_says_when_it_starts() -> None:
    """``on_header_block_start`` (a server times the block from there) for a block that
    CONTINUATION frames complete; ``header_block_stream`` names it until they do."""
    endpoint = server()
    starts: list[int] = []
    endpoint.on_header_block_start = starts.append  # type: ignore[method-assign]
    endpoint.receive(frame(HEADERS, END_HEADERS | END_STREAM, 1, REQUEST))
    assert starts == [] and endpoint.header_block_stream == 0
    endpoint.receive(frame(HEADERS, END_STREAM, 3, REQUEST[:4]))
    assert starts == [3] and endpoint.header_block_stream == 3
    endpoint.receive(frame(CONTINUATION, END_HEADERS, 3, REQUEST[4:]))
    assert starts == [3] and endpoint.header_block_stream == 0
    assert [event[:3] for event in endpoint.events] == [("headers", 1, True), ("headers", 3, True)]


# ----------------------------------------------------------------------------- 6.1, 6.2 padding
def test_data_padding() -> None:
    endpoint = server()
    endpoint.receive(frame(DATA, PADDED, 1, bytes([2]) + b"abc\x00\x00"))
    assert endpoint.events == [("data", 1, b"abc", 6)]
    fails(endpoint, frame(DATA, PADDED, 1, bytes([6]) + b"abc\x00\x00"), ErrorCode.PROTOCOL_ERROR)


def test_headers_padding_too_long() -> None:
    fails(server(), frame(HEADERS, END_HEADERS | PADDED, 1, b"\x09" + REQUEST[:3]),
          ErrorCode.PROTOCOL_ERROR)  # fmt: skip


# ----------------------------------------------------------------------------- 6.5 SETTINGS
def test_settings_are_applied_and_acknowledged() -> None:
    endpoint = server()
    values = {Setting.INITIAL_WINDOW_SIZE: 1000, Setting.MAX_FRAME_SIZE: 20000}
    wire = settings({**values, Setting.MAX_CONCURRENT_STREAMS: 7, Setting.MAX_HEADER_LIST_SIZE: 99})
    endpoint.receive(wire)
    assert sent(endpoint) == [(SETTINGS, ACK, 0, b"")]
    assert (endpoint.peer_initial_window, endpoint.peer_max_frame) == (1000, 20000)
    assert (endpoint.peer_max_streams, endpoint.peer_max_header_list) == (7, 99)
    assert endpoint.events == [("initial", 1000 - 65535)]


@pytest.mark.parametrize(
    ("values", "code"),
    [
        ({Setting.ENABLE_PUSH: 2}, ErrorCode.PROTOCOL_ERROR),
        ({Setting.INITIAL_WINDOW_SIZE: MAX_WINDOW + 1}, ErrorCode.FLOW_CONTROL_ERROR),
        ({Setting.MAX_FRAME_SIZE: 16383}, ErrorCode.PROTOCOL_ERROR),
        ({Setting.MAX_FRAME_SIZE: 1 << 24}, ErrorCode.PROTOCOL_ERROR),
    ],
)
def test_settings_out_of_range(values: dict[int, int], code: ErrorCode) -> None:
    fails(server(), settings(values), code)


def test_settings_frame_errors() -> None:
    fails(server(), frame(SETTINGS, ACK, 0, bytes(6)), ErrorCode.FRAME_SIZE_ERROR)
    fails(server(), frame(SETTINGS, 0, 0, bytes(5)), ErrorCode.FRAME_SIZE_ERROR)
    fails(server(), frame(SETTINGS, 0, 1, b""), ErrorCode.PROTOCOL_ERROR)


def test_a_server_may_not_enable_push() -> None:
    client = Recorder(client=True)
    fails(client, settings({Setting.ENABLE_PUSH: 1}), ErrorCode.PROTOCOL_ERROR)
    client = Recorder(client=True)
    client.receive(settings({Setting.ENABLE_PUSH: 0}))
    fails(client, frame(PUSH_PROMISE, END_HEADERS, 1, bytes(4) + REQUEST), ErrorCode.PROTOCOL_ERROR)


# ----------------------------------------------------------------------------- 6.7 PING
def test_ping_is_answered_with_the_same_payload() -> None:
    endpoint = server()
    endpoint.receive(frame(PING, 0, 0, b"abcdefgh"))
    assert sent(endpoint) == [(PING, ACK, 0, b"abcdefgh")]
    endpoint.out.clear()
    endpoint.receive(frame(PING, ACK, 0, b"abcdefgh"))  # an ACK is not answered
    assert endpoint.out == []
    fails(endpoint, frame(PING, 0, 0, b"abc"), ErrorCode.FRAME_SIZE_ERROR)


# ----------------------------------------------------------------------------- 6.9 windows
def test_window_updates() -> None:
    endpoint = server()
    endpoint.receive(window_update(0, 100) + window_update(1, 5))
    assert endpoint.send_window == 65535 + 100
    assert endpoint.events == [("window", 1, 5)]
    fails(server(), window_update(0, 0), ErrorCode.PROTOCOL_ERROR)
    fails(server(), window_update(0, MAX_WINDOW), ErrorCode.FLOW_CONTROL_ERROR)
    fails(server(), frame(WINDOW_UPDATE, 0, 0, bytes(3)), ErrorCode.FRAME_SIZE_ERROR)


def test_connection_receive_window_is_enforced_and_reopened() -> None:
    endpoint = server()  # the default 65535 window
    endpoint.receive(frame(DATA, 0, 1, bytes(16384)) * 2)
    assert sent(endpoint) == [(WINDOW_UPDATE, 0, 0, (32768).to_bytes(4, "big"))]
    assert endpoint.recv_window == 65535
    tight = server()
    tight.recv_window = 10
    fails(tight, frame(DATA, 0, 1, bytes(11)), ErrorCode.FLOW_CONTROL_ERROR)


def test_stream_errors_become_rst_stream() -> None:
    endpoint = server()
    endpoint.receive(frame(PRIORITY, 0, 3, bytes(4)))
    assert endpoint.events == [("stream-error", 3, ErrorCode.FRAME_SIZE_ERROR)]
    assert sent(endpoint) == [(RST_STREAM, 0, 3, (ErrorCode.FRAME_SIZE_ERROR).to_bytes(4, "big"))]


def test_rst_stream_and_goaway_reach_their_hooks() -> None:
    endpoint = server()
    endpoint.receive(frame(RST_STREAM, 0, 1, (8).to_bytes(4, "big")))
    endpoint.receive(frame(7, 0, 0, (5).to_bytes(4, "big") + (0).to_bytes(4, "big") + b"bye"))
    assert endpoint.events == [("reset", 1, 8), ("goaway", 5, 0, b"bye")]
    assert endpoint.goaway_last == 5


# ----------------------------------------------------------------------------- budgets
@pytest.mark.parametrize(
    ("one", "budget", "text"),
    [
        (frame(PING, 0, 0, bytes(8)), PeerBudget(pings_per_second=10), "too_many_pings"),
        (settings({}), PeerBudget(settings_per_second=10), "too many SETTINGS"),
        (frame(RST_STREAM, 0, 1, bytes(4)), PeerBudget(resets_per_second=10), "RST_STREAM"),
        (frame(DATA, 0, 1, b""), PeerBudget(empty_frames_per_second=10), "empty frames"),
        (frame(PRIORITY, 0, 1, bytes(5)), PeerBudget(empty_frames_per_second=10), "empty"),
        (frame(0x30, 0, 0, b""), PeerBudget(empty_frames_per_second=10), "empty frames"),
    ],
)
def test_floods_end_the_connection(one: bytes, budget: PeerBudget, text: str) -> None:
    endpoint = server(budget=budget)
    endpoint.receive(one * 10)  # within the budget
    assert fails(endpoint, one * 20, ErrorCode.ENHANCE_YOUR_CALM).args[0].find(text) >= 0


# ----------------------------------------------------------------------------- interop with h2
def test_h2_client_to_our_server() -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(
        1,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/s/m"),
            (":authority", "h"),
            ("x-big", "v" * 40000),
        ],
    )
    client.send_data(1, b"hello", end_stream=True)
    endpoint = Recorder(settings=[(Setting.MAX_FRAME_SIZE, 16384)])
    endpoint.receive(client.data_to_send())
    (_, sid, end, headers), data = endpoint.events
    assert (sid, end, dict(headers)[b"x-big"]) == (1, False, b"v" * 40000)
    assert data == ("data", 1, b"hello", 5)
    # and h2 accepts what the endpoint answered (SETTINGS, its ACK)
    kinds = {
        type(e).__name__ for e in client.receive_data(endpoint.opening() + b"".join(endpoint.out))
    }
    assert "SettingsAcknowledged" in kinds and "RemoteSettingsChanged" in kinds


def test_our_client_to_an_h2_server() -> None:
    peer = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    peer.initiate_connection()
    client = Recorder(client=True, settings=[(Setting.ENABLE_PUSH, 0)], connection_window=1 << 20)
    events = peer.receive_data(
        client.opening() + frame(HEADERS, END_HEADERS | END_STREAM, 1, REQUEST)
    )
    assert [type(e).__name__ for e in events][-2:] == ["RequestReceived", "StreamEnded"]
    peer.send_headers(1, [(":status", "200"), ("content-type", "application/grpc")])
    peer.send_data(1, b"x" * 100)
    peer.send_headers(1, [("grpc-status", "0")], end_stream=True)
    client.receive(peer.data_to_send())
    assert [e[0] for e in client.events] == ["headers", "data", "headers"]
    assert client.events[-1][3] == ((b"grpc-status", b"0"),)
