"""The native gRPC server on the wire: HTTP/2 framing, flow control, refusals and hostile
clients, driven by the ``h2`` client state machine over real sockets, raw bytes and h2load."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import shutil
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import hpack
import numpy as np
import pytest

from moorage.core.http2.hpack import header_field, string_literal
from moorage.core.http2.limits import PeerBudget
from moorage.core.protocol import InferRequest, InferResponse, InferTensor
from moorage.core.protocol.grpc import (
    SERVICE_NAME,
    pb,
    request_to_bytes,
    response_from_proto,
)
from moorage.server import DataPlane, Model
from moorage.server.grpc import NativeGrpcServer, create_grpc_server
from moorage.server.grpc.native import GrpcConnection

from .conftest import make_repository

INFER = f"/{SERVICE_NAME}/ModelInfer"
LIVE = f"/{SERVICE_NAME}/ServerLive"
LIMIT = 8 * 1024 * 1024


@pytest.fixture
async def native() -> AsyncIterator[NativeGrpcServer]:
    server = create_grpc_server(
        DataPlane(make_repository(), max_inflight=64),
        implementation="native",
        max_send_message_length=LIMIT,
        max_receive_message_length=LIMIT,
        max_concurrent_streams=8,
    )
    assert isinstance(server, NativeGrpcServer)
    server.port = server.add_insecure_port("127.0.0.1:0")  # type: ignore[attr-defined]
    await server.start()
    yield server
    await server.stop(0)


def port_of(server: NativeGrpcServer) -> int:
    return int(server.port)  # type: ignore[attr-defined]


def framed(message: bytes, *, compressed: bool = False) -> bytes:
    return struct.pack(">BI", int(compressed), len(message)) + message


def echo_message(data: np.ndarray[Any, Any]) -> bytes:
    return request_to_bytes(InferRequest("echo", [InferTensor.from_numpy("x", data)]))


class Client:
    """An HTTP/2 client connection (the ``h2`` state machine over asyncio streams)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.events: list[Any] = []
        self._bodies: dict[int, tuple[bytes, bool]] = {}

    @classmethod
    async def open(cls, port: int, settings: dict[Any, int] | None = None) -> Client:
        """A connection; ``settings`` maps h2's SettingCodes to values."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        client.conn.initiate_connection()
        if settings:
            client.conn.update_settings(settings)
        await client.flush()
        return client

    async def flush(self) -> None:
        self._push()
        self.writer.write(self.conn.data_to_send())
        with contextlib.suppress(ConnectionError):  # the server closed; the events say why
            await self.writer.drain()

    def _push(self) -> None:
        """Send queued request bodies as far as the server's windows allow."""
        for sid, (body, end) in list(self._bodies.items()):
            while body:
                size = min(
                    len(body),
                    self.conn.local_flow_control_window(sid),
                    self.conn.max_outbound_frame_size,
                )
                if size <= 0:
                    break
                self.conn.send_data(sid, body[:size])
                body = body[size:]
            self._bodies[sid] = (body, end)
            if not body:
                del self._bodies[sid]
                if end:
                    self.conn.end_stream(sid)

    def request(
        self, path: str, body: bytes = b"", *, method: str = "POST", end: bool = True,
        headers: tuple[tuple[str, str], ...] = (),
        content_type: str = "application/grpc",
    ) -> int:  # fmt: skip
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            sid,
            [(":method", method), (":scheme", "http"), (":path", path),
             (":authority", "localhost"), ("content-type", content_type), ("te", "trailers"),
             *headers],
            end_stream=not body and end,
        )  # fmt: skip
        if body:
            self._bodies[sid] = (body, end)
            self._push()
        return sid

    async def until(self, done: Any, timeout: float = 10) -> list[Any]:
        """Read until ``done(events)``; acknowledges received data (flow control)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.flush()
        while not done(self.events):
            try:
                data = await asyncio.wait_for(self.reader.read(65536), deadline - loop.time())
            except ConnectionError:
                data = b""
            if not data:
                break
            for event in self.conn.receive_data(data):
                self.events.append(event)
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
            await self.flush()
        return self.events

    async def response(self, sid: int) -> tuple[dict[str, str], bytes, dict[str, str]]:
        """(headers, body, trailers) of stream ``sid`` (trailers-only: headers == trailers)."""

        def ended(events: list[Any]) -> bool:
            return any(
                isinstance(e, h2.events.StreamEnded | h2.events.StreamReset) and e.stream_id == sid
                for e in events
            )

        events = await self.until(ended)
        blocks = [dict(e.headers) for e in events
                  if isinstance(e, h2.events.ResponseReceived | h2.events.TrailersReceived)
                  and e.stream_id == sid]  # fmt: skip
        body = b"".join(
            e.data for e in events if isinstance(e, h2.events.DataReceived) and e.stream_id == sid
        )
        return blocks[0], body, blocks[-1]

    async def close(self) -> None:
        self.writer.close()
        await asyncio.gather(self.writer.wait_closed(), return_exceptions=True)


async def still_serves(server: NativeGrpcServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port_of(server)}") as channel:
        live = channel.unary_unary(LIVE, response_deserializer=pb.ServerLiveResponse.FromString)
        assert (await live(b"", timeout=5)).live


# ----------------------------------------------------------------------------- calls
async def test_unary_call_and_trailers(native: NativeGrpcServer) -> None:
    client = await Client.open(port_of(native))
    data = np.arange(6, dtype=np.float32)
    sid = client.request(INFER, framed(echo_message(data)),
                         headers=(("x-echo", "hi"), ("x-request-id", "r1")))  # fmt: skip
    headers, body, trailers = await client.response(sid)
    assert headers[":status"] == "200" and headers["content-type"] == "application/grpc"
    assert headers["x-echoed"] == "hi"
    assert trailers["grpc-status"] == "0"
    assert body[0] == 0 and struct.unpack(">I", body[1:5])[0] == len(body) - 5
    reply = response_from_proto(pb.ModelInferResponse.FromString(body[5:]))
    np.testing.assert_array_equal(reply.output("x").data, data)
    await client.close()


async def test_headers_decode_right_as_the_hpack_table_changes(native: NativeGrpcServer) -> None:
    """A header block that left the HPACK table unchanged is decoded from a cache; once
    another block changes the table, the same bytes must mean what the table now says."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(native))
    fixed = b"\x83\x86" + b"".join(  # POST, http (static table), then literals never indexed
        header_field(name, value)
        for name, value in ((b":path", INFER.encode()), (b":authority", b"x"),
                            (b"content-type", b"application/grpc"), (b"te", b"trailers"))
    )  # fmt: skip

    def indexing(value: bytes) -> bytes:  # literal with incremental indexing (RFC 7541 6.2.1)
        return b"\x40" + string_literal(b"x-echo") + string_literal(value)

    newest = b"\xbe"  # indexed field 62: the newest dynamic table entry
    blocks = [fixed + indexing(b"v0"), fixed + newest, fixed + newest,
              fixed + indexing(b"v1"), fixed + newest]  # fmt: skip
    expected = ["v0", "v0", "v0", "v1", "v1"]
    body = framed(echo_message(np.ones(1, np.float32)))
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + struct.pack(">IBI", 4, 0, 0)
    for index, block in enumerate(blocks):
        sid = 2 * index + 1
        out += struct.pack(">IBI", len(block) << 8 | 1, 4, sid) + block  # HEADERS, END_HEADERS
        out += struct.pack(">IBI", len(body) << 8 | 0, 1, sid) + body  # DATA, END_STREAM
    writer.write(out)
    decoder = hpack.Decoder()
    echoed: dict[int, str] = {}
    received = b""
    while len(echoed) < len(blocks):
        received += await asyncio.wait_for(reader.read(65536), 5)
        while len(received) >= 9:
            length_kind, _, sid = struct.unpack(">IBI", received[:9])
            if len(received) < 9 + (length_kind >> 8):
                break
            payload, received = (
                received[9 : 9 + (length_kind >> 8)],
                received[9 + (length_kind >> 8) :],
            )
            if length_kind & 0xFF == 1:
                fields = dict(decoder.decode(payload))
                if "x-echoed" in fields:
                    echoed[sid] = fields["x-echoed"]
    assert [echoed[2 * i + 1] for i in range(len(blocks))] == expected
    writer.close()


