"""The engine's own HTTP/1.1 client against real sockets: TLS, chunked bodies, keep-alive,
redirects, and peers that break the protocol (bounded, reported as retryable HttpErrors)."""

from __future__ import annotations

import contextlib
import http.server
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from moorage.storage._http import HttpClient, HttpError

from ._loopback import serving

BODY = bytes(range(256)) * 4096  # 1 MiB


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: set[int] = set()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("X-Twice", "first")
        self.send_header("X-Twice", "second")
        self.end_headers()

    def do_GET(self) -> None:
        type(self).connections.add(id(self.connection))
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/blob")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for at in range(0, len(BODY), 300_000):
                piece = BODY[at : at + 300_000]
                self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\nX-Trailer: t\r\n\r\n")
        elif self.path == "/headers":
            body = repr(sorted(self.headers.items())).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            start, end = 0, len(BODY)
            status = 200
            if rng := self.headers.get("Range"):
                first, last = rng.removeprefix("bytes=").split("-")
                start, end, status = int(first), int(last) + 1, 206
            self.send_response(status)
            self.send_header("Content-Length", str(end - start))
            self.end_headers()
            self.wfile.write(BODY[start:end])


@pytest.fixture(scope="module")
def plain() -> Iterator[str]:
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)) as address:
        yield address


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server) as address:
        yield address, cert


def _collect() -> tuple[list[bytes], Callable[[memoryview], None]]:
    parts: list[bytes] = []
    return parts, lambda view: parts.append(bytes(view))


def test_tls_with_a_ca_bundle_and_without_verification(tls: tuple[str, Path]) -> None:
    address, cert = tls
    for verify in (str(cert), False):
        client = HttpClient(verify=verify)
        parts, sink = _collect()
        assert client.fetch(f"https://{address}/blob", sink, start=10, end=70_000) == 69_990
        assert b"".join(parts) == BODY[10:70_000]
        assert client.request("GET", f"https://{address}/blob").body == BODY
        client.close()
    with pytest.raises(HttpError, match="CERTIFICATE_VERIFY_FAILED") as caught:
        HttpClient(verify=True).request("GET", f"https://{address}/blob")
    assert caught.value.retryable


def test_chunked_head_redirect_and_keep_alive(plain: str) -> None:
    client = HttpClient()
    _Handler.connections.clear()
    assert client.request("GET", f"http://{plain}/chunked").body == BODY
    parts, sink = _collect()
    assert client.fetch(f"http://{plain}/chunked", sink) == len(BODY)
    assert b"".join(parts) == BODY
    head = client.request("HEAD", f"http://{plain}/blob")
    assert head.body == b"" and head.header("content-length") == str(len(BODY))
    assert head.header("X-TWICE") == "first"
    redirected = client.request("GET", f"http://{plain}/redirect")
    assert redirected.body == BODY and redirected.url.endswith("/blob")
    for _ in range(3):
        parts, sink = _collect()
        client.fetch(f"http://{plain}/blob", sink, start=0, end=1000)
    assert len(_Handler.connections) == 1  # every request rode one kept-alive connection
    sent = client.request("GET", f"http://{plain}/headers", headers={"X-A": "b"}).body.decode()
    assert f"('Host', '{plain}')" in sent and "('X-A', 'b')" in sent
    assert "('Accept-Encoding', 'identity')" in sent
    client.close()


def test_a_body_left_unread_does_not_leak_into_the_next_answer(plain: str) -> None:
    client = HttpClient()
    parts, sink = _collect()
    # /chunked ignores Range: a 200 whose first 1000 bytes are read, the rest left unread.
    assert client.fetch(f"http://{plain}/chunked", sink, start=0, end=1000) == 1000
    assert b"".join(parts) == BODY[:1000]
    assert client.request("GET", f"http://{plain}/blob").body == BODY
    response = client.request("GET", f"http://{plain}/blob", limit=100, skip_large=True)
    assert response.body == b""
    assert client.request("GET", f"http://{plain}/chunked").body == BODY
    client.close()


def test_header_injection_is_refused(plain: str) -> None:
    client = HttpClient()
    with pytest.raises(HttpError, match="malformed"):
        client.request("GET", f"http://{plain}/blob", headers={"X-A": "b\r\nX-Evil: 1"})
    with pytest.raises(HttpError, match="control characters"):
        client.request("GET", f"http://{plain}/a b")


def _canned(answer: bytes) -> Iterator[str]:
    """A server that reads a request and answers with ``answer`` whatever it was, then closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def run() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                with contextlib.suppress(OSError):
                    conn.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/x"
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SPDY/9 200 OK\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n", "over 65536 bytes"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 300 + b"\r\n", "more than 200"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "10 body bytes|5 body bytes"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n", "bad chunk size"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" * 20, "more than 8 interim"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"", "closed before a response"),
    ],
)
def test_broken_peers_are_bounded_and_retryable(answer: bytes, message: str) -> None:
    for url in _canned(answer):
        with pytest.raises(HttpError, match=message) as caught:
            HttpClient(read_timeout=5).request("GET", url)
        assert caught.value.retryable


def test_a_connection_the_server_closed_while_idle_is_replaced_silently() -> None:
    # The server answers without "Connection: close" and then closes: the next request on the
    # kept connection finds it dead and is sent again on a new one.
    for url in _canned(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"):
        client = HttpClient(read_timeout=5)
        assert [client.request("GET", url).body for _ in range(3)] == [b"ok"] * 3
        client.close()
