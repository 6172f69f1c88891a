"""HTTP/2 frames (RFC 9113 sections 4 and 6): encoders and the frame reader round-trip (with
hypothesis, the stream cut anywhere), and the checks that need no connection state: frame
size, the stream a type belongs to, fixed payload sizes, SETTINGS ranges, window overflow,
padding."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moorage.core.http2.frames import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_MAX_FRAME,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    MAX_WINDOW,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    ConnectionFailure,
    ErrorCode,
    FrameReader,
    Setting,
    StreamFailure,
    check_frame,
    error_name,
    frame,
    goaway,
    grow_window,
    header_block_frames,
    headers_fragment,
    parse_goaway,
    parse_settings,
    ping,
    rst_stream,
    strip_padding,
    window_update,
)
from moorage.core.http2.frames import settings as settings_frame

_frames = st.lists(
    st.tuples(
        st.integers(0, 0xFF),
        st.integers(0, 0xFF),
        st.integers(0, 2**31 - 1),
        st.binary(max_size=300),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(_frames, st.lists(st.integers(1, 400), max_size=20))
def test_frames_round_trip_however_the_stream_is_cut(
    frames: list[tuple[int, int, int, bytes]], cuts: list[int]
) -> None:
    wire = b"".join(frame(*f) for f in frames)
    reader = FrameReader(max_frame_size=300)
    seen = []
    pos = 0
    for size in [*cuts, len(wire)]:
        buffer, found = reader.feed(wire[pos : pos + size])
        seen += [(k, fl, sid, buffer[a:b]) for k, fl, sid, a, b in found]
        pos += size
    assert seen == frames
    assert reader.pending == 0


def test_reserved_bit_of_the_stream_id_is_ignored() -> None:
    wire = frame(DATA, 0, 1, b"x")
    wire = wire[:5] + bytes([wire[5] | 0x80]) + wire[6:]
    assert FrameReader().feed(wire)[1] == [(DATA, 0, 1, 9, 10)]


def test_frame_over_max_frame_size_is_refused_on_its_header() -> None:
    reader = FrameReader(max_frame_size=DEFAULT_MAX_FRAME)
    with pytest.raises(ConnectionFailure) as info:
        reader.feed(frame(DATA, 0, 1, bytes(DEFAULT_MAX_FRAME + 1))[:9])  # the header alone
    assert info.value.code == ErrorCode.FRAME_SIZE_ERROR
    assert FrameReader().feed(frame(DATA, 0, 1, bytes(DEFAULT_MAX_FRAME)))[1]


def test_encoders_against_the_h2_library() -> None:
    """Frames we encode are what h2 (a server here) accepts and understands."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    events = conn.receive_data(
        PREFACE
        + settings_frame({Setting.INITIAL_WINDOW_SIZE: 1000, Setting.ENABLE_PUSH: 0})
        + window_update(0, 5000)
        + ping(b"12345678")
        + header_block_frames(1, b"\x83\x86\x84\x41\x01h", END_STREAM, 3)
        + rst_stream(1, ErrorCode.CANCEL)
        + goaway(0, ErrorCode.NO_ERROR, b"bye")
    )
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "RemoteSettingsChanged", "WindowUpdated", "PingReceived", "RequestReceived",
        "StreamEnded", "StreamReset", "ConnectionTerminated",
    ]  # fmt: skip
    request = next(e for e in events if isinstance(e, h2.events.RequestReceived))
    assert dict(request.headers)[b":authority"] == b"h"


def test_header_block_frames_split_at_the_peers_max_frame_size() -> None:
    block = bytes(range(50))
    wire = header_block_frames(3, block, END_STREAM, 16)
    _, found = FrameReader().feed(wire)
    kinds = [(k, fl) for k, fl, _, _, _ in found]
    assert kinds == [(HEADERS, END_STREAM), (CONTINUATION, 0), (CONTINUATION, 0),
                     (CONTINUATION, END_HEADERS)]  # fmt: skip
    assert b"".join(wire[a:b] for *_, a, b in found) == block
    assert header_block_frames(3, b"ab", 0, 16) == frame(HEADERS, END_HEADERS, 3, b"ab")


