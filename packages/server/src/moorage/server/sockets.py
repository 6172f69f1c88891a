"""Listening sockets and the acceptor that serves them, for REST and the native gRPC server.

:class:`Acceptor` takes every pending connection when a listening socket is readable, bounds
the connections open at once, and survives file-descriptor exhaustion: on ``EMFILE`` /
``ENFILE`` (or the kernel out of buffers) it stops watching the socket and tries again after
a backoff (100 ms doubling to 1 s), logging once per episode, so it neither spins a core nor
floods the log while descriptors are short, and serves again as soon as some are free.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from moorage.core.errors import ServerError

__all__ = [
    "ACCEPT_BATCH",
    "Acceptor",
    "bind_reuseport_socket",
    "bind_socket",
]

logger = logging.getLogger(__name__)

#: Connections taken per readiness of the listening socket; the rest wait for the next round.
ACCEPT_BATCH = 256
#: First and longest pause of an acceptor out of file descriptors.
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 1.0
#: At most one warning per this many seconds about connections refused over the limit.
_REFUSED_LOG_INTERVAL_S = 10.0
#: accept() failures that mean "out of resources": back off instead of retrying at once.
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Acceptor:
    """Takes every pending connection when the listening socket is readable.

    uvloop's ``create_server`` accepts one connection per loop iteration while the loop is
    busy, so under load a new connection (a client reconnecting, a second load balancer) waits
    behind every request of the established ones: a new connection's first request then sets
    the p99 (see bench/RESULTS.md). Accepting the whole backlog at once makes it wait one
    round at most. Quacks like the ``asyncio.Server`` uvicorn keeps in ``Server.servers``.

    With ``max_connections``, a connection accepted while ``open_connections()`` (plus those
    being set up) is at the limit is closed at once: the peer learns right away, and the
    connections being served keep their descriptors and memory. A connection counts as being
    set up from its accept until its protocol's ``connection_made`` runs (where the server
    counts it as open), never as both.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        *,
        max_connections: int | None = None,
        open_connections: Callable[[], int] | None = None,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._factory = protocol_factory
        self._max = max_connections
        self._open = open_connections
        self._pending: set[asyncio.Task[Any]] = set()
        #: Accepted connections whose protocol's ``connection_made`` has not run yet.
        self._setting_up = 0
        self._closed = False
        self._backoff = 0.0
        self._retry: asyncio.TimerHandle | None = None
        self._failures = 0
        self._refused = 0
        self._refused_logged = float("-inf")
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    self._exhausted(exc)
                    return
                logger.debug("accept failed: %s", exc)  # ECONNABORTED...: the next one
                continue
            if self._max is not None and self._over_limit():
                conn.close()
                continue
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._setting_up += 1
            task = self._loop.create_task(self._connect(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        if self._backoff:
            logger.warning(
                "accepting connections again after %d attempts out of file descriptors",
                self._failures,
            )
            self._backoff = 0.0
            self._failures = 0

    def _over_limit(self) -> bool:
        assert self._max is not None
        count = self._setting_up + (self._open() if self._open is not None else 0)
        if count < self._max:
            return False
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged >= _REFUSED_LOG_INTERVAL_S:
            logger.warning(
                "refused %d connections: %d open, the limit is %d (max connections)",
                self._refused, count, self._max,
            )  # fmt: skip
            self._refused_logged = now
            self._refused = 0
        return True

    def _exhausted(self, exc: OSError) -> None:
        """Out of descriptors: stop watching the socket (it stays readable, the loop would
        spin) and look again after a growing pause."""
        self._failures += 1
        if not self._backoff:
            logger.warning(
                "accept failed: %s; pausing accepts (%.1f s, growing to %.1f s) until "
                "descriptors are free",
                exc, BACKOFF_MIN_S, BACKOFF_MAX_S,
            )  # fmt: skip
            self._backoff = BACKOFF_MIN_S
        else:
            self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)
        self._loop.remove_reader(self._sock.fileno())
        self._retry = self._loop.call_later(self._backoff, self._resume)

    def _resume(self) -> None:
        self._retry = None
        if self._closed:
            return
        self._loop.add_reader(self._sock.fileno(), self._accept)

    async def _connect(self, conn: socket.socket) -> None:
        set_up = False

        def done() -> None:
            nonlocal set_up
            if not set_up:
                set_up = True
                self._setting_up -= 1

        def factory() -> asyncio.Protocol:
            protocol = self._factory()
            connection_made = protocol.connection_made

            def counted(transport: asyncio.BaseTransport) -> None:
                done()  # open from here on: connection_made registers it with the server
                connection_made(transport)

            protocol.connection_made = counted  # type: ignore[method-assign]
            return protocol

        try:
            await self._loop.connect_accepted_socket(factory, sock=conn)
        except OSError as exc:  # the peer went away before the transport was made
            logger.debug("connection dropped before it was served: %s", exc)
            conn.close()
        finally:
            done()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._retry is not None:
                self._retry.cancel()
                self._retry = None
            else:
                self._loop.remove_reader(self._sock.fileno())

    async def wait_closed(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket for REST, inheritable (forked workers share it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise _cannot_listen(host, port, exc) from exc
    sock.set_inheritable(True)
    return sock


def _cannot_listen(host: str, port: int, exc: OSError) -> ServerError:
    """What the server says when it cannot take its port (the entry point prints it as one
    line, without a traceback)."""
    return ServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def bind_reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening socket with ``SO_REUSEPORT`` (workers share the port, as with grpcio);
    ``::`` and ``0.0.0.0`` listen on IPv6 and IPv4 (IPv4 only where IPv6 is off)."""
    if host in ("", "::", "0.0.0.0"):
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            address: tuple[Any, ...] = ("::", port)
        except OSError:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = ("0.0.0.0", port)
    else:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise _cannot_listen(host, port, exc) from exc
    return sock