async def test_repeated_request_headers_are_interpreted_once(
    native: NativeGrpcServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that indexes its headers sends the same block call after call: the HPACK
    decoder hands back the same header tuple for it, and the connection works out what it
    asks for once (the native server's hot path)."""
    interpreted: list[int] = []
    original = GrpcConnection._interpret

    def counting(self: GrpcConnection, stream: Any, headers: Any) -> Any:
        interpreted.append(stream.id)
        return original(self, stream, headers)

    monkeypatch.setattr(GrpcConnection, "_interpret", counting)
    client = await Client.open(port_of(native))
    body = framed(echo_message(np.ones(2, np.float32)))
    for _ in range(4):
        _, _, trailers = await client.response(client.request(INFER, body))
        assert trailers["grpc-status"] == "0"
    assert interpreted == [1]  # the first call's block indexed its headers; then all cached
    await client.close()


@pytest.mark.parametrize(
    ("kwargs", "status", "grpc_status"),
    [
        ({"path": f"/{SERVICE_NAME}/Nope"}, "200", "12"),
        ({"path": "/other.Service/Method"}, "200", "12"),
        ({"path": LIVE, "method": "GET"}, "405", "12"),
        ({"path": LIVE, "content_type": "application/json"}, "415", "13"),
    ],
)
async def test_refusals_are_trailers_only(
    native: NativeGrpcServer, kwargs: dict[str, str], status: str, grpc_status: str
) -> None:
    client = await Client.open(port_of(native))
    path = kwargs.pop("path")
    sid = client.request(path, framed(b""), **kwargs)  # type: ignore[arg-type]
    headers, body, trailers = await client.response(sid)
    assert (headers[":status"], headers["grpc-status"], body) == (status, grpc_status, b"")
    assert headers is trailers or headers == trailers
    await client.close()


async def test_grpc_message_is_percent_encoded(native: NativeGrpcServer) -> None:
    client = await Client.open(port_of(native))
    bad = request_to_bytes(InferRequest("n%ö", [InferTensor.from_numpy("x", np.ones(1))]))
    _, _, trailers = await client.response(client.request(INFER, framed(bad)))
    assert trailers["grpc-status"] == "5"
    assert "n%25%C3%B6" in trailers["grpc-message"]
    await client.close()


async def test_grpc_timeout_header(native: NativeGrpcServer) -> None:
    native.servicer.dataplane.repository.update(_Sleeper())
    client = await Client.open(port_of(native))
    message = request_to_bytes(InferRequest("sleeper", [InferTensor.from_numpy("x", np.ones(1))]))
    sid = client.request(INFER, framed(message), headers=(("grpc-timeout", "200m"),))
    _, _, trailers = await client.response(sid)
    assert trailers["grpc-status"] == "4"  # DEADLINE_EXCEEDED: the 30 s predict did not finish
    await client.close()


class _Sleeper(Model):
    """async predict that takes 30 s."""

    def __init__(self) -> None:
        super().__init__("sleeper")
        self.ready = True

    async def predict(self, payload: Any, headers: Any = None) -> Any:
        await asyncio.sleep(30)
        return InferResponse(self.name, list(payload.inputs))


async def test_compressed_message(native: NativeGrpcServer) -> None:
    data = np.arange(100, dtype=np.float32)
    client = await Client.open(port_of(native))
    sid = client.request(
        INFER, framed(gzip.compress(echo_message(data)), compressed=True),
        headers=(("grpc-encoding", "gzip"),),
    )  # fmt: skip
    _, body, trailers = await client.response(sid)
    assert trailers["grpc-status"] == "0"
    reply = response_from_proto(pb.ModelInferResponse.FromString(body[5:]))
    np.testing.assert_array_equal(reply.output("x").data, data)
    sid = client.request(
        INFER, framed(b"zzz", compressed=True), headers=(("grpc-encoding", "snappy"),)
    )
    _, _, trailers = await client.response(sid)
    assert trailers["grpc-status"] == "12"
    assert trailers["grpc-accept-encoding"] == "identity,gzip,deflate"
    await client.close()


async def test_bad_request_framing(native: NativeGrpcServer) -> None:
    client = await Client.open(port_of(native))
    cases = [b"", b"\x00\x00\x00", framed(b"") + framed(b""), framed(b"abc")[:-1]]
    for body in cases:
        sid = client.request(LIVE, body)
        _, _, trailers = await client.response(sid)
        assert trailers["grpc-status"] == "13", body  # INTERNAL
    await client.close()
    await still_serves(native)


async def test_oversize_header_list_is_resource_exhausted(native: NativeGrpcServer) -> None:
    client = await Client.open(port_of(native))
    sid = client.request(LIVE, framed(b""), headers=(("x-big", "v" * 20000),))
    _, _, trailers = await client.response(sid)
    assert trailers["grpc-status"] == "8"
    sid = client.request(LIVE, framed(b""))
    assert (await client.response(sid))[2]["grpc-status"] == "0"  # same connection goes on
    await client.close()


async def test_oversize_header_block_closes_the_connection(native: NativeGrpcServer) -> None:
    client = await Client.open(port_of(native))
    client.conn.local_settings = h2.settings.Settings(client=True)  # no local limit
    client.conn.max_outbound_frame_size = 16384
    headers = tuple((f"x-{i}", "v" * 4000) for i in range(40))  # ~160 kB: over 4 x 16 KiB
    client.request(LIVE, framed(b""), headers=headers)
    events = await client.until(
        lambda evs: any(isinstance(e, h2.events.ConnectionTerminated) for e in evs)
    )
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    await client.close()
    await still_serves(native)


async def test_request_over_the_limit_is_refused_early(native: NativeGrpcServer) -> None:
    client = await Client.open(port_of(native))
    sid = client.request(INFER, struct.pack(">BI", 0, LIMIT + 1) + b"x" * 1000, end=False)
    await client.flush()
    _, _, trailers = await client.response(sid)
    assert trailers["grpc-status"] == "8"
    assert "larger than max" in trailers["grpc-message"]
    await client.close()


# ----------------------------------------------------------------------------- HTTP/2
async def test_settings_ping_and_window_updates(native: NativeGrpcServer) -> None:
    client = await Client.open(port_of(native))
    client.conn.ping(b"12345678")
    await client.flush()
    events = await client.until(
        lambda evs: (
            any(isinstance(e, h2.events.PingAckReceived) for e in evs)
            and any(isinstance(e, h2.events.SettingsAcknowledged) for e in evs)
        )
    )
    changed = next(e for e in events if isinstance(e, h2.events.RemoteSettingsChanged))
    settings = {int(k): v.new_value for k, v in changed.changed_settings.items()}
    assert settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 8
    assert settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] >= 1 << 20
    assert client.conn.outbound_flow_control_window >= 1 << 20  # connection window raised
    assert next(e for e in events if isinstance(e, h2.events.PingAckReceived)).ping_data == (
        b"12345678"
    )
    await client.close()


async def test_large_reply_through_a_small_client_window(native: NativeGrpcServer) -> None:
    """The server sends only what the client's windows allow, resuming on WINDOW_UPDATE."""
    client = await Client.open(
        port_of(native),
        {
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: 16384,
        },
    )
    data = np.random.default_rng(1).random(500_000, dtype=np.float32)  # 2 MB each way
    sid = client.request(INFER, framed(echo_message(data)))
    _, body, trailers = await client.response(sid)
    assert trailers["grpc-status"] == "0"
    reply = response_from_proto(pb.ModelInferResponse.FromString(body[5:]))
    np.testing.assert_array_equal(reply.output("x").data, data)
    await client.close()


async def test_streams_beyond_the_limit_are_refused(native: NativeGrpcServer) -> None:
    client = await Client.open(port_of(native))
    client.conn.remote_settings.max_concurrent_streams = 100  # pretend not to know
    sids = [client.request(LIVE, framed(b""), end=False) for _ in range(9)]
    await client.flush()
    events = await client.until(lambda evs: any(isinstance(e, h2.events.StreamReset) for e in evs))
    reset = [e for e in events if isinstance(e, h2.events.StreamReset)]
    assert [e.stream_id for e in reset] == [sids[-1]]
    assert reset[0].error_code == h2.errors.ErrorCodes.REFUSED_STREAM
    for sid in sids[:-1]:
        client.conn.end_stream(sid)
    await client.flush()
    for sid in sids[:-1]:
        assert (await client.response(sid))[2]["grpc-status"] == "0"
    await client.close()


async def test_client_reset_cancels_the_call(native: NativeGrpcServer) -> None:
    native.servicer.dataplane.repository.update(_Sleeper())
    client = await Client.open(port_of(native))
    message = request_to_bytes(InferRequest("sleeper", [InferTensor.from_numpy("x", np.ones(1))]))
    sid = client.request(INFER, framed(message))
    await client.flush()
    await asyncio.sleep(0.1)
    assert native.active == 1
    client.conn.reset_stream(sid)
    await client.flush()
    for _ in range(50):
        if native.active == 0:
            break
        await asyncio.sleep(0.02)
    assert native.active == 0
    await client.close()


async def test_protocol_error_is_goaway(native: NativeGrpcServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(native))
    settings = struct.pack(">IBI", 0 << 8 | 4, 0, 0)
    data_on_zero = struct.pack(">IBI", 3 << 8 | 0, 0, 0) + b"abc"
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + settings + data_on_zero)
    received = await asyncio.wait_for(reader.read(), 5)  # until the server closes
    frames = _frames(received)
    goaway = [payload for kind, _, payload in frames if kind == 7]
    assert goaway and struct.unpack(">II", goaway[0][:8])[1] == 1  # PROTOCOL_ERROR
    writer.close()
    await still_serves(native)


