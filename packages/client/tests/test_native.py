"""The native HTTP/2 gRPC transport: which transport a client takes, HPACK, large tensors (flow
control), many streams on one connection, deadlines and cancellation (RST_STREAM), GOAWAY and
refused streams (retried), trailers-only answers and HTTP errors, compression, size limits,
and a server killed and restarted.

Real servers only: grpcio's server (conftest), an h2-library peer scripted per test
(h2peer.py), and a grpcio server in a subprocess for the kill.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from typing import Any

import grpc
import numpy as np
import pytest

from moorage.client import (
    ConnectionFailed,
    InferenceGRPCClient,
    InferRequest,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    ServerError,
    SyncInferenceGRPCClient,
    Timeout,
    default_channel_options,
)
from moorage.client._channel import RetryPolicy, native_options, parse_target
from moorage.core.http2 import frames
from moorage.core.protocol import InferTensor
from moorage.core.protocol.grpc import pb

from .conftest import free_port
from .h2peer import SETTINGS, Call, H2Peer, echo


def infer_request(x: Any, model: str = "echo") -> InferRequest:
    return InferRequest(model, [InferTensor.from_numpy("x", np.asarray(x))])


# ----------------------------------------------------------------------------- choice
def test_auto_takes_native_where_it_can() -> None:
    assert InferenceGRPCClient("h:1").transport == "native"
    assert InferenceGRPCClient("[::1]:1", use_ssl=True).transport == "native"
    honoured = [("grpc.max_receive_message_length", 10), ("grpc.ssl_target_name_override", "x")]
    assert InferenceGRPCClient("h:1", channel_args=honoured).transport == "native"
    assert InferenceGRPCClient("h:1", transport="grpcio").transport == "grpcio"
    creds = grpc.ssl_channel_credentials()
    for client in (
        InferenceGRPCClient("h:1", creds=creds),
        InferenceGRPCClient("h:1", channel_args=[("grpc.keepalive_time_ms", 1000)]),
        InferenceGRPCClient("dns:///h:1"),
        InferenceGRPCClient("unix:/tmp/socket"),
    ):
        assert client.transport == "grpcio"


def test_native_refuses_what_needs_grpcio() -> None:
    with pytest.raises(InvalidInput, match="creds"):
        InferenceGRPCClient("h:1", creds=grpc.ssl_channel_credentials(), transport="native")
    with pytest.raises(InvalidInput, match=r"grpc\.keepalive_time_ms"):
        InferenceGRPCClient("h:1", channel_args=[("grpc.keepalive_time_ms", 1)], transport="native")
    with pytest.raises(InvalidInput, match="host:port"):
        InferenceGRPCClient("dns:///h:1", transport="native")
    with pytest.raises(InvalidInput, match="transport must be"):
        InferenceGRPCClient("h:1", transport="h3")  # type: ignore[arg-type]


def test_targets() -> None:
    assert parse_target("h:1") == ("h", 1)
    assert parse_target("[::1]:8081") == ("::1", 8081)
    for other in ("dns:///h:1", "unix:/s", "ipv4:1.2.3.4:80", "h", "h:x", "::1:80"):
        assert parse_target(other) is None


def test_retry_policy_is_read_from_the_service_config() -> None:
    options = native_options(default_channel_options())
    assert not isinstance(options, str)
    assert options.retry == RetryPolicy(attempts=3, initial_backoff=0.1, max_backoff=1.0)
    assert (options.max_send, options.max_receive) == (None, None)
    one = native_options(default_channel_options(retries=1))
    assert not isinstance(one, str) and one.retry.attempts == 1
    many = native_options(default_channel_options(retries=9))
    assert not isinstance(many, str) and many.retry.attempts == 5  # grpc's cap
    config = '{"methodConfig": [{"name": [{}], "timeout": "1s"}]}'
    assert isinstance(native_options([("grpc.service_config", config)]), str)
    config = '{"loadBalancingConfig": [{"round_robin": {}}]}'
    assert isinstance(native_options([("grpc.service_config", config)]), str)


def test_backoff_is_full_jitter_up_to_the_ceiling() -> None:
    policy = RetryPolicy(attempts=5, initial_backoff=0.1, max_backoff=0.3, multiplier=2)
    waits = [[policy.backoff(attempt) for _ in range(200)] for attempt in (1, 2, 3, 4)]
    assert [max(w) <= c for w, c in zip(waits, (0.1, 0.2, 0.3, 0.3), strict=True)] == [True] * 4
    assert min(waits[0]) >= 0 and max(waits[3]) > 0.2


# ----------------------------------------------------------------------------- requests
async def test_request_headers_are_indexed_after_the_first_call(h2_peer: H2Peer) -> None:
    async with InferenceGRPCClient(h2_peer.url, headers={"x-team": "a"}) as client:
        for _ in range(3):
            assert await client.is_server_live()
        encoder = client._native._conn._encoder  # type: ignore[union-attr]
        block = encoder.encode(client._native._fields[("ServerLive", 60)])  # type: ignore[union-attr]
    assert len(block) == 9  # nine fields, one index byte each
    assert [r.headers["x-team"] for r in h2_peer.requests] == ["a"] * 3


async def test_timeouts_that_do_not_repeat_stay_out_of_the_table(h2_peer: H2Peer) -> None:
    async with InferenceGRPCClient(h2_peer.url) as client:
        for i in range(5):
            assert await client.is_server_live(timeout=10 + i / 7)
        for _ in range(3):
            assert await client.is_server_live(timeout=20)
        encoder = client._native._conn._encoder  # type: ignore[union-attr]
    timeouts = [value for name, value in encoder._where if name == b"grpc-timeout"]
    assert timeouts == [b"20000m"]
    sent = [r.headers["grpc-timeout"] for r in h2_peer.requests]
    assert all(9_990 <= int(t[:-1]) <= 10_572 for t in sent[:5])
    assert 19_990 <= int(sent[5][:-1]) <= 20_000 and sent[6:] == ["20000m"] * 2


# ----------------------------------------------------------------------------- wire
async def test_request_headers_as_the_spec_writes_them(h2_peer: H2Peer) -> None:
    headers = {"X-Team": "a", "x-blob-bin": "\x00\x01é"}
    async with InferenceGRPCClient(h2_peer.url, headers=headers, timeout=30) as client:
        assert await client.is_server_live(headers={"x-req": "7"})
    seen = h2_peer.requests[-1].headers
    assert seen[":method"] == "POST" and seen[":scheme"] == "http"
    assert seen[":path"] == "/inference.GRPCInferenceService/ServerLive"
    assert seen[":authority"] == h2_peer.url
    assert seen["content-type"] == "application/grpc" and seen["te"] == "trailers"
    assert seen["user-agent"].startswith("grpc-python-moorage/")
    assert seen["x-team"] == "a" and seen["x-req"] == "7"
    assert base64.b64decode(seen["x-blob-bin"] + "==") == "\x00\x01é".encode()
    assert 29_000 <= int(seen["grpc-timeout"].rstrip("m")) <= 30_000
    assert h2_peer.errors == []  # the h2 library found nothing to complain about


async def test_invalid_metadata_is_refused(h2_peer: H2Peer) -> None:
    async with InferenceGRPCClient(h2_peer.url) as client:
        with pytest.raises(InvalidInput, match="metadata"):
            await client.is_server_live(headers={"bad key": "x"})
        with pytest.raises(InvalidInput, match="printable"):
            await client.is_server_live(headers={"x-a": "line\nbreak"})


async def test_trailers_only_answer_and_percent_encoded_message(h2_peer: H2Peer) -> None:
    async def not_found(call: Call) -> None:
        code = (("moorage-error-code", "model_not_found"),)
        call.trailers_only(5, "caf%C3%A9 %25 gone", extra=code)

    h2_peer.handler = not_found
    async with InferenceGRPCClient(h2_peer.url) as client:
        with pytest.raises(ModelNotFound, match="café % gone") as info:
            await client.infer(infer_request([1]))
    assert info.value.details["grpc_status"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("http_status", "grpc_status", "error"),
    [(404, "UNIMPLEMENTED", ServerError), (503, "UNAVAILABLE", ModelNotReady),
     (400, "INTERNAL", ServerError), (418, "UNKNOWN", ServerError)],
)  # fmt: skip
async def test_http_status_without_grpc_status(
    h2_peer: H2Peer, http_status: int, grpc_status: str, error: type[Exception]
) -> None:
    async def refuse(call: Call) -> None:
        call.http_error(http_status)

    h2_peer.handler = refuse
    async with InferenceGRPCClient(h2_peer.url, retries=2) as client:
        with pytest.raises(error, match=f"status: {http_status}") as info:
            await client.is_server_live()
    assert info.value.details["grpc_status"] == grpc_status  # type: ignore[attr-defined]
    assert len(h2_peer.requests) == (2 if grpc_status == "UNAVAILABLE" else 1)


async def test_plain_http2_server_is_not_grpc(h2c_server: Any) -> None:
    """hypercorn (h2c prior knowledge) answers 404 for the gRPC path: UNIMPLEMENTED."""
    async with InferenceGRPCClient(h2c_server.url.removeprefix("http://")) as client:
        with pytest.raises(ServerError, match="status: 404") as info:
            await client.is_server_live()
    assert info.value.details["grpc_status"] == "UNIMPLEMENTED"
    assert h2c_server.versions[-1] == "2"


@pytest.mark.parametrize(
    "garbage",
    [
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",  # not HTTP/2 at all
        b"\x00\x00\x00\x01\x0c\x00\x00\x00\x01",  # HEADERS, PADDED, no room for padding
        b"\x00\x00\x03\x01\x05\x00\x00\x00\x01\xff\xff\xff",  # HPACK index out of range
    ],
)
async def test_a_server_speaking_garbage_is_connection_failed(
    h2_peer: H2Peer, garbage: bytes
) -> None:
    async def garble(call: Call) -> None:
        call.proto.transport.write(garbage)

    h2_peer.handler = garble
    async with InferenceGRPCClient(h2_peer.url, timeout=5) as client:
        with pytest.raises(ConnectionFailed, match="HTTP/2 protocol error"):
            await client.is_server_live()
        h2_peer.handler = echo
        assert await client.is_server_live()  # a new connection


@pytest.mark.parametrize(
    ("attack", "answer"),
    [
        (lambda sid: frames.ping(bytes(8)) * 50, "ENHANCE_YOUR_CALM.*too_many_pings"),
        (lambda sid: frames.settings({}) * 50, "ENHANCE_YOUR_CALM.*SETTINGS"),
        (lambda sid: frames.frame(frames.DATA, 0, sid, b"") * 300, "ENHANCE_YOUR_CALM.*empty"),
        (lambda sid: frames.frame(0x40, 0, 0, b"") * 300, "ENHANCE_YOUR_CALM.*empty"),
        (lambda sid: frames.frame(frames.HEADERS, 4, 99, b"\x88"), "PROTOCOL_ERROR.*idle"),
        (lambda sid: frames.window_update(0, frames.MAX_WINDOW), "FLOW_CONTROL_ERROR"),
        (lambda sid: frames.settings({frames.Setting.ENABLE_PUSH: 1}), "PROTOCOL_ERROR.*PUSH"),
    ],
    ids=["pings", "settings", "empty-data", "unknown-frames", "idle-stream", "window", "push"],
)
async def test_a_hostile_server_gets_goaway_and_the_next_call_reconnects(
    h2_peer: H2Peer, attack: Any, answer: str
) -> None:
    """Floods past core's budgets and protocol violations from a server end the connection
    with RFC 9113's code (the call fails as a lost connection); the next call reconnects."""

    async def hostile(call: Call) -> None:
        call.proto.transport.write(attack(call.stream_id))

    h2_peer.handler = hostile
    before = h2_peer.connections
    async with InferenceGRPCClient(h2_peer.url, timeout=5) as client:
        with pytest.raises(ConnectionFailed, match=answer):
            await client.is_server_live()
        h2_peer.handler = echo
        assert await client.is_server_live()
    assert h2_peer.connections == before + 2


