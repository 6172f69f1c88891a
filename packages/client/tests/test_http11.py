"""The REST client's own HTTP/1.1 pool (``moorage.client._http11``) against raw loopback servers:
keep-alive reuse, servers that close, chunked and read-until-close bodies, large bodies,
timeouts, refused connections, pool limits and header handling."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest

from moorage.client import (
    ConnectionFailed,
    InferenceRESTClient,
    InferRequest,
    ModelNotFound,
    RESTConfig,
    ServerError,
    Timeout,
)
from moorage.core.protocol import InferTensor

Handler = Callable[["Exchange"], Awaitable[None]]


@dataclass
class Exchange:
    """One request as the raw server read it, and the stream to answer on."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    writer: asyncio.StreamWriter
    connection: int


@dataclass
class RawServer:
    url: str
    handler: list[Handler]
    connections: int = 0
    requests: list[Exchange] = field(default_factory=list)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, path, headers, body


def reply(status: int = 200, body: bytes = b'{"live": true}', **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} OK", f"content-length: {len(body)}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def answer_live(exchange: Exchange) -> None:
    exchange.writer.write(reply())


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServer]:
    state = RawServer("", [answer_live])

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        number = state.connections
        try:
            while not writer.is_closing():
                try:
                    method, path, headers, body = await _read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                exchange = Exchange(method, path, headers, body, writer, number)
                state.requests.append(exchange)
                await state.handler[0](exchange)
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    server.close()


def client(**kwargs: Any) -> InferenceRESTClient:
    return InferenceRESTClient(RESTConfig(protocol="v2", **kwargs))


async def test_the_fast_path_is_used_for_plain_http11() -> None:
    assert client()._pool is not None
    assert client(http2=True)._pool is None
    assert client(auth=("u", "p"))._pool is None
    assert client(transport=httpx.MockTransport(lambda r: httpx.Response(200)))._pool is None


async def test_keep_alive_connection_is_reused(raw_server: RawServer) -> None:
    async with client() as c:
        for _ in range(5):
            assert await c.is_server_live(raw_server.url)
    assert raw_server.connections == 1
    assert len(raw_server.requests) == 5
    first = raw_server.requests[0]
    assert (first.method, first.path) == ("GET", "/v2/health/live")
    assert first.headers["host"] == raw_server.url.removeprefix("http://")
    assert "content-length" not in first.headers  # GET without a body


async def test_concurrent_calls_open_one_connection_each(raw_server: RawServer) -> None:
    async def slow(exchange: Exchange) -> None:
        await asyncio.sleep(0.05)
        exchange.writer.write(reply())

    raw_server.handler[0] = slow
    async with client() as c:
        results = await asyncio.gather(*(c.is_server_live(raw_server.url) for _ in range(4)))
        assert results == [True] * 4
        await c.is_server_live(raw_server.url)
    assert raw_server.connections == 4


async def test_max_connections_queues_calls_and_pool_timeout(raw_server: RawServer) -> None:
    async def slow(exchange: Exchange) -> None:
        await asyncio.sleep(0.05)
        exchange.writer.write(reply())

    raw_server.handler[0] = slow
    limits = httpx.Limits(max_connections=1)
    async with client(limits=limits) as c:
        results = await asyncio.gather(*(c.is_server_live(raw_server.url) for _ in range(4)))
        assert results == [True] * 4
    assert raw_server.connections == 1
    async with client(limits=httpx.Limits(max_keepalive_connections=2)) as c:
        await asyncio.gather(*(c.is_server_live(raw_server.url) for _ in range(4)))
        assert c._pool is not None and c._pool._idle_count() == 2
    timeout = httpx.Timeout(5, pool=0.01)
    async with client(limits=limits, timeout=timeout) as c:
        outcome = await asyncio.gather(
            c.is_server_live(raw_server.url),
            c.is_server_live(raw_server.url),
            return_exceptions=True,
        )
    assert outcome[0] is True
    assert isinstance(outcome[1], Timeout)
    assert "free connection" in outcome[1].message