def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    while len(data) >= 9:
        length_kind, flags, _ = struct.unpack(">IBI", data[:9])
        length = length_kind >> 8
        out.append((length_kind & 0xFF, flags, data[9 : 9 + length]))
        data = data[9 + length :]
    return out


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        bytes(range(256)) * 8,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + struct.pack(">IBI", 0, 4, 0)
        + struct.pack(">IBI", 200 << 8 | 1, 4, 1)
        + b"\x00" * 10,  # HEADERS cut mid-frame
    ],
)
async def test_garbage_and_half_frames_do_not_hurt(
    native: NativeGrpcServer, garbage: bytes
) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port_of(native))
    writer.write(garbage)
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    await asyncio.gather(writer.wait_closed(), return_exceptions=True)
    await still_serves(native)
    assert native.active == 0


async def test_graceful_drain_sends_goaway(native: NativeGrpcServer) -> None:
    client = await Client.open(port_of(native))
    sid = client.request(LIVE, framed(b""))
    await client.response(sid)
    stopping = asyncio.ensure_future(native.stop(5))
    events = await client.until(
        lambda evs: any(isinstance(e, h2.events.ConnectionTerminated) for e in evs)
    )
    goaway = next(e for e in events if isinstance(e, h2.events.ConnectionTerminated))
    assert goaway.error_code == 0 and goaway.last_stream_id == sid
    await asyncio.wait_for(stopping, 5)
    await client.close()