async def test_unavailable_is_retried_with_backoff(h2_peer: H2Peer) -> None:
    async def flaky(call: Call) -> None:
        if len(h2_peer.requests) < 3:
            call.trailers_only(14, "warming up")
        else:
            await echo(call)

    h2_peer.handler = flaky
    async with InferenceGRPCClient(h2_peer.url, retries=3) as client:
        assert await client.is_server_live()
    assert len(h2_peer.requests) == 3
    h2_peer.requests.clear()
    async with InferenceGRPCClient(h2_peer.url, retries=1) as client:
        with pytest.raises(ModelNotReady, match="warming up"):
            await client.is_server_live()
    assert len(h2_peer.requests) == 1


async def test_pushback_stops_retries(h2_peer: H2Peer) -> None:
    async def stop(call: Call) -> None:
        call.trailers_only(14, "go away", extra=(("grpc-retry-pushback-ms", "-1"),))

    h2_peer.handler = stop
    async with InferenceGRPCClient(h2_peer.url, retries=3) as client:
        with pytest.raises(ModelNotReady):
            await client.is_server_live()
    assert len(h2_peer.requests) == 1


async def test_goaway_above_the_stream_is_sent_again_on_a_new_connection(
    h2_peer: H2Peer,
) -> None:
    async def go_away_once(call: Call) -> None:
        if len(h2_peer.requests) == 1:
            call.goaway(last_stream_id=call.stream_id - 2)  # this stream was never processed
        else:
            await echo(call)

    async with InferenceGRPCClient(h2_peer.url, retries=1) as client:
        assert await client.is_server_live()  # on connection A
        before = h2_peer.connections
        h2_peer.requests.clear()
        h2_peer.handler = go_away_once
        result = await client.infer(infer_request([3.0]))  # GOAWAY on A, answered on B
    assert result.output("x").as_numpy().tolist() == [3.0]
    assert h2_peer.connections == before + 1 and len(h2_peer.requests) == 2