async def test_connection_close_answers_open_a_new_connection(raw_server: RawServer) -> None:
    async def close_after(exchange: Exchange) -> None:
        exchange.writer.write(reply(connection="close"))
        await exchange.writer.drain()
        exchange.writer.close()

    raw_server.handler[0] = close_after
    async with client() as c:
        for _ in range(3):
            assert await c.is_server_live(raw_server.url)
    assert raw_server.connections == 3


async def test_idle_connection_closed_by_the_server_is_replaced(raw_server: RawServer) -> None:
    async def close_quietly(exchange: Exchange) -> None:
        exchange.writer.write(reply())  # keep-alive promised, then the server hangs up
        await exchange.writer.drain()
        exchange.writer.close()

    raw_server.handler[0] = close_quietly
    async with client(retries=0) as c:
        assert await c.is_server_live(raw_server.url)
        await asyncio.sleep(0.05)
        assert await c.is_server_live(raw_server.url)
    assert raw_server.connections == 2


async def test_stale_keep_alive_connection_is_retried_once(raw_server: RawServer) -> None:
    calls = 0

    async def hang_up_on_second(exchange: Exchange) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the request arrived on a kept-alive connection; no answer
            exchange.writer.close()
            return
        exchange.writer.write(reply())

    raw_server.handler[0] = hang_up_on_second
    async with client() as c:
        assert await c.is_server_live(raw_server.url)
        assert await c.is_server_live(raw_server.url)
    assert calls == 3
    assert raw_server.connections == 2


async def test_server_hanging_up_on_a_fresh_connection_is_connection_failed(
    raw_server: RawServer,
) -> None:
    async def hang_up(exchange: Exchange) -> None:
        exchange.writer.close()

    raw_server.handler[0] = hang_up
    async with client() as c:
        with pytest.raises(ConnectionFailed, match="without sending a response") as info:
            await c.is_server_live(raw_server.url)
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)


async def test_truncated_body_is_connection_failed(raw_server: RawServer) -> None:
    async def truncate(exchange: Exchange) -> None:
        exchange.writer.write(reply(body=b'{"live": true}')[:-4])
        await exchange.writer.drain()
        exchange.writer.close()

    raw_server.handler[0] = truncate
    async with client() as c:
        with pytest.raises(ConnectionFailed, match="complete message body"):
            await c.is_server_live(raw_server.url)


async def test_chunked_response(raw_server: RawServer) -> None:
    async def chunked(exchange: Exchange) -> None:
        w = exchange.writer
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in (b'{"li', b've": ', b"true}"):
            w.write(b"%x\r\n%s\r\n" % (len(part), part))
            await w.drain()
            await asyncio.sleep(0.01)
        w.write(b"0\r\n\r\n")

    raw_server.handler[0] = chunked
    async with client() as c:
        assert await c.is_server_live(raw_server.url)
        assert await c.is_server_live(raw_server.url)
    assert raw_server.connections == 1


async def test_body_until_close(raw_server: RawServer) -> None:
    async def http10(exchange: Exchange) -> None:
        exchange.writer.write(b'HTTP/1.0 200 OK\r\n\r\n{"live": true}')
        await exchange.writer.drain()
        exchange.writer.close()

    raw_server.handler[0] = http10
    async with client() as c:
        assert await c.is_server_live(raw_server.url)
        assert await c.is_server_live(raw_server.url)
    assert raw_server.connections == 2


async def test_gzip_response_is_decoded(raw_server: RawServer) -> None:
    async def zipped(exchange: Exchange) -> None:
        exchange.writer.write(reply(body=gzip.compress(b'{"live": true}'), content_encoding="gzip"))

    raw_server.handler[0] = zipped
    async with client() as c:
        assert await c.is_server_live(raw_server.url)