@pytest.mark.skipif(shutil.which("h2load") is None, reason="needs h2load")
async def test_h2load_many_connections(native: NativeGrpcServer, tmp_path: Any) -> None:
    body = tmp_path / "live.bin"
    body.write_bytes(framed(b""))
    process = await asyncio.create_subprocess_exec(
        "h2load", "-n", "2000", "-c", "50", "-m", "4", "-H", "content-type: application/grpc",
        "-H", "te: trailers", "-d", str(body), f"http://127.0.0.1:{port_of(native)}{LIVE}",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    text = out.decode()
    assert "2000 succeeded, 0 failed, 0 errored" in text, text
    await still_serves(native)


# ----------------------------------------------------------------------------- RFC 9113 cases
# Modelled on h2spec's cases (h2spec itself is not installable here): raw frames, the answer
# the RFC asks for, and the server still serving others.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GOAWAY_, RST_ = 7, 3
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, ENHANCE_YOUR_CALM = 0, 1, 3, 5, 11


def raw_frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", sid)
        + payload
    )


def block(
    fields: tuple[tuple[bytes, bytes], ...] | None = None, path: bytes = LIVE.encode()
) -> bytes:
    """A request header block of literals (no HPACK state)."""
    if fields is None:
        fields = ((b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
                  (b":authority", b"x"), (b"content-type", b"application/grpc"),
                  (b"te", b"trailers"))  # fmt: skip
    return b"".join(header_field(name, value) for name, value in fields)


def call_frames(sid: int, fields: tuple[tuple[bytes, bytes], ...] | None = None) -> bytes:
    """HEADERS + DATA(END_STREAM): a whole ServerLive call on ``sid``."""
    return raw_frame(1, 4, sid, block(fields)) + raw_frame(0, 1, sid, framed(b""))


async def exchange(
    port: int,
    payload: bytes | tuple[bytes, ...],
    *,
    until_closed: bool = True,
    timeout: float = 2.0,
) -> list[tuple[int, int, bytes]]:
    """Send the preface, SETTINGS and ``payload``, then a PING; read until the server closes
    (or, with ``until_closed=False``, until the PING's ACK: the connection went on).
    ``payload`` may be a tuple: each part after the first is sent once the server ended a
    stream (its answer to the previous part arrived)."""
    parts = payload if isinstance(payload, tuple) else (payload,)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(PREFACE + raw_frame(4, 0, 0) + parts[0])
    received = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for part in parts[1:]:
        while not any(kind == 1 and flags & 1 for kind, flags, _ in _frames(received)):
            received += await asyncio.wait_for(reader.read(65536), deadline - loop.time())
        writer.write(part)
    writer.write(raw_frame(6, 0, 0, b"pingpong"))
    with contextlib.suppress(TimeoutError, ConnectionError):
        while loop.time() < deadline:
            chunk = await asyncio.wait_for(reader.read(65536), deadline - loop.time())
            if not chunk:
                break
            received += chunk
            if not until_closed and any(
                kind == 6 and flags & 1 and body == b"pingpong"
                for kind, flags, body in _frames(received)
            ):
                break
    writer.close()
    return _frames(received)


def goaway_of(frames: list[tuple[int, int, bytes]]) -> int | None:
    codes = [struct.unpack(">II", p[:8])[1] for kind, _, p in frames if kind == GOAWAY_]
    return codes[0] if codes else None


def resets_of(frames: list[tuple[int, int, bytes]]) -> list[int]:
    return [struct.unpack(">I", p)[0] for kind, _, p in frames if kind == RST_]


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (raw_frame(0, 0, 1, b"x"), PROTOCOL_ERROR),  # DATA on an idle stream (5.1)
        (raw_frame(8, 0, 1, b"\x00\x00\x00\x01"), PROTOCOL_ERROR),  # WINDOW_UPDATE, idle
        (raw_frame(3, 0, 1, b"\x00\x00\x00\x08"), PROTOCOL_ERROR),  # RST_STREAM, idle
        (raw_frame(9, 4, 1, b""), PROTOCOL_ERROR),  # CONTINUATION without HEADERS (6.10)
        ((call_frames(1), raw_frame(0, 0, 1, b"x")), STREAM_CLOSED),  # DATA, closed stream
        ((call_frames(1), raw_frame(1, 5, 1, block())), STREAM_CLOSED),  # HEADERS, closed
        (call_frames(5) + call_frames(3), PROTOCOL_ERROR),  # a lower new stream id (5.1.1)
        (call_frames(1) + raw_frame(3, 0, 1, b"\x00\x00\x00\x08")
         + raw_frame(0, 0, 1, b"x"), STREAM_CLOSED),  # DATA after the client's RST_STREAM
        (raw_frame(8, 0, 0, b"\x7f\xff\xff\xff"), FLOW_CONTROL_ERROR),  # window past 2^31-1
        (raw_frame(4, 0, 0, struct.pack(">HI", 4, 1 << 31)), FLOW_CONTROL_ERROR),  # 6.5.2
        (raw_frame(4, 0, 0, struct.pack(">HI", 5, 16383)), PROTOCOL_ERROR),  # MAX_FRAME_SIZE
        (raw_frame(4, 0, 0, struct.pack(">HI", 5, 1 << 24)), PROTOCOL_ERROR),
        (raw_frame(4, 0, 0, struct.pack(">HI", 2, 2)), PROTOCOL_ERROR),  # ENABLE_PUSH 2
        (raw_frame(4, 1, 0, b"\x00" * 6), 6),  # SETTINGS ACK with payload: FRAME_SIZE_ERROR
        (raw_frame(6, 0, 0, b"1234567"), 6),  # PING of 7 bytes: FRAME_SIZE_ERROR
        (raw_frame(6, 0, 1, b"12345678"), PROTOCOL_ERROR),  # PING on a stream
        (raw_frame(5, 4, 1, b"\x00\x00\x00\x02"), PROTOCOL_ERROR),  # PUSH_PROMISE from a client
    ],
    ids=[
        "data-idle", "window-update-idle", "rst-idle", "continuation-alone", "data-closed",
        "headers-closed", "lower-stream-id", "data-after-client-reset", "window-overflow",
        "initial-window-too-large", "max-frame-too-small", "max-frame-too-large",
        "enable-push-2", "settings-ack-payload", "ping-size", "ping-on-stream", "push-promise",
    ],
)  # fmt: skip
async def test_connection_errors(
    native: NativeGrpcServer, frames: bytes | tuple[bytes, ...], code: int
) -> None:
    assert goaway_of(await exchange(port_of(native), frames)) == code
    await still_serves(native)


