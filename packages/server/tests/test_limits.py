"""Budgets outside the HTTP/2 layer: the per-second counter, the acceptor's connection limit
and its backoff when the process is out of file descriptors."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any

import pytest

from moorage.core.http2.limits import RateCounter
from moorage.server import sockets
from moorage.server.sockets import Acceptor, bind_socket


def test_rate_counter_allows_the_limit_per_second() -> None:
    now = [0.0]
    counter = RateCounter(3, clock=lambda: now[0])
    assert all(counter.spend() for _ in range(3))
    assert counter.spend()  # the first window starts here
    assert all(counter.spend() for _ in range(2))
    assert not counter.spend()  # 4 in the same second
    now[0] = 1.5
    assert counter.spend()
    counter.reset()
    assert all(counter.spend() for _ in range(3))
    assert not RateCounter(0, clock=lambda: 5.0).spend()


class _Quiet(asyncio.Protocol):
    pass


class _FailingSocket:
    """A listening socket whose accept() fails with ``code`` until ``failures`` run out."""

    def __init__(self, real: socket.socket, code: int, failures: int) -> None:
        self.real = real
        self.code = code
        self.failures = failures
        self.calls = 0

    def accept(self) -> Any:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise OSError(self.code, "no descriptors")
        return self.real.accept()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_emfile_backs_off_and_recovers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sockets, "BACKOFF_MIN_S", 0.02)
    monkeypatch.setattr(sockets, "BACKOFF_MAX_S", 0.05)
    listener = bind_socket("127.0.0.1", 0)
    failing = _FailingSocket(listener, errno.EMFILE, failures=5)
    loop = asyncio.get_running_loop()
    client = socket.create_connection(listener.getsockname())
    with caplog.at_level(logging.WARNING, logger="moorage.server.sockets"):
        acceptor = Acceptor(loop, failing, _Quiet)  # type: ignore[arg-type]
        await asyncio.sleep(0.5)
    # 5 failures, then the connection: no spinning on the readable socket meanwhile.
    assert failing.calls <= 8
    assert not failing.failures
    messages = [r.getMessage() for r in caplog.records]
    assert sum("pausing accepts" in m for m in messages) == 1
    assert any("accepting connections again" in m for m in messages)
    acceptor.close()
    await acceptor.wait_closed()
    client.close()
    listener.close()


async def test_connections_over_the_limit_are_closed() -> None:
    listener = bind_socket("127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    transports: list[Any] = []

    class Keep(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            transports.append(transport)

    acceptor = Acceptor(loop, listener, Keep, max_connections=2,
                        open_connections=lambda: len(transports))  # fmt: skip
    clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
    await asyncio.sleep(0.2)
    assert len(transports) == 2
    clients[2].settimeout(2)
    assert clients[2].recv(1) == b""  # closed at once
    acceptor.close()
    for client in clients:
        client.close()
    for transport in transports:
        transport.close()
    listener.close()
