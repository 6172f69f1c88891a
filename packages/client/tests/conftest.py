"""Shared fixtures: a scripted OIP server behind real HTTP/1.1 on loopback (hypercorn; the
REST tests reach it through the client's default transport), a real gRPC server on
loopback (threads, so both async and sync tests can use it), a test CA, and a real
HTTP/1.1 + HTTP/2 ASGI server (hypercorn) that records the HTTP version it saw.

All servers reuse core's codec for their side of the wire; independent servers (MLServer,
moorage-server) are in the integration tests.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from moorage.core.protocol import InferRequest, InferResponse, InferTensor
from moorage.core.protocol.grpc import (
    METHODS,
    SERVICE_NAME,
    pb,
    request_from_proto,
    response_to_proto,
)
from moorage.core.protocol.rest import HEADER_LENGTH, decode_request, encode_response

from .h2peer import H2Peer

MODEL = "echo"


def echo(request: InferRequest) -> InferResponse:
    """The test model: every input comes back as an output of the same name."""
    outputs = [
        InferTensor(
            t.name,
            t.datatype,
            t.shape,
            t.data,
            {k: v for k, v in t.parameters.items() if k != "binary_data"},
        )
        for t in request.inputs
    ]
    return InferResponse(model_name=request.model_name, outputs=outputs, id=request.id)


# ----------------------------------------------------------------------------- REST (real)
def _json(status: int, doc: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        content=orjson.dumps(doc),
        headers={"content-type": "application/json", **(headers or {})},
    )


@dataclass
class FakeOIPServer:
    """OIP v1 and v2 for model ``echo``: a handler from an ``httpx.Request`` (what arrived on
    the wire) to an ``httpx.Response`` (what goes back), served at ``url`` by hypercorn."""

    url: str = ""
    requests: list[httpx.Request] = field(default_factory=list)
    ready: bool = True
    overrides: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]] = field(
        default_factory=dict
    )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        override = self.overrides.get((request.method, path))
        if override is not None:
            return override(request)
        for prefix in ("/prefix",):
            if path.startswith(prefix):
                path = path[len(prefix) :] or "/"
        return self._route(request, path)

    def _route(self, request: httpx.Request, path: str) -> httpx.Response:
        method = request.method
        if method == "GET" and path == "/":
            return _json(200, {"status": "alive"})
        if method == "GET" and path == "/v2/health/live":
            return _json(200, {"live": True})
        if method == "GET" and path == "/v2/health/ready":
            return _json(200, {"ready": self.ready})
        if method == "GET" and path == "/v2":
            return _json(200, {"name": "fake", "version": "1.0", "extensions": ["binary"]})
        parts = path.strip("/").split("/")
        if parts[:2] == ["v1", "models"] and len(parts) == 3:
            name, _, verb = parts[2].partition(":")
            if name != MODEL:
                return _json(404, {"error": f"Model with name {name} does not exist."})
            if method == "GET" and not verb:
                return _json(200, {"name": name, "ready": self.ready})
            doc = orjson.loads(request.content)
            if verb == "predict":
                return _json(200, {"predictions": doc["instances"]})
            if verb == "explain":
                return _json(200, {"explanations": doc["instances"]})
        if parts[:2] == ["v2", "models"] and len(parts) >= 3:
            name = parts[2]
            if name != MODEL:
                error = f"Model with name {name} does not exist."
                return _json(404, {"error": error, "code": "model_not_found"})
            rest = parts[3:]
            if rest[:1] == ["versions"]:
                rest = rest[2:]
            if method == "GET" and not rest:
                return _json(
                    200,
                    {
                        "name": name,
                        "versions": ["1"],
                        "platform": "echo",
                        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                        "outputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                    },
                )
            if method == "GET" and rest == ["ready"]:
                return _json(200 if self.ready else 503, {"name": name, "ready": self.ready})
            if method == "POST" and rest == ["infer"]:
                return self._infer(request, name)
        if parts[:3] == ["v2", "repository", "models"] and len(parts) == 5:
            return _json(200, {"name": parts[3], parts[4]: True})
        return _json(404, {"detail": "Not Found"})

    def _infer(self, request: httpx.Request, name: str) -> httpx.Response:
        header = request.headers.get(HEADER_LENGTH)
        req = decode_request(
            request.content,
            model_name=name,
            header_length=int(header) if header is not None else None,
        )
        body, json_length = encode_response(echo(req), request=req)
        headers = {"content-type": "application/json"}
        if json_length is not None:
            headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(json_length)}
        return httpx.Response(200, content=body, headers=headers)


def handler_app(handler: Callable[[httpx.Request], httpx.Response]) -> Any:
    """An ASGI app that rebuilds each request as an ``httpx.Request`` (raw target, headers and
    body as received) and sends back what ``handler`` answers."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        host, port = scope["server"]
        target = scope["raw_path"]
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        url = httpx.URL(scheme="http", host=host, port=port, raw_path=target)
        request = httpx.Request(scope["method"], url, headers=scope["headers"], content=body)
        response = handler(request)
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.headers.raw,
            }
        )
        await send({"type": "http.response.body", "body": response.content})

    return app