@pytest.mark.parametrize(
    "fields",
    [
        ((b":method", b"POST"), (b":scheme", b"http"), (b":path", LIVE.encode()),
         (b"content-type", b"application/grpc"), (b"connection", b"keep-alive")),
        ((b":method", b"POST"), (b":scheme", b"http"), (b":path", LIVE.encode()),
         (b"content-type", b"application/grpc"), (b"te", b"gzip")),
        ((b":method", b"POST"), (b":scheme", b"http"), (b":path", LIVE.encode()),
         (b"content-type", b"application/grpc"), (b"X-Upper", b"1")),
        ((b":method", b"POST"), (b":scheme", b"http"), (b":path", LIVE.encode()),
         (b":status", b"200"), (b"content-type", b"application/grpc")),
        ((b":method", b"POST"), (b"content-type", b"application/grpc"),
         (b":scheme", b"http"), (b":path", LIVE.encode())),
        ((b":method", b"POST"), (b":scheme", b"http"), (b"content-type", b"application/grpc")),
        ((b":method", b"POST"), (b":method", b"POST"), (b":scheme", b"http"),
         (b":path", LIVE.encode()), (b"content-type", b"application/grpc")),
        ((b":method", b"POST"), (b":scheme", b"http"), (b":path", b""),
         (b"content-type", b"application/grpc")),
    ],
    ids=["connection-header", "te-gzip", "uppercase-name", "response-pseudo-header",
         "pseudo-after-regular", "missing-path", "repeated-method", "empty-path"],
)  # fmt: skip
async def test_malformed_requests_are_reset(
    native: NativeGrpcServer, fields: tuple[tuple[bytes, bytes], ...]
) -> None:
    """RFC 9113 section 8.1.1: a malformed request is a stream error PROTOCOL_ERROR; the
    connection goes on (a well-formed call on it is answered)."""
    frames = await exchange(port_of(native), call_frames(1, fields) + call_frames(3),
                            until_closed=False)  # fmt: skip
    assert goaway_of(frames) is None
    assert [sid_reset for sid_reset in resets_of(frames)][:1] == [PROTOCOL_ERROR]
    answered = [p for kind, flags, p in frames if kind == 1 and flags & 1]  # trailers
    assert answered, "the well-formed call on stream 3 was not answered"


