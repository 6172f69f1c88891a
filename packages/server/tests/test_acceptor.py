"""The listening socket's acceptor: the whole backlog per readiness, no descriptor left behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

from moorage.server.server import _Acceptor, bind_socket

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


class _Reply(asyncio.Protocol):
    """Answers each chunk with ``ok`` (one HTTP-ish exchange per read is all the test needs)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"ok")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_one_readiness_takes_the_whole_backlog(loop_name: str) -> None:
    loop = LOOPS[loop_name]()
    listener = bind_socket("127.0.0.1", 0)
    port = listener.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
    try:
        acceptor = _Acceptor(loop, listener, _Reply)
        acceptor._accept()  # one readiness event, as the loop would deliver it
        assert len(acceptor._pending) == 100
        loop.run_until_complete(acceptor.wait_closed())
        for client in clients:
            client.sendall(b"ping")
        loop.run_until_complete(asyncio.sleep(0.05))
        for client in clients:
            client.settimeout(5)
            assert client.recv(2) == b"ok"
        acceptor.close()
    finally:
        for client in clients:
            client.close()
        loop.run_until_complete(asyncio.sleep(0.05))
        loop.close()
        listener.close()


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_closed_connections_release_their_descriptors(loop_name: str) -> None:
    loop = LOOPS[loop_name]()
    listener = bind_socket("127.0.0.1", 0)
    port = listener.getsockname()[1]
    acceptor = _Acceptor(loop, listener, _Reply)
    baseline = _open_fds()

    async def round_trips() -> None:
        for _ in range(3):
            pairs = [await asyncio.open_connection("127.0.0.1", port) for _ in range(30)]
            for reader, writer in pairs:
                writer.write(b"ping")
                assert await asyncio.wait_for(reader.readexactly(2), 5) == b"ok"
            for _, writer in pairs:
                writer.close()
                await writer.wait_closed()
        await asyncio.sleep(0.1)  # the server side sees EOF and closes its transports

    try:
        loop.run_until_complete(round_trips())
        assert _open_fds() <= baseline + 2
    finally:
        acceptor.close()
        loop.close()
        listener.close()


class _Counted(asyncio.Protocol):
    """Registers itself as open in ``connection_made``, as the servers' protocols do."""

    open: set[_Counted] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        _Counted.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        _Counted.open.discard(self)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_the_limit_admits_exactly_max_connections_when_accepts_interleave(loop_name: str) -> None:
    """Connections arriving while earlier ones are being set up: each is counted once (being
    set up, then open), so exactly ``max_connections`` are served and the rest closed."""
    loop = LOOPS[loop_name]()
    listener = bind_socket("127.0.0.1", 0)
    port = listener.getsockname()[1]
    _Counted.open = set()
    clients: list[socket.socket] = []

    async def scenario() -> None:
        acceptor = _Acceptor(
            loop,
            listener,
            _Counted,
            max_connections=50,
            open_connections=lambda: len(_Counted.open),
        )
        for i in range(60):
            client = socket.socket()
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                client.connect(("127.0.0.1", port))
            clients.append(client)
            if i % 3 == 0:
                await asyncio.sleep(0)  # the loop accepts and sets up some before the rest
        await asyncio.sleep(0.1)
        assert len(_Counted.open) == 50
        await asyncio.sleep(0.1)
        closed = 0
        for client in clients:
            try:
                closed += client.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        assert closed == 10
        acceptor.close()

    try:
        loop.run_until_complete(scenario())
    finally:
        for client in clients:
            client.close()
        for protocol in list(_Counted.open):
            protocol.transport.close()
        loop.run_until_complete(asyncio.sleep(0.05))
        loop.close()
        listener.close()