@pytest.fixture(scope="session")
def _fake_server_http() -> Iterator[tuple[str, list[FakeOIPServer]]]:
    """One hypercorn for the session; each test installs its own :class:`FakeOIPServer`."""
    current = [FakeOIPServer()]
    server, stop = serve_hypercorn(app=handler_app(lambda request: current[0](request)))
    yield server.url, current
    stop()


@pytest.fixture
def fake_server(_fake_server_http: tuple[str, list[FakeOIPServer]]) -> FakeOIPServer:
    url, current = _fake_server_http
    current[0] = FakeOIPServer(url=url)
    return current[0]


# ----------------------------------------------------------------------------- gRPC (real)
@dataclass
class GRPCServer:
    port: int
    seen_metadata: list[dict[str, str]]
    server: grpc.Server
    behaviour: dict[str, Any]
    #: every metadata pair (``-bin`` values as bytes) and the peer address of recorded calls
    seen_raw: list[tuple[tuple[str, Any], ...]] = field(default_factory=list)
    peers: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"


def _grpc_handlers(state: dict[str, Any], seen: list[dict[str, str]]) -> grpc.GenericRpcHandler:
    def record(context: grpc.ServicerContext) -> None:
        metadata = tuple(context.invocation_metadata())
        seen.append({k: v for k, v in metadata if isinstance(v, str)})
        state.setdefault("raw", []).append(metadata)
        state.setdefault("peers", set()).add(context.peer())

    def check_model(name: str, context: grpc.ServicerContext) -> None:
        if name != MODEL:
            context.set_trailing_metadata((("moorage-error-code", "model_not_found"),))
            context.abort(grpc.StatusCode.NOT_FOUND, f"Model with name {name} does not exist.")

    def server_live(request: Any, context: grpc.ServicerContext) -> Any:
        record(context)
        return pb.ServerLiveResponse(live=True)

    def server_ready(request: Any, context: grpc.ServicerContext) -> Any:
        record(context)
        return pb.ServerReadyResponse(ready=state.get("ready", True))

    def model_ready(request: Any, context: grpc.ServicerContext) -> Any:
        record(context)
        check_model(request.name, context)
        return pb.ModelReadyResponse(ready=state.get("ready", True))

    def server_metadata(request: Any, context: grpc.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(name="fake", version="1.0", extensions=["binary"])

    def model_metadata(request: Any, context: grpc.ServicerContext) -> Any:
        check_model(request.name, context)
        response = pb.ModelMetadataResponse(name=request.name, versions=["1"], platform="echo")
        tensor = response.inputs.add()
        tensor.name, tensor.datatype = "x", "FP32"
        tensor.shape.extend([-1, 4])
        return response

    def model_infer(request: Any, context: grpc.ServicerContext) -> Any:
        record(context)
        delay = state.get("delay")
        if delay:
            time.sleep(delay)
            state.setdefault("active_after_delay", []).append(context.is_active())
        if state.get("unavailable"):
            context.abort(grpc.StatusCode.UNAVAILABLE, "Model echo is not ready")
        check_model(request.model_name, context)
        req = request_from_proto(request)
        return response_to_proto(echo(req), raw=bool(request.raw_input_contents))

    def repository_load(request: Any, context: grpc.ServicerContext) -> Any:
        check_model(request.model_name, context)
        return pb.RepositoryModelLoadResponse(model_name=request.model_name, isLoaded=True)

    def repository_unload(request: Any, context: grpc.ServicerContext) -> Any:
        check_model(request.model_name, context)
        return pb.RepositoryModelUnloadResponse(model_name=request.model_name, isUnloaded=True)

    impls = {
        "ServerLive": server_live,
        "ServerReady": server_ready,
        "ModelReady": model_ready,
        "ServerMetadata": server_metadata,
        "ModelMetadata": model_metadata,
        "ModelInfer": model_infer,
        "RepositoryModelLoad": repository_load,
        "RepositoryModelUnload": repository_unload,
    }
    handlers = {
        rpc: grpc.unary_unary_rpc_method_handler(
            impls[rpc],
            request_deserializer=req_cls.FromString,
            response_serializer=resp_cls.SerializeToString,
        )
        for rpc, (req_cls, resp_cls) in METHODS.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def start_grpc_server(
    *, credentials: grpc.ServerCredentials | None = None, options: list[Any] | None = None
) -> GRPCServer:
    seen: list[dict[str, str]] = []
    state: dict[str, Any] = {}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options or [])
    server.add_generic_rpc_handlers((_grpc_handlers(state, seen),))
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    grpc_server = GRPCServer(port, seen, server, state)
    state["raw"], state["peers"] = grpc_server.seen_raw, grpc_server.peers
    return grpc_server


@pytest.fixture(scope="module")
def grpc_server() -> Iterator[GRPCServer]:
    server = start_grpc_server()
    yield server
    server.server.stop(grace=None)


@pytest.fixture(autouse=True)
def _reset_grpc_state(request: pytest.FixtureRequest) -> None:
    if "grpc_server" in request.fixturenames:
        server = request.getfixturevalue("grpc_server")
        server.behaviour.clear()
        server.seen_metadata.clear()
        server.seen_raw.clear()
        server.peers.clear()
        server.behaviour["raw"], server.behaviour["peers"] = server.seen_raw, server.peers
    if "h2_peer" in request.fixturenames:
        request.getfixturevalue("h2_peer").reset_state()


@pytest.fixture(params=["native", "grpcio"])
def transport(request: pytest.FixtureRequest) -> str:
    """Both transports of InferenceGRPCClient: every gRPC behaviour is checked on each."""
    return str(request.param)


@pytest.fixture(scope="module")
def h2_peer() -> Iterator[H2Peer]:
    """A scriptable gRPC server on the h2 library (see h2peer.py)."""
    peer = H2Peer()
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def grpc_big_server() -> Iterator[GRPCServer]:
    """The echo server without message size limits (for tensors of many MiB)."""
    server = start_grpc_server(
        options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    )
    yield server
    server.server.stop(grace=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unused_port() -> int:
    """A loopback port with nothing listening on it."""
    return free_port()


# ----------------------------------------------------------------------------- TLS
@dataclass
class TestCA:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def read(self, name: str) -> bytes:
        return Path(getattr(self, name)).read_bytes()


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_ca(directory: Path) -> TestCA:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and a client cert."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_key = _key()
    ca = _certificate("moorage test CA", ca_key, _name("moorage test CA"), ca_key, ca=True)
    files: dict[str, Path] = {}

    def write(name: str, data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        files[name] = path
        return path

    write("ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    for who, usage in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = _key()
        cert = _certificate(who, key, ca.subject, ca_key, ca=False, usage=usage)
        write(f"{who}.pem", cert.public_bytes(serialization.Encoding.PEM))
        write(f"{who}-key.pem", _pem_key(key))
    return TestCA(
        files["ca.pem"],
        files["server.pem"],
        files["server-key.pem"],
        files["client.pem"],
        files["client-key.pem"],
    )


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_ca(tmp_path_factory.mktemp("ca"))


# ----------------------------------------------------------------------------- ASGI (real)
@dataclass
class ASGIServer:
    url: str
    versions: list[str]


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def oip_asgi_app(versions: list[str], delay: dict[str, float]) -> Any:
    """A minimal ASGI OIP v2 server (health, infer, slow) recording ``scope["http_version"]``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        versions.append(scope["http_version"])
        path = scope["path"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status, content, extra = 200, b"", {}
        if path == "/v2/health/ready":
            content = b'{"ready":true}'
        elif path == "/v2/models/slow/ready":
            await asyncio.sleep(delay.get("slow", 0.5))
            content = b'{"ready":true}'
        elif path == f"/v2/models/{MODEL}/infer":
            header = headers.get(HEADER_LENGTH)
            req = decode_request(
                body, model_name=MODEL, header_length=int(header) if header else None
            )
            content, json_length = encode_response(echo(req), request=req)
            if json_length is not None:
                extra[HEADER_LENGTH] = str(json_length)
        else:
            status, content = 404, b'{"error":"not found"}'
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    *((k.encode(), v.encode()) for k, v in extra.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})

    return app


def serve_hypercorn(
    *, tls: TestCA | None = None, app: Any = None
) -> tuple[ASGIServer, Callable[[], None]]:
    """Start hypercorn in a thread on a free loopback port, serving ``app`` (default: the
    recording :func:`oip_asgi_app`); returns the server and a stopper."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    versions: list[str] = []
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.loglevel = "WARNING"
    config.graceful_timeout = 0.2  # do not wait for requests the tests gave up on
    if tls is not None:
        config.certfile = str(tls.server_cert)
        config.keyfile = str(tls.server_key)
        config.alpn_protocols = ["h2", "http/1.1"]
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()

    async def main() -> None:
        started.set()
        served = app if app is not None else oip_asgi_app(versions, {})
        await serve(served, config, shutdown_trigger=stop.wait)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait()
    scheme = "https" if tls is not None else "http"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.02)

    def stopper() -> None:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=1)
        if not thread.is_alive():  # else a lingering connection: the daemon thread ends with us
            loop.close()

    return ASGIServer(f"{scheme}://127.0.0.1:{port}", versions), stopper


@pytest.fixture(scope="module")
def h2_tls_server(test_ca: TestCA) -> Iterator[ASGIServer]:
    server, stop = serve_hypercorn(tls=test_ca)
    yield server
    stop()


@pytest.fixture(scope="module")
def h2c_server() -> Iterator[ASGIServer]:
    server, stop = serve_hypercorn()
    yield server
    stop()


@pytest.fixture(scope="module")
def grpc_tls_server(test_ca: TestCA) -> Iterator[GRPCServer]:
    credentials = grpc.ssl_server_credentials(
        [(test_ca.read("server_key"), test_ca.read("server_cert"))],
        root_certificates=test_ca.read("ca_cert"),
        require_client_auth=True,
    )
    server = start_grpc_server(credentials=credentials)
    yield server
    server.server.stop(grace=None)


@pytest.fixture(scope="module")
def grpc_small_server() -> Iterator[GRPCServer]:
    """A server that accepts messages of at most 1 KiB."""
    server = start_grpc_server(options=[("grpc.max_receive_message_length", 1024)])
    yield server
    server.server.stop(grace=None)