async def test_stream_window_update_overflow_is_a_stream_error(native: NativeGrpcServer) -> None:
    frames = await exchange(
        port_of(native),
        raw_frame(1, 4, 1, block()) + raw_frame(8, 0, 1, b"\x7f\xff\xff\xff")
        + call_frames(3),
        until_closed=False,
    )  # fmt: skip
    assert goaway_of(frames) is None
    assert resets_of(frames) == [FLOW_CONTROL_ERROR]


async def test_data_in_flight_on_a_reset_stream_is_bounded(native: NativeGrpcServer) -> None:
    """A stream answered before its body ended (here: a prefix over the limit) may still get
    what its window allowed, which is ignored; more is FLOW_CONTROL_ERROR."""
    head = raw_frame(1, 4, 1, block(path=INFER.encode()))
    over = raw_frame(0, 0, 1, struct.pack(">BI", 0, LIMIT + 1))
    chunk = raw_frame(0, 0, 1, b"x" * 16384)
    within = await exchange(port_of(native), head + over + chunk * 8, until_closed=False)
    assert goaway_of(within) is None
    window = 4 * 1024 * 1024  # the server's stream window
    beyond = await exchange(port_of(native), head + over + chunk * (window // 16384 + 1))
    assert goaway_of(beyond) == FLOW_CONTROL_ERROR


async def test_body_past_its_declared_message_is_refused_at_once(native: NativeGrpcServer) -> None:
    """The body may not go on past the message its prefix declares: the stream is answered
    (INTERNAL) without waiting for END_STREAM, and its window is not reopened."""
    client = await Client.open(port_of(native))
    message = echo_message(np.ones(4, np.float32))
    sid = client.request(INFER, framed(message) + b"\xab" * 100_000, end=False)
    await client.flush()
    _, _, trailers = await client.response(sid)
    assert trailers["grpc-status"] == "13"
    assert "more than one message" in trailers["grpc-message"]
    await client.close()
    await still_serves(native)


async def test_error_code_trailer(native: NativeGrpcServer) -> None:
    client = await Client.open(port_of(native))
    bad = request_to_bytes(InferRequest("nope", [InferTensor.from_numpy("x", np.ones(1))]))
    _, _, trailers = await client.response(client.request(INFER, framed(bad)))
    assert trailers["grpc-status"] == "5"
    assert trailers["moorage-error-code"] == "model_not_found"
    sid = client.request(INFER, struct.pack(">BI", 0, LIMIT + 1), end=False)
    _, _, trailers = await client.response(sid)
    assert trailers["moorage-error-code"] == "payload_too_large"
    await client.close()


# ----------------------------------------------------------------------------- budgets
@pytest.fixture
async def strict() -> AsyncIterator[NativeGrpcServer]:
    """A native server with small budgets and short timeouts."""
    server = create_grpc_server(
        DataPlane(make_repository(), max_inflight=64),
        implementation="native",
        budget=PeerBudget(
            pings_per_second=5, settings_per_second=5, resets_per_second=20,
            empty_frames_per_second=20, handshake_timeout_s=0.3, header_timeout_s=0.3,
            idle_timeout_s=0.5,
        ),
    )  # fmt: skip
    assert isinstance(server, NativeGrpcServer)
    server.port = server.add_insecure_port("127.0.0.1:0")  # type: ignore[attr-defined]
    await server.start()
    yield server
    await server.stop(0)


@pytest.mark.parametrize(
    "unit",
    [
        raw_frame(6, 0, 0, b"12345678"),  # PING
        raw_frame(4, 0, 0),  # SETTINGS
        raw_frame(4, 1, 0),  # SETTINGS ACK (we sent one SETTINGS)
        raw_frame(2, 0, 1, b"\x00\x00\x00\x00\x10"),  # PRIORITY
        raw_frame(0xFA, 0, 0, b"?"),  # an unknown type
        raw_frame(1, 4, 1, block()) + raw_frame(0, 0, 1) * 50,  # empty DATA
        b"".join(raw_frame(1, 4, sid, block()) + raw_frame(3, 0, sid, b"\x00\x00\x00\x08")
                 for sid in range(1, 100, 2)),  # rapid reset
    ],
    ids=["ping", "settings", "settings-ack", "priority", "unknown", "empty-data", "rapid-reset"],
)  # fmt: skip
async def test_floods_end_with_enhance_your_calm(strict: NativeGrpcServer, unit: bytes) -> None:
    frames = await exchange(port_of(strict), unit * 50)
    assert goaway_of(frames) == ENHANCE_YOUR_CALM
    await still_serves(strict)


async def test_pings_while_responses_flow_are_not_a_flood(strict: NativeGrpcServer) -> None:
    calls = b"".join(call_frames(sid) + raw_frame(6, 0, 0, b"12345678") for sid in range(1, 40, 2))
    frames = await exchange(port_of(strict), calls, until_closed=False)
    assert goaway_of(frames) is None


async def test_rapid_reset_calls_never_run(strict: NativeGrpcServer) -> None:
    strict.servicer.dataplane.repository.update(_Sleeper())
    message = framed(
        request_to_bytes(InferRequest("sleeper", [InferTensor.from_numpy("x", np.ones(1))]))
    )
    pairs = b"".join(
        raw_frame(1, 4, sid, block(path=INFER.encode())) + raw_frame(0, 1, sid, message)
        + raw_frame(3, 0, sid, b"\x00\x00\x00\x08")
        for sid in range(1, 30, 2)
    )  # fmt: skip
    await exchange(port_of(strict), pairs, until_closed=False)
    assert strict.active == 0 and not strict.tasks


# ----------------------------------------------------------------------------- one loop pass
class _Recorder(asyncio.Transport):
    """A transport keeping what a connection writes, write by write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def writelines(self, pieces: Any) -> None:
        self.writes.append(b"".join(bytes(p) for p in pieces))

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def abort(self) -> None:
        pass


class _Counted(Model):
    """Counts its predictions (async: they run without a task)."""

    def __init__(self) -> None:
        super().__init__("counted")
        self.ready = True
        self.calls = 0

    async def predict(self, payload: Any, headers: Any = None) -> Any:
        self.calls += 1
        return InferResponse(self.name, list(payload.inputs))


def _opened(server: NativeGrpcServer) -> tuple[GrpcConnection, _Recorder]:
    connection, transport = GrpcConnection(server), _Recorder()
    connection.connection_made(transport)
    connection.data_received(PREFACE + raw_frame(4, 0, 0))
    transport.writes.clear()
    return connection, transport


async def test_calls_of_one_loop_pass_start_together_and_are_answered_in_one_write(
    native: NativeGrpcServer,
) -> None:
    model = _Counted()
    native.servicer.dataplane.repository.update(model)
    message = framed(
        request_to_bytes(InferRequest("counted", [InferTensor.from_numpy("x", np.ones(1))]))
    )
    call = raw_frame(1, 4, 1, block(path=INFER.encode())) + raw_frame(0, 1, 1, message)
    opened = [_opened(native) for _ in range(3)]
    for connection, _ in opened:
        connection.data_received(call)
    assert model.calls == 0 and native.queued == 3  # they start once the reads are over
    assert all(transport.writes == [] for _, transport in opened)
    await asyncio.sleep(0)
    assert model.calls == 3 and native.queued == 0 and native.active == 0
    for _, transport in opened:
        assert len(transport.writes) == 1  # HEADERS, DATA and trailers in one write
        frames = _frames(transport.writes[0])
        assert [kind for kind, _, _ in frames] == [1, 0, 1] and frames[-1][1] & 1


async def test_a_call_reset_before_its_pass_ends_never_runs(native: NativeGrpcServer) -> None:
    model = _Counted()
    native.servicer.dataplane.repository.update(model)
    message = framed(
        request_to_bytes(InferRequest("counted", [InferTensor.from_numpy("x", np.ones(1))]))
    )
    connection, transport = _opened(native)
    connection.data_received(raw_frame(1, 4, 1, block(path=INFER.encode())))
    connection.data_received(raw_frame(0, 1, 1, message))
    connection.data_received(raw_frame(3, 0, 1, b"\x00\x00\x00\x08"))  # RST_STREAM CANCEL
    await asyncio.sleep(0)
    assert model.calls == 0 and native.active == 0 and not native.tasks
    assert transport.writes == []


async def test_calls_waiting_to_start_count_against_max_concurrent_rpcs() -> None:
    server = create_grpc_server(
        DataPlane(make_repository()), implementation="native", max_concurrent_rpcs=1
    )
    assert isinstance(server, NativeGrpcServer)
    await server.start()
    try:
        first, second = _opened(server), _opened(server)
        first[0].data_received(call_frames(1))
        second[0].data_received(call_frames(1))  # the first has not started yet
        refused = _frames(b"".join(second[1].writes))
        assert refused[0][0] == 1  # trailers-only HEADERS (then RST_STREAM: no body read)
        status = hpack.Decoder().decode(refused[0][2])
        assert ("grpc-status", str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])) in status
        await asyncio.sleep(0)
        assert [kind for kind, _, _ in _frames(b"".join(first[1].writes))] == [1, 0, 1]
    finally:
        await server.stop(0)


@pytest.mark.parametrize(
    ("opening", "code"),
    [
        (b"", None),  # silent: closed, nothing said
        (PREFACE, PROTOCOL_ERROR),  # preface without SETTINGS
        (PREFACE + raw_frame(4, 0, 0) + raw_frame(1, 0, 1, block()[:10]), ENHANCE_YOUR_CALM),
        (PREFACE + raw_frame(4, 0, 0), NO_ERROR),  # idle
    ],
    ids=["silent", "preface-only", "header-block-unfinished", "idle"],
)
async def test_timeouts_close_the_connection(
    strict: NativeGrpcServer, opening: bytes, code: int | None
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(strict))
    writer.write(opening)
    received = await asyncio.wait_for(reader.read(), 5)  # until the server closes
    writer.close()
    frames = _frames(received)
    if code is not None:
        assert goaway_of(frames) == code
    assert not strict.connections or all(c.closed for c in strict.connections)


async def test_data_after_end_stream_is_a_stream_error(native: NativeGrpcServer) -> None:
    """Section 5.1, half-closed (remote): DATA is a stream error STREAM_CLOSED."""
    frames = await exchange(
        port_of(native), call_frames(1) + raw_frame(0, 0, 1, b"x") + call_frames(3),
        until_closed=False,
    )  # fmt: skip
    assert goaway_of(frames) is None
    assert STREAM_CLOSED in resets_of(frames)


async def test_output_for_a_client_that_does_not_read_is_bounded() -> None:
    """PINGs within their budget from a client that never reads: once the answers queued
    pass ``max_queued_output_bytes`` the server stops reading, so its buffer stays bounded."""
    server = create_grpc_server(
        DataPlane(make_repository()),
        implementation="native",
        budget=PeerBudget(pings_per_second=10**9, max_queued_output_bytes=64 * 1024),
    )
    assert isinstance(server, NativeGrpcServer)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    pings = raw_frame(6, 0, 0, b"12345678") * 4000  # 68 kB a write
    await loop.sock_sendall(sock, PREFACE + raw_frame(4, 0, 0))
    sent = 0
    with contextlib.suppress(TimeoutError):
        while sent < 20 * 1024 * 1024:
            await asyncio.wait_for(loop.sock_sendall(sock, pings), 0.5)
            sent += len(pings)
    (connection,) = server.connections
    assert connection.transport is not None
    buffered = connection.transport.get_write_buffer_size()
    assert sent < 20 * 1024 * 1024, "the server kept reading"
    assert not connection.closed and connection.transport.is_reading() is False
    assert buffered < 1024 * 1024, buffered
    sock.close()
    await server.stop(0)


async def test_a_response_the_client_never_reads_does_not_hold_the_connection(
    strict: NativeGrpcServer,
) -> None:
    """A slow reader (window 0, never updated) holds a response: after the idle timeout the
    stream is reset and the connection ends (GOAWAY NO_ERROR)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(strict))
    message = framed(echo_message(np.ones(1000, np.float32)))
    writer.write(
        PREFACE + raw_frame(4, 0, 0, struct.pack(">HI", 4, 0))  # INITIAL_WINDOW_SIZE 0
        + raw_frame(1, 4, 1, block(path=INFER.encode())) + raw_frame(0, 1, 1, message)
    )  # fmt: skip
    received = await asyncio.wait_for(reader.read(), 5)  # until the server closes
    writer.close()
    frames = _frames(received)
    assert resets_of(frames) == [8]  # CANCEL
    assert goaway_of(frames) == NO_ERROR


async def test_request_bytes_held_per_connection_are_bounded() -> None:
    """Streams whose bodies never end, together past ``max_buffered_request_bytes``: the one
    that goes past is refused RESOURCE_EXHAUSTED; the others and new calls go on."""
    server = create_grpc_server(
        DataPlane(make_repository()),
        implementation="native",
        budget=PeerBudget(max_buffered_request_bytes=1024 * 1024),
    )
    assert isinstance(server, NativeGrpcServer)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = await Client.open(port)
    declared = struct.pack(">BI", 0, 4 * 1024 * 1024)
    sids = [
        client.request(INFER, declared + b"x" * 400_000, end=False) for _ in range(3)
    ]  # 1.2 MB held in all
    await client.flush()
    _, _, trailers = await client.response(sids[2])
    assert trailers["grpc-status"] == "8"
    assert trailers["moorage-error-code"] == "payload_too_large"
    (connection,) = server.connections
    assert connection.open_streams == 2
    assert (await client.response(client.request(LIVE, framed(b""))))[2]["grpc-status"] == "0"
    await client.close()
    await server.stop(0)