async def test_read_timeout_counts_silence_not_total_time(raw_server: RawServer) -> None:
    async def trickle(exchange: Exchange) -> None:
        w = exchange.writer
        body = b'{"live": true}'
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body))
        for byte in body:
            await w.drain()
            await asyncio.sleep(0.03)
            w.write(bytes([byte]))

    raw_server.handler[0] = trickle
    async with client(timeout=0.2) as c:  # ~0.4 s in all, never 0.2 s of silence
        assert await c.is_server_live(raw_server.url)

    async def never(exchange: Exchange) -> None:
        await asyncio.sleep(10)

    raw_server.handler[0] = never
    async with client(timeout=0.1) as c:
        with pytest.raises(Timeout, match="waiting for the answer"):
            await c.is_server_live(raw_server.url)
    async with client(timeout=None) as c:  # a per-call timeout wins
        with pytest.raises(Timeout):
            await c.is_server_live(raw_server.url, timeout=0.05)


async def test_connection_refused(unused_port: int) -> None:
    async with client(retries=1) as c:
        with pytest.raises(ConnectionFailed, match=f"127.0.0.1:{unused_port}") as info:
            await c.is_server_live(f"http://127.0.0.1:{unused_port}")
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_cancelled_call_drops_its_connection(raw_server: RawServer) -> None:
    async def slow(exchange: Exchange) -> None:
        await asyncio.sleep(0.5)
        exchange.writer.write(reply())

    raw_server.handler[0] = slow
    async with client() as c:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await c.is_server_live(raw_server.url)
        raw_server.handler[0] = answer_live
        assert await c.is_server_live(raw_server.url)
    assert raw_server.connections == 2


async def test_headers_precedence_and_injection(raw_server: RawServer) -> None:
    async with client(headers={"X-Config": "c", "X-Both": "config"}) as c:
        await c.is_server_live(raw_server.url, headers={"x-both": "call", "X-Call": "1"})
        await c.is_server_live(raw_server.url)
        with pytest.raises(ServerError):
            await c.is_server_live(raw_server.url, headers={"x-bad": "a\r\nx-evil: 1"})
        with pytest.raises(ServerError):
            await c.is_server_live(raw_server.url, headers={"x bad": "a"})
    first, second = raw_server.requests[:2]
    assert (first.headers["x-config"], first.headers["x-both"], first.headers["x-call"]) == (
        "c",
        "call",
        "1",
    )
    assert second.headers["x-both"] == "config"
    assert "x-call" not in second.headers
    assert len(raw_server.requests) == 2


async def test_error_status_maps_and_chains(raw_server: RawServer) -> None:
    async def missing(exchange: Exchange) -> None:
        body = b'{"error": "Model with name m does not exist.", "code": "model_not_found"}'
        exchange.writer.write(reply(404, body, content_type="application/json"))

    raw_server.handler[0] = missing
    async with client() as c:
        with pytest.raises(ModelNotFound, match="does not exist") as info:
            await c.is_model_ready(raw_server.url, "m")
    assert isinstance(info.value.__cause__, httpx.HTTPStatusError)
    assert info.value.details["status_code"] == 404


async def test_cookies_set_by_the_server_are_sent_back(raw_server: RawServer) -> None:
    async def cookie(exchange: Exchange) -> None:
        exchange.writer.write(reply(set_cookie="session=abc; Path=/"))

    raw_server.handler[0] = cookie
    async with client() as c:
        await c.is_server_live(raw_server.url)
        await c.is_server_live(raw_server.url)
    assert "cookie" not in raw_server.requests[0].headers
    assert raw_server.requests[1].headers["cookie"] == "session=abc"


async def test_body_larger_than_the_buffers(h2c_server: Any) -> None:
    x = np.arange(3 << 20, dtype=np.float32)  # 12 MiB each way, chunked by hypercorn
    req = InferRequest(
        "echo",
        [InferTensor.from_numpy("x", x, binary=True)],
        parameters={"binary_data_output": True},
    )
    async with client() as c:
        for _ in range(2):
            result = await c.infer(h2c_server.url, req)
            np.testing.assert_array_equal(result.output("x").as_numpy(), x)
    assert h2c_server.versions[-1] == "1.1"


def test_one_client_across_event_loops(h2c_server: Any) -> None:
    c = client()
    assert asyncio.run(c.is_server_ready(h2c_server.url))
    assert asyncio.run(c.is_server_ready(h2c_server.url))  # the first loop's pool is left
    asyncio.run(c.close())
