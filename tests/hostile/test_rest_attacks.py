"""Attacks on the REST port, connection limits and file-descriptor exhaustion (issue 11).

The REST attacks run once (the REST port is the same whatever the gRPC server); the limits
run on a server of their own started under ``prlimit --nofile=300``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Budget, Liveness, Server, grpc_infer, rest_infer
from .wire import closed_by_peer, connect, poll, served_connections

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUEST_HEAD = (
    b"POST /v1/models/sklearn-iris:predict HTTP/1.1\r\nHost: x\r\n"
    b"content-type: application/json\r\n"
)


def _wait_closed(socks: list[socket.socket], seconds: float, tick: Iterator[None] | None = None
                 ) -> tuple[int, float, list[bytes]]:  # fmt: skip
    """Poll until the server closed every socket or ``seconds`` passed; ``tick`` runs each
    round (a trickle). Returns (still open, seconds taken, the first bytes each got)."""
    started = time.monotonic()
    replies = [b""] * len(socks)
    open_ = [True] * len(socks)
    while any(open_) and time.monotonic() - started < seconds:
        if tick is not None:
            next(tick, None)
        for index, sock in enumerate(socks):
            if not open_[index]:
                continue
            closed, chunk = poll(sock)
            replies[index] += chunk
            open_[index] = not closed
        time.sleep(0.1)
    return sum(open_), time.monotonic() - started, replies


def test_silent_and_slowloris_connections(rest_server: Server) -> None:
    """Silent connections and headers trickled a byte at a time end at the header timeout
    (1 s here) with 408; others are served meanwhile."""
    server = rest_server
    budget = Budget(server, "REST idle + slowloris")
    silent = [connect(server.http_port) for _ in range(150)]
    slow = [connect(server.http_port) for _ in range(50)]
    for sock in slow:
        sock.sendall(REQUEST_HEAD)

    def trickle() -> Iterator[None]:
        while True:
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.sendall(b"x")
            yield

    with Liveness(server) as liveness:
        left, took, replies = _wait_closed(silent + slow, 6.0, trickle())
    for sock in silent + slow:
        sock.close()
    budget.check(liveness, connections=200, still_open=left, closed_after_s=round(took, 1))
    assert left == 0
    assert all(reply.startswith(b"HTTP/1.1 408 ") for reply in replies[150:]), replies[150]


def test_body_trickle(rest_server: Server) -> None:
    """A body trickled at 1 KB / 0.3 s ends at the body timeout (2 s here) with 408."""
    server = rest_server
    budget = Budget(server, "REST body trickle")
    socks = [connect(server.http_port) for _ in range(20)]
    for sock in socks:
        sock.sendall(REQUEST_HEAD + b"content-length: 1000000\r\n\r\n")

    def trickle() -> Iterator[None]:
        rounds = 0
        while True:
            if rounds % 3 == 0:
                for sock in socks:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"[" * 1024)
            rounds += 1
            yield

    with Liveness(server) as liveness:
        left, took, replies = _wait_closed(socks, 8.0, trickle())
    for sock in socks:
        sock.close()
    budget.check(liveness, connections=len(socks), still_open=left, closed_after_s=round(took, 1))
    assert left == 0
    assert all(reply.startswith(b"HTTP/1.1 408 ") for reply in replies), replies[0]


@pytest.mark.parametrize("shape", ["many-headers", "one-endless-header"])
def test_header_bomb(rest_server: Server, shape: str) -> None:
    """Headers sent as fast as the server reads them: 431 past --http_max_header_bytes
    (64 KiB), whether as many lines or one line without end."""
    server = rest_server
    budget = Budget(server, f"REST header bomb ({shape})")
    sock = connect(server.http_port)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
    chunk = (b"X-A: " + b"a" * 8000 + b"\r\n") * 8 if shape == "many-headers" else b"a" * 65536
    if shape == "one-endless-header":
        sock.sendall(b"X-A: ")
    sent = 0
    sock.settimeout(0.5)
    with Liveness(server) as liveness:
        while sent < 200 * 2**20:
            try:
                sock.sendall(chunk)
            except OSError:
                break
            sent += len(chunk)
    left, _, replies = _wait_closed([sock], 3.0)
    sock.close()
    budget.check(liveness, sent_mb=round(sent / 2**20, 1), reply=replies[0][:40])
    assert left == 0
    assert replies[0].startswith(b"HTTP/1.1 431 ")


def test_keep_alive_connection_is_closed_when_idle(rest_server: Server) -> None:
    sock = connect(rest_server.http_port)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    left, took, _ = _wait_closed([sock], 4.0)
    sock.close()
    assert left == 0, took  # --http_keep_alive_timeout_seconds 1


# ----------------------------------------------------------------------------- limits
@pytest.fixture(scope="module")
def limited(model_dir: Path) -> Iterator[Server]:
    """A server with 300 descriptors, 50 gRPC connections at most, long REST timeouts."""
    proc = Server(
        model_dir, "native", prefix=["prlimit", "--nofile=300:300"],
        extra=["--grpc_max_connections", "50", "--http_header_timeout_seconds", "30",
               "--grpc_handshake_timeout_seconds", "30"],
    )  # fmt: skip
    yield proc
    proc.stop()


def test_connections_over_the_limit_are_closed_at_once(limited: Server) -> None:
    # The warm-up call's connection (grpcio closes channels in the background) must be gone
    # before the 50 are counted, or one of them is over the limit.
    deadline = time.monotonic() + 5.0
    while served_connections(limited.grpc_port) and time.monotonic() < deadline:
        time.sleep(0.02)
    held = [connect(limited.grpc_port) for _ in range(50)]
    time.sleep(0.3)
    extra = [connect(limited.grpc_port) for _ in range(10)]
    try:
        left, took, _ = _wait_closed(extra, 2.0)
        still_held = sum(not closed_by_peer(sock) for sock in held)
    finally:
        for sock in held + extra:
            sock.close()
    assert left == 0, "connections over --grpc_max_connections stay open"
    assert still_held == 50
    time.sleep(0.3)
    print(f"\n[hostile] max connections: 10 over the limit of 50 closed in {took:.1f} s")
    grpc_infer(limited.grpc_port, timeout=2.0)


def test_file_descriptors_exhausted(limited: Server) -> None:
    """400 idle connections against 300 descriptors: the acceptor backs off (no spinning, one
    warning), and serves again once the connections are gone."""
    server = limited
    budget = Budget(server, "EMFILE")
    socks = []
    for _ in range(400):
        try:
            socks.append(connect(server.http_port, timeout=1.0))
        except OSError:
            break  # the backlog is full: enough
    time.sleep(0.5)
    fds = server.open_fds()
    cpu_before = server.cpu_s()
    time.sleep(2.0)
    cpu = server.cpu_s() - cpu_before
    warnings = server.log().count("accept failed")
    for sock in socks:
        sock.close()
    assert cpu < 0.5, "the acceptor spins"
    started = time.monotonic()
    served = None
    while time.monotonic() - started < 5.0:
        try:
            rest_infer(server.http_port)
            grpc_infer(server.grpc_port)
            served = time.monotonic() - started
            break
        except Exception:
            time.sleep(0.1)
    budget.check(
        None, connections=len(socks), server_fds=fds, cpu_s_in_2s=round(cpu, 2),
        accept_warnings=warnings, served_after_release_s=served,
    )  # fmt: skip
    assert fds >= 290, "the descriptors were not exhausted"
    assert 1 <= warnings <= 3
    assert served is not None and served < 2.0
    assert "accepting connections again" in server.log()


def test_a_large_request_is_not_mistaken_for_a_header_bomb(rest_server: Server) -> None:
    """Headers and a body of several MB in the same reads: only the headers count."""
    rows = [[6.8, 2.8, 4.8, 1.4]] * 100_000
    body = json.dumps({"instances": rows}).encode()
    request = urllib.request.Request(
        rest_server.url("/v1/models/sklearn-iris:predict"), data=body,
        headers={"content-type": "application/json", "x-pad": "p" * 30_000},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert len(json.loads(reply.read())["predictions"]) == len(rows)