async def test_refused_stream_is_sent_again(h2_peer: H2Peer) -> None:
    async def refuse_once(call: Call) -> None:
        if len(h2_peer.requests) == 1:
            call.reset(7)  # REFUSED_STREAM
        else:
            await echo(call)

    h2_peer.handler = refuse_once
    async with InferenceGRPCClient(h2_peer.url, retries=1) as client:
        assert await client.is_server_live()
    assert len(h2_peer.requests) == 2


@pytest.mark.parametrize(
    ("code", "error", "status"),
    [(2, ServerError, "INTERNAL"), (8, ConnectionFailed, "CANCELLED")],
)
async def test_stream_reset_by_the_server(
    h2_peer: H2Peer, code: int, error: type[Exception], status: str
) -> None:
    async def reset(call: Call) -> None:
        call.reset(code)

    h2_peer.handler = reset
    async with InferenceGRPCClient(h2_peer.url) as client:
        with pytest.raises(error) as info:
            await client.is_server_live()
    assert info.value.details["grpc_status"] == status  # type: ignore[attr-defined]
    assert len(h2_peer.requests) == 1  # the server may have processed it: no retry


async def wait_for(condition: Any, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_deadline_resets_the_stream(h2_peer: H2Peer) -> None:
    answer = threading.Event()  # the peer runs in its own thread and loop

    async def slow(call: Call) -> None:
        while not answer.is_set():  # set only after the client has given up
            await asyncio.sleep(0.01)
        await echo(call)

    h2_peer.handler = slow
    async with InferenceGRPCClient(h2_peer.url, timeout=0.2) as client:
        with pytest.raises(Timeout, match="Deadline Exceeded"):
            await client.is_server_live()
        assert not answer.is_set()  # the deadline, not the server's answer, ended the call
        answer.set()
        stream = h2_peer.requests[-1].stream_id
        await wait_for(lambda: (stream, 8) in h2_peer.resets)  # RST_STREAM CANCEL
        # the connection stays usable
        h2_peer.handler = echo
        assert await client.is_server_live()


async def test_cancelled_call_resets_the_stream(h2_peer: H2Peer) -> None:
    async def slow(call: Call) -> None:
        await asyncio.sleep(1)

    h2_peer.handler = slow
    async with InferenceGRPCClient(h2_peer.url) as client:
        task = asyncio.create_task(client.is_server_live())
        await wait_for(lambda: h2_peer.requests)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stream = h2_peer.requests[-1].stream_id
        await wait_for(lambda: (stream, 8) in h2_peer.resets)


@pytest.mark.parametrize("encoding", ["gzip", "snappy"])
async def test_compressed_reply(h2_peer: H2Peer, encoding: str) -> None:
    async def compressed(call: Call) -> None:
        await call.reply(pb.ServerLiveResponse(live=True).SerializeToString(), encoding=encoding)

    h2_peer.handler = compressed
    async with InferenceGRPCClient(h2_peer.url) as client:
        if encoding == "gzip":
            assert await client.is_server_live()
        else:
            with pytest.raises(ServerError, match="snappy"):
                await client.is_server_live()


def _gzip_bomb(size: int) -> bytes:
    """``size`` zero bytes, gzip-compressed (about a thousandth of that on the wire)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    chunk = bytes(1 << 20)
    return b"".join([*(packer.compress(chunk) for _ in range(size >> 20)), packer.flush()])


async def test_gzip_bomb_from_the_server_is_refused_with_bounded_memory(h2_peer: H2Peer) -> None:
    """A 256 MiB reply gzip-compressed into ~256 KB: over the receive limit once inflated, it
    is refused (PayloadTooLarge) after at most limit + 1 bytes of output were made."""
    bomb = _gzip_bomb(256 << 20)

    async def explode(call: Call) -> None:
        await call.reply(bomb, encoding="gzip", compressed=True)

    options = [("grpc.max_receive_message_length", 1 << 20)]
    async with InferenceGRPCClient(h2_peer.url, channel_args=options) as client:
        assert await client.is_server_live()  # connected before the memory is measured
        h2_peer.handler = explode
        tracemalloc.start()
        try:
            with pytest.raises(PayloadTooLarge, match="larger than max"):
                await client.is_server_live()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        h2_peer.handler = echo
        assert await client.is_server_live()
    assert peak < 16 << 20


async def test_reply_over_the_receive_limit_resets_the_stream(h2_peer: H2Peer) -> None:
    async def big(call: Call) -> None:
        await call.reply(bytes(4096), pause=1)

    h2_peer.handler = big
    options = [("grpc.max_receive_message_length", 1024)]
    async with InferenceGRPCClient(h2_peer.url, channel_args=options) as client:
        with pytest.raises(PayloadTooLarge, match=r"larger than max \(\d+ vs\. 1024\)"):
            await client.infer(infer_request(np.zeros(1024, np.float32)))
        stream = h2_peer.requests[-1].stream_id
        await wait_for(lambda: (stream, 8) in h2_peer.resets)  # before the server finished
        h2_peer.handler = echo
        assert await client.is_server_live()


async def test_send_limit_is_checked_before_sending(h2_peer: H2Peer) -> None:
    options = [("grpc.max_send_message_length", 100)]
    async with InferenceGRPCClient(h2_peer.url, channel_args=options) as client:
        with pytest.raises(PayloadTooLarge, match="Sent message larger than max"):
            await client.infer(infer_request(np.zeros(100, np.float32)))
    assert h2_peer.requests == []


async def test_ping_is_answered(h2_peer: H2Peer) -> None:
    async with InferenceGRPCClient(h2_peer.url) as client:
        assert await client.is_server_live()
        proto = h2_peer.protocols[-1]

        def ping() -> None:
            proto.conn.ping(b"12345678")
            proto.flush()

        h2_peer.call_soon(ping)
        await wait_for(lambda: h2_peer.ping_acks >= 1)


async def test_server_closing_the_connection_between_calls(h2_peer: H2Peer) -> None:
    async with InferenceGRPCClient(h2_peer.url) as client:
        assert await client.is_server_live()
        before = h2_peer.connections
        proto = h2_peer.protocols[-1]
        h2_peer.call_soon(proto.transport.abort)  # no GOAWAY: the socket just closes
        await asyncio.sleep(0.1)
        assert await client.is_server_live()
        assert h2_peer.connections == before + 1
        proto = h2_peer.protocols[-1]

        def graceful() -> None:
            proto.conn.close_connection(0)
            proto.flush()

        h2_peer.call_soon(graceful)  # GOAWAY on an idle connection: the next call reconnects
        await asyncio.sleep(0.1)
        assert await client.is_server_live()
        assert h2_peer.connections == before + 2


async def test_concurrent_streams_above_the_servers_limit_wait() -> None:
    peer = H2Peer(settings={SETTINGS.MAX_CONCURRENT_STREAMS: 3})
    active = [0, 0]  # now, most

    async def slow(call: Call) -> None:
        active[0] += 1
        active[1] = max(active)
        await asyncio.sleep(0.02)
        active[0] -= 1
        await echo(call)

    try:
        async with InferenceGRPCClient(peer.url) as client:
            assert await client.is_server_live()  # the connection has the server's settings
            peer.handler = slow
            results = await asyncio.gather(*(client.is_server_live() for _ in range(30)))
        assert all(results) and active[1] == 3 and peer.errors == []
    finally:
        peer.stop()


# ----------------------------------------------------------------------------- grpcio servers
async def test_16_mib_tensor_both_ways(grpc_big_server: Any, transport: str) -> None:
    x = np.random.default_rng(0).random(4 << 20, dtype=np.float32)
    async with InferenceGRPCClient(grpc_big_server.url, transport=transport) as client:
        result = await client.infer(infer_request(x))
    np.testing.assert_array_equal(result.output("x").as_numpy(), x)


@pytest.mark.slow
async def test_100_mib_tensor_both_ways(grpc_big_server: Any) -> None:
    x = np.arange(25 << 20, dtype=np.float32)
    async with InferenceGRPCClient(grpc_big_server.url, transport="native") as client:
        result = await client.infer(infer_request(x))
    assert np.array_equal(result.output("x").as_numpy(), x)


async def test_many_concurrent_calls_on_one_connection(grpc_server: Any, transport: str) -> None:
    async with InferenceGRPCClient(grpc_server.url, transport=transport) as client:
        results = await asyncio.gather(*(client.infer(infer_request([i])) for i in range(200)))
    assert [r.output("x").as_numpy().tolist() for r in results] == [[i] for i in range(200)]
    assert len(grpc_server.peers) == 1  # one client connection served all 200 calls


async def test_binary_metadata_round_trip(grpc_server: Any) -> None:
    async with InferenceGRPCClient(grpc_server.url, headers={"x-trace-bin": "\x00ab"}) as client:
        await client.infer(infer_request([1]))
    assert ("x-trace-bin", b"\x00ab") in grpc_server.seen_raw[-1]


async def test_server_deadline_and_local_deadline_agree(grpc_server: Any) -> None:
    grpc_server.behaviour["delay"] = 0.3
    async with InferenceGRPCClient(grpc_server.url, timeout=0.1) as client:
        with pytest.raises(Timeout):
            await client.infer(infer_request([1]))
    await wait_for(lambda: grpc_server.behaviour.get("active_after_delay"))
    assert grpc_server.behaviour["active_after_delay"] == [False]  # the server saw it go


async def test_tls_with_pem_bytes_and_alpn(grpc_tls_server: Any, test_ca: Any) -> None:
    async with InferenceGRPCClient(
        f"localhost:{grpc_tls_server.port}",
        use_ssl=True,
        root_certificates=test_ca.read("ca_cert"),
        private_key=test_ca.read("client_key"),
        certificate_chain=test_ca.read("client_cert"),
    ) as client:
        assert client.transport == "native"
        assert await client.is_server_live()
    # 127.0.0.1 is in the certificate too; the override names the host to check
    override = [("grpc.ssl_target_name_override", "localhost")]
    async with InferenceGRPCClient(
        f"127.0.0.1:{grpc_tls_server.port}",
        use_ssl=True,
        root_certificates=test_ca.read("ca_cert"),
        private_key=test_ca.read("client_key"),
        certificate_chain=test_ca.read("client_cert"),
        channel_args=override,
    ) as client:
        assert await client.is_server_live()
    with pytest.raises(InvalidInput, match="go together"):
        InferenceGRPCClient("h:1", use_ssl=True, private_key=test_ca.read("client_key"))


def test_sync_twin_on_the_native_transport(h2_peer: H2Peer) -> None:
    with SyncInferenceGRPCClient(h2_peer.url, transport="native") as client:
        results = [client.is_server_live() for _ in range(3)]
        result = client.infer(infer_request([[1, 2]]))
    assert all(results) and result.output("x").as_numpy().tolist() == [[1, 2]]


_KILLABLE_SERVER = """
import sys
from concurrent import futures
import grpc
from moorage.core.protocol.grpc import SERVICE_NAME, pb
def live(request, context):
    return pb.ServerLiveResponse(live=True)
handler = grpc.unary_unary_rpc_method_handler(
    live,
    request_deserializer=pb.ServerLiveRequest.FromString,
    response_serializer=pb.ServerLiveResponse.SerializeToString,
)
server = grpc.server(futures.ThreadPoolExecutor(2))
server.add_generic_rpc_handlers(
    (grpc.method_handlers_generic_handler(SERVICE_NAME, {"ServerLive": handler}),)
)
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
server.start()
print("ready", flush=True)
server.wait_for_termination()
"""


def start_killable(port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE_SERVER, str(port)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


async def test_server_killed_then_restarted() -> None:
    port = free_port()
    process = start_killable(port)
    try:
        async with InferenceGRPCClient(f"127.0.0.1:{port}", timeout=5, retries=1) as client:
            assert await client.is_server_live()
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            with pytest.raises(ConnectionFailed, match=f"127.0.0.1:{port}"):
                await client.is_server_live()
            with pytest.raises(ConnectionFailed, match="failed to connect"):
                await client.is_server_live()  # nothing listening now
            process = start_killable(port)
            assert await client.is_server_live()  # a new connection to the new server
    finally:
        process.kill()
        process.wait(10)