# ----------------------------------------------------------------------------- section 6 checks
@pytest.mark.parametrize(
    ("kind", "flags", "stream_id", "length", "code", "what"),
    [
        (DATA, 0, 0, 1, ErrorCode.PROTOCOL_ERROR, "6.1 DATA on stream 0"),
        (HEADERS, 0, 0, 1, ErrorCode.PROTOCOL_ERROR, "6.2 HEADERS on stream 0"),
        (PRIORITY, 0, 0, 5, ErrorCode.PROTOCOL_ERROR, "6.3 PRIORITY on stream 0"),
        (RST_STREAM, 0, 0, 4, ErrorCode.PROTOCOL_ERROR, "6.4 RST_STREAM on stream 0"),
        (RST_STREAM, 0, 1, 3, ErrorCode.FRAME_SIZE_ERROR, "6.4 RST_STREAM of 3 bytes"),
        (SETTINGS, 0, 1, 0, ErrorCode.PROTOCOL_ERROR, "6.5 SETTINGS on a stream"),
        (SETTINGS, ACK, 0, 6, ErrorCode.FRAME_SIZE_ERROR, "6.5 SETTINGS ACK with payload"),
        (SETTINGS, 0, 0, 7, ErrorCode.FRAME_SIZE_ERROR, "6.5 SETTINGS not a multiple of 6"),
        (PING, 0, 1, 8, ErrorCode.PROTOCOL_ERROR, "6.7 PING on a stream"),
        (PING, 0, 0, 7, ErrorCode.FRAME_SIZE_ERROR, "6.7 PING of 7 bytes"),
        (GOAWAY, 0, 1, 8, ErrorCode.PROTOCOL_ERROR, "6.8 GOAWAY on a stream"),
        (GOAWAY, 0, 0, 7, ErrorCode.FRAME_SIZE_ERROR, "6.8 GOAWAY too short"),
        (WINDOW_UPDATE, 0, 0, 3, ErrorCode.FRAME_SIZE_ERROR, "6.9 WINDOW_UPDATE of 3 bytes"),
        (CONTINUATION, 0, 0, 1, ErrorCode.PROTOCOL_ERROR, "6.10 CONTINUATION on stream 0"),
    ],
)
def test_connection_errors_from_the_frame_header(
    kind: int, flags: int, stream_id: int, length: int, code: ErrorCode, what: str
) -> None:
    with pytest.raises(ConnectionFailure) as info:
        check_frame(kind, flags, stream_id, length)
    assert info.value.code == code, what


def test_priority_of_the_wrong_size_is_a_stream_error() -> None:
    with pytest.raises(StreamFailure) as info:
        check_frame(PRIORITY, 0, 3, 4)
    assert (info.value.code, info.value.stream_id) == (ErrorCode.FRAME_SIZE_ERROR, 3)
    check_frame(PRIORITY, 0, 3, 5)
    check_frame(0x20, 0xFF, 0, 100)  # unknown types pass (section 5.5)


@pytest.mark.parametrize(
    ("key", "value", "code"),
    [
        (Setting.ENABLE_PUSH, 2, ErrorCode.PROTOCOL_ERROR),
        (Setting.INITIAL_WINDOW_SIZE, MAX_WINDOW + 1, ErrorCode.FLOW_CONTROL_ERROR),
        (Setting.MAX_FRAME_SIZE, DEFAULT_MAX_FRAME - 1, ErrorCode.PROTOCOL_ERROR),
        (Setting.MAX_FRAME_SIZE, 1 << 24, ErrorCode.PROTOCOL_ERROR),
    ],
)
def test_settings_out_of_range(key: int, value: int, code: ErrorCode) -> None:
    payload = settings_frame({key: value})[9:]
    with pytest.raises(ConnectionFailure) as info:
        parse_settings(payload)
    assert info.value.code == code


def test_settings_in_range_and_unknown_parameters_are_kept() -> None:
    values = {
        Setting.ENABLE_PUSH: 1, Setting.INITIAL_WINDOW_SIZE: MAX_WINDOW,
        Setting.MAX_FRAME_SIZE: (1 << 24) - 1, Setting.HEADER_TABLE_SIZE: 0, 0xFF: 7,
    }  # fmt: skip
    assert parse_settings(settings_frame(values)[9:]) == list(values.items())
    with pytest.raises(ConnectionFailure):
        parse_settings(b"\x00" * 5)


def test_window_overflow_and_zero_increments() -> None:
    assert grow_window(10, 5, 0) == 15
    assert grow_window(MAX_WINDOW - 1, 1, 1) == MAX_WINDOW
    for stream_id, kind in ((0, ConnectionFailure), (1, StreamFailure)):
        with pytest.raises(kind) as info:
            grow_window(MAX_WINDOW, 1, stream_id)
        assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR
        with pytest.raises(kind) as info:
            grow_window(5, 0, stream_id)
        assert info.value.code == ErrorCode.PROTOCOL_ERROR


def test_padding() -> None:
    payload = bytes([3]) + b"data" + b"\x00" * 3
    assert strip_padding(payload, 0, len(payload)) == (1, 5)
    for bad in (b"", bytes([4]) + b"abc", bytes([0])[:0]):
        with pytest.raises(ConnectionFailure) as info:
            strip_padding(bad, 0, len(bad))
        assert info.value.code == ErrorCode.PROTOCOL_ERROR
    assert strip_padding(bytes([0]), 0, 1) == (1, 1)  # pad length 0, no data
    # HEADERS: pad length + priority fields
    head = bytes([2]) + b"\x00\x00\x00\x01\x10" + b"blk" + b"\x00\x00"
    assert headers_fragment(head, 0, len(head), PADDED | PRIORITY_FLAG) == (6, 9)
    for flags, bad in ((PADDED, b""), (PADDED, bytes([5]) + b"abc"), (PRIORITY_FLAG, b"abc")):
        with pytest.raises(ConnectionFailure):
            headers_fragment(bad, 0, len(bad), flags)


def test_goaway_and_error_names() -> None:
    assert parse_goaway(goaway(7, ErrorCode.ENHANCE_YOUR_CALM, b"calm")[9:]) == (7, 0xB, b"calm")
    assert error_name(0xB) == "ENHANCE_YOUR_CALM" and error_name(0x99) == "0x99"
