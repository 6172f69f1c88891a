"""The HTTP/1.1 protocol's direct answer to inference requests (no ASGI messages), on a real
``moorage-server`` over raw sockets: it answers as the ASGI path does, keeps keep-alive,
pipelining, ``Connection: close`` and HTTP/1.0 right, and leaves to ASGI what it declines."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_integration import Server, start, stop

pytestmark = pytest.mark.integration

INFER = "/v2/models/sklearn-iris/infer"
BODY = (
    b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",'
    b' "data": [5.1, 3.5, 1.4, 0.2]}]}'
)


@pytest.fixture(scope="module")
def server(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / "direct.log"
    running = start(
        ["--model_name", "sklearn-iris", "--model_dir", str(iris_dir),
         "--max_request_body_bytes", "4096", "--enable_access_log", "true"],
        log,
    )  # fmt: skip
    yield running
    assert stop(running) == 0, running.output()


def request(path: str, body: bytes, *extra: str, version: str = "1.1") -> bytes:
    head = [f"POST {path} HTTP/{version}", "Host: t", "Content-Type: application/json", *extra]
    if not any(h.lower().startswith("transfer-encoding") for h in extra):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


class Reader:
    """Responses off one connection, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"connection closed; read {self.buffer!r}"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"{name} twice"
            headers[name.lower()] = value.strip()
        if status == 100:
            return self.response()
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            assert self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed(self) -> bool:
        self.sock.settimeout(5)
        return not self.buffer and not self._fill()


def exchange(
    server: Server, data: bytes, count: int = 1
) -> list[tuple[int, dict[str, str], bytes]]:
    with socket.create_connection(("127.0.0.1", server.http), timeout=10) as sock:
        sock.sendall(data)
        reader = Reader(sock)
        return [reader.response() for _ in range(count)]


def comparable(answer: tuple[int, dict[str, str], bytes]) -> tuple[int, list[str], object]:
    status, headers, body = answer
    parsed = json.loads(body)
    if isinstance(parsed, dict):
        parsed.pop("id", None)
    return status, sorted(headers), parsed


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (INFER, BODY),
        (INFER, b"{bad json"),
        ("/v2/models/missing/infer", BODY),
        ("/v1/models/sklearn-iris:predict", b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'),
        ("/v1/models/sklearn-iris:predict", b'{"instances": "no"}'),
    ],
)
def test_direct_answers_as_the_asgi_path_does(server: Server, path: str, body: bytes) -> None:
    (direct,) = exchange(server, request(path, body))
    # the same request sent chunked, or through a proxy, goes through ASGI
    (by_chunks,) = exchange(server, request(path, chunked(body), "Transfer-Encoding: chunked"))
    (proxied,) = exchange(server, request(path, body, "X-Forwarded-For: 10.1.2.3"))
    assert comparable(direct) == comparable(by_chunks) == comparable(proxied)
    assert set(direct[1]) >= {"date", "content-length", "content-type", "x-request-id"}


def test_the_callers_request_id_comes_back(server: Server) -> None:
    ((status, headers, _),) = exchange(server, request(INFER, BODY, "X-Request-Id: mine-123"))
    assert status == 200 and headers["x-request-id"] == "mine-123"
    line = '"POST /v2/models/sklearn-iris/infer HTTP/1.1" 200'
    assert line in server.output_when(lambda text: line in text)


def test_pipelined_requests_are_answered_in_order_then_closed(server: Server) -> None:
    pipelined = (
        request(INFER, BODY)
        + request(INFER, b"{bad")
        + request("/v1/models/sklearn-iris:predict", b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}')
        + request(INFER, BODY, "Connection: close")
    )
    with socket.create_connection(("127.0.0.1", server.http), timeout=10) as sock:
        sock.sendall(pipelined)
        reader = Reader(sock)
        answers = [reader.response() for _ in range(4)]
        assert [status for status, _, _ in answers] == [200, 400, 200, 200]
        assert json.loads(answers[2][2]) == {"predictions": [0]}
        assert answers[3][1]["connection"] == "close"
        assert reader.closed()


def test_http_1_0_gets_its_answer_and_the_connection_closes(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.http), timeout=10) as sock:
        sock.sendall(request(INFER, BODY, version="1.0"))
        reader = Reader(sock)
        status, headers, _ = reader.response()
        assert status == 200 and headers["connection"] == "close"
        assert reader.closed()


def test_what_the_direct_path_declines_still_works(server: Server) -> None:
    (too_big,) = exchange(server, request(INFER, b" " * 5000))
    assert too_big[0] == 413
    (expecting,) = exchange(server, request(INFER, BODY, "Expect: 100-continue"))
    assert expecting[0] == 200


def test_a_client_gone_before_its_answer_leaves_the_server_serving(server: Server) -> None:
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", server.http), timeout=10) as sock:
            sock.sendall(request(INFER, BODY))
    ((status, _, _),) = exchange(server, request(INFER, BODY))
    assert status == 200


def test_an_idle_keep_alive_connection_is_closed_at_its_timeout(
    iris_dir: Path, tmp_path: Path
) -> None:
    """``--http_keep_alive_timeout_seconds``: a connection idle after its answer is closed by
    the server (checked twice a second), one that keeps sending requests stays open."""
    import time

    running = start(
        ["--model_name", "sklearn-iris", "--model_dir", str(iris_dir),
         "--http_keep_alive_timeout_seconds", "2"],
        tmp_path / "keepalive.log",
    )  # fmt: skip
    try:
        with socket.create_connection(("127.0.0.1", running.http), timeout=10) as sock:
            reader = Reader(sock)
            for _ in range(4):  # within the timeout each time: the connection stays
                sock.sendall(request(INFER, BODY))
                assert reader.response()[0] == 200
                time.sleep(0.5)
            answered = time.monotonic()
            assert reader.closed()  # the server closes it, without a response
            waited = time.monotonic() - answered
            assert 1.0 <= waited <= 5.0, waited
    finally:
        assert stop(running) == 0, running.output()
