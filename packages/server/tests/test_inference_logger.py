"""The CloudEvents inference logger against a real sink on loopback (plain HTTP and TLS)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import numpy as np
import orjson
import pytest
import uvicorn
from prometheus_client import REGISTRY

from moorage.core.config.server import ServerSettings
from moorage.core.protocol import InferRequest, InferResponse, InferTensor
from moorage.core.protocol.grpc import METHODS, SERVICE_NAME, request_to_proto
from moorage.server import Model, ModelServer
from moorage.server.grpc import GrpcImplementation, create_grpc_server
from moorage.server.inference_logger import CE_REQUEST, CE_RESPONSE, InferenceLogger

from .conftest import make_repository


def dropped(reason: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "moorage_server_inference_logger_dropped_total", {"reason": reason}
        )
        or 0.0
    )


async def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def retries() -> float:
    return REGISTRY.get_sample_value("moorage_server_inference_logger_retries_total") or 0.0


# ----------------------------------------------------------------------------- the sink
@dataclass
class Sink:
    """An ASGI app recording every POST; ``statuses`` answers the first posts, then 200."""

    events: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    gate: asyncio.Event | None = None
    url: str = ""
    received: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self.gate is not None:
            await self.gate.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            self.events.append((headers, body))
            self.received.set()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def of_type(self, ce_type: str) -> list[tuple[dict[str, str], bytes]]:
        return [e for e in self.events if e[0]["ce-type"] == ce_type]


async def serve_sink(sink: Sink, **ssl: Any) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(sink, lifespan="off", log_level="warning", **ssl)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    sink.url = f"{'https' if ssl else 'http'}://127.0.0.1:{port}/"
    return server, task


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    sink = Sink()
    server, task = await serve_sink(sink)
    yield sink
    server.should_exit = True
    await task


def app_client(inference_logger: InferenceLogger) -> httpx.AsyncClient:
    server = ModelServer(ServerSettings(_cli_parse_args=False), registered_models=make_repository())
    server.dataplane.hooks.append(inference_logger)
    transport = httpx.ASGITransport(app=server.create_application(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


V2_BODY = {
    "id": "infer-1",
    "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.5, 2.5]}],
}


# ----------------------------------------------------------------------------- events
async def test_request_and_response_events(sink: Sink) -> None:
    inference_logger = InferenceLogger(
        sink.url,
        source_uri="http://pod-1/",
        inference_service="isvc",
        namespace="ns",
        endpoint="default",
        component="predictor",
        metadata_headers=["X-Tenant", "X-Missing"],
    )
    async with app_client(inference_logger) as client:
        r = await client.post(
            "/v2/models/echo/infer",
            json=V2_BODY,
            headers={"x-request-id": "rid-1", "x-tenant": "acme"},
        )
        assert r.status_code == 200
        assert await inference_logger.flush(5)
    await inference_logger.aclose()

    ((request_headers, request_body),) = sink.of_type(CE_REQUEST)
    ((response_headers, response_body),) = sink.of_type(CE_RESPONSE)
    for headers in (request_headers, response_headers):
        assert headers["ce-specversion"] == "1.0"
        assert headers["ce-id"] == "rid-1"
        assert headers["ce-source"] == "http://pod-1/"
        assert headers["ce-inferenceservicename"] == "isvc"
        assert headers["ce-namespace"] == "ns"
        assert headers["ce-component"] == "predictor"
        assert headers["ce-endpoint"] == "default"
        assert headers["ce-modelname"] == "echo"
        assert headers["ce-metadata"] == "{%22X-Tenant%22:[%22acme%22]}"
        assert orjson.loads(unquote(headers["ce-metadata"])) == {"X-Tenant": ["acme"]}
        assert headers["content-type"] == "application/json"
        assert datetime.datetime.fromisoformat(headers["ce-time"].replace("Z", "+00:00"))
    logged = orjson.loads(request_body)
    assert logged["id"] == "infer-1"
    assert logged["inputs"][0] == V2_BODY["inputs"][0]
    answered = orjson.loads(response_body)
    assert answered["model_name"] == "echo" and answered["outputs"][0]["data"] == [1.5, 2.5]


async def test_v1_binary_and_error_bodies(sink: Sink) -> None:
    inference_logger = InferenceLogger(sink.url)
    async with app_client(inference_logger) as client:
        await client.post("/v1/models/echo:predict", json={"instances": [[1, 2]]})
        binary = InferRequest("echo", [InferTensor.from_numpy("b", np.arange(3), binary=True)])
        from moorage.core.protocol.rest import encode_request

        body, length = encode_request(binary)
        await client.post(
            "/v2/models/echo/infer",
            content=body,
            headers={"inference-header-content-length": str(length)},
        )
        r = await client.post("/v1/models/failing:predict", json={"instances": ["bad"]})
        assert r.status_code == 400
        assert await inference_logger.flush(5)
    await inference_logger.aclose()

    bodies = [orjson.loads(b) for _, b in sink.of_type(CE_REQUEST)]
    assert {"instances": [[1, 2]]} in bodies
    tensor = next(b for b in bodies if "inputs" in b)["inputs"][0]
    assert tensor["data"] == [0, 1, 2]  # logged as JSON, not the binary extension
    assert "binary_data_size" not in tensor.get("parameters", {})
    responses = [orjson.loads(b) for _, b in sink.of_type(CE_RESPONSE)]
    assert {"predictions": [[1, 2]]} in responses
    assert {"error": "the model refuses 'bad'", "code": "invalid_input"} in responses


@pytest.mark.parametrize("mode", ["request", "response"])
async def test_mode_selects_events(sink: Sink, mode: Any) -> None:
    inference_logger = InferenceLogger(sink.url, mode=mode)
    async with app_client(inference_logger) as client:
        for _ in range(2):
            await client.post("/v1/models/echo:predict", json={"instances": [1]})
        assert await inference_logger.flush(5)
    await inference_logger.aclose()
    kinds = {headers["ce-type"] for headers, _ in sink.events}
    assert kinds == {CE_REQUEST if mode == "request" else CE_RESPONSE}
    assert len(sink.events) == 2


@pytest.mark.parametrize("implementation", ["grpcio", "native"])
async def test_grpc_inferences_are_logged(sink: Sink, implementation: GrpcImplementation) -> None:
    inference_logger = InferenceLogger(sink.url)
    server = ModelServer(ServerSettings(_cli_parse_args=False), registered_models=make_repository())
    server.dataplane.hooks.append(inference_logger)
    grpc_server = create_grpc_server(
        server.dataplane,
        interceptors=server.observability.grpc_interceptors(),
        implementation=implementation,
    )
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    import grpc

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            request_cls, response_cls = METHODS["ModelInfer"]
            infer = channel.unary_unary(
                f"/{SERVICE_NAME}/ModelInfer",
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )
            tensor = InferTensor.from_numpy("x", np.ones((1, 2), np.float32))
            await infer(request_to_proto(InferRequest("echo", [tensor])))
        assert await inference_logger.flush(5)
    finally:
        await grpc_server.stop(0)
        await inference_logger.aclose()
    ids = {headers["ce-id"] for headers, _ in sink.events}
    assert len(sink.events) == 2 and len(ids) == 1 and ids != {""}  # generated, shared


async def test_settings_wire_the_logger(sink: Sink) -> None:
    settings = ServerSettings.from_cli(
        ["--log-url", sink.url, "--log-mode", "response", "--inference-service", "iris"]
    )
    server = ModelServer(settings, registered_models=make_repository())
    inference_logger = server.observability.inference_logger
    assert inference_logger is not None and inference_logger in server.dataplane.hooks
    transport = httpx.ASGITransport(app=server.create_application())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.post("/v1/models/echo:predict", json={"instances": [1]})
    await server.observability.aclose()  # what ModelServer does at shutdown: drains the queue
    ((headers, _),) = sink.events
    assert headers["ce-type"] == CE_RESPONSE and headers["ce-inferenceservicename"] == "iris"
    assert headers["ce-source"] == "http://localhost:8080/"


# ----------------------------------------------------------------------------- failures
class HeldTransport(httpx.AsyncHTTPTransport):
    """httpx's real transport, holding every request until ``release`` is set."""

    def __init__(self, release: asyncio.Event) -> None:
        super().__init__()
        self.release = release
        self.held = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.held += 1
        await self.release.wait()
        return await super().handle_async_request(request)


async def test_sink_down_never_fails_inference() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    release = asyncio.Event()
    transport = HeldTransport(release)
    inference_logger = InferenceLogger(
        f"http://127.0.0.1:{port}/", retries=2, backoff=0.01, transport=transport
    )
    before, retried = dropped("send_failed"), retries()
    async with app_client(inference_logger) as client:
        async with asyncio.timeout(60):  # a hang here is the failure, not a slow machine
            for _ in range(3):
                r = await client.post("/v1/models/echo:predict", json={"instances": [1]})
                assert r.status_code == 200
        # All three answered while every delivery was held: inference never waits for the sink.
        await wait_for(lambda: transport.held > 0)
        assert dropped("send_failed") == before and retries() == retried
        release.set()
        assert await inference_logger.flush(10)
    await inference_logger.aclose()
    assert dropped("send_failed") == before + 6
    assert retries() == retried + 12


async def test_retries_recover_and_client_errors_do_not_retry(sink: Sink) -> None:
    sink.statuses = [503, 429]
    inference_logger = InferenceLogger(sink.url, mode="request", workers=1, backoff=0.01)
    retried, failed = retries(), dropped("send_failed")
    async with app_client(inference_logger) as client:
        await client.post("/v1/models/echo:predict", json={"instances": [1]})
        assert await inference_logger.flush(5)
        assert len(sink.events) == 1 and retries() == retried + 2
        sink.statuses = [400]
        await client.post("/v1/models/echo:predict", json={"instances": [2]})
        assert await inference_logger.flush(5)
    await inference_logger.aclose()
    assert len(sink.events) == 1 and retries() == retried + 2
    assert dropped("send_failed") == failed + 1


async def test_queue_overflow_drops_and_counts(sink: Sink) -> None:
    sink.gate = asyncio.Event()  # the sink hangs until released
    inference_logger = InferenceLogger(sink.url, mode="request", queue_size=2, workers=1)
    before = dropped("queue_full")
    async with app_client(inference_logger) as client:
        async with asyncio.timeout(60):  # a hang here is the failure, not a slow machine
            for i in range(10):
                r = await client.post("/v1/models/echo:predict", json={"instances": [i]})
                assert r.status_code == 200
        # All ten answered while the sink had answered none: the hung sink holds no request.
        assert not sink.gate.is_set() and not sink.events
        # One event is with the worker, two wait in the queue, the other seven are dropped.
        await asyncio.sleep(0.05)
        assert dropped("queue_full") >= before + 7
        sink.gate.set()
        assert await inference_logger.flush(5)
    await inference_logger.aclose()
    assert 1 <= len(sink.events) <= 3


async def test_events_after_close_are_dropped(sink: Sink) -> None:
    inference_logger = InferenceLogger(sink.url)
    async with app_client(inference_logger) as client:
        await client.post("/v1/models/echo:predict", json={"instances": [1]})
        await inference_logger.aclose()
        before = dropped("shutdown")
        await client.post("/v1/models/echo:predict", json={"instances": [2]})
    assert len(sink.events) == 2 and dropped("shutdown") == before + 2


# ----------------------------------------------------------------------------- TLS
@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA and a certificate it signed for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "moorage test CA")])
    usage = x509.KeyUsage(
        digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
        key_encipherment=False, data_encipherment=False, key_agreement=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sink")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    path = tmp_path_factory.mktemp("pki")
    pem = serialization.Encoding.PEM
    (path / "ca.crt").write_bytes(ca_cert.public_bytes(pem))
    (path / "sink.crt").write_bytes(cert.public_bytes(pem))
    (path / "sink.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Pki(path / "ca.crt", path / "sink.crt", path / "sink.key")


@pytest.fixture
async def tls_sink(pki: Pki) -> AsyncIterator[Sink]:
    sink = Sink()
    server, task = await serve_sink(sink, ssl_certfile=str(pki.cert), ssl_keyfile=str(pki.key))
    yield sink
    server.should_exit = True
    await task


@pytest.mark.parametrize(
    ("ca", "skip_verify", "delivered"),
    [("test-ca", False, True), ("missing", False, False), ("missing", True, True)],
)
async def test_tls_sink(
    tls_sink: Sink, pki: Pki, ca: str, skip_verify: bool, delivered: bool, tmp_path: Path
) -> None:
    ca_file = str(pki.ca) if ca == "test-ca" else str(tmp_path / "no-such-ca.crt")
    inference_logger = InferenceLogger(
        tls_sink.url,
        mode="request",
        ca_cert_file=ca_file,
        tls_skip_verify=skip_verify,
        retries=0,
    )
    before = dropped("send_failed")
    async with app_client(inference_logger) as client:
        r = await client.post("/v1/models/echo:predict", json={"instances": [1]})
        assert r.status_code == 200
        assert await inference_logger.flush(10)
    await inference_logger.aclose()
    assert len(tls_sink.events) == (1 if delivered else 0)
    assert dropped("send_failed") == before + (0 if delivered else 1)


def test_relative_ca_file_is_looked_up_in_kserve_mount(caplog: pytest.LogCaptureFixture) -> None:
    from moorage.server.inference_logger import sink_ssl_context

    assert sink_ssl_context("http://sink/", ca_cert_file="x.crt", skip_verify=False) is True
    sink_ssl_context("https://sink/", ca_cert_file="service-ca.crt", skip_verify=False)
    assert "/etc/tls/logger/service-ca.crt" in caplog.text


def test_ce_values_are_percent_encoded_where_the_binding_asks() -> None:
    from moorage.server.inference_logger import ce_header_value

    assert ce_header_value("pod-1/a:b?c=d") == "pod-1/a:b?c=d"
    assert ce_header_value('a "b" 100%') == "a%20%22b%22%20100%25"
    assert ce_header_value("modèle") == "mod%C3%A8le"
    assert unquote(ce_header_value('{"é": ["x y"]}')) == '{"é": ["x y"]}'


class Mutator(Model):
    """Changes its request in place, as preprocessing code may."""

    def __init__(self) -> None:
        super().__init__("mutator")
        self.ready = True

    def preprocess(self, payload: Any, headers: Any = None) -> Any:
        if isinstance(payload, InferRequest):
            payload.inputs[0].data *= 10
        else:
            payload["instances"] = ["changed"]
        return payload

    def predict(self, payload: Any, headers: Any = None) -> Any:
        if isinstance(payload, InferRequest):
            return InferResponse(self.name, payload.inputs)
        return {"predictions": payload["instances"]}


async def test_logged_request_is_the_one_received(sink: Sink) -> None:
    inference_logger = InferenceLogger(sink.url, mode="request")
    server = ModelServer(ServerSettings(_cli_parse_args=False), registered_models=make_repository())
    server.register_model(Mutator())
    server.dataplane.hooks.append(inference_logger)
    transport = httpx.ASGITransport(app=server.create_application())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.post("/v1/models/mutator:predict", json={"instances": [1]})
        await client.post("/v2/models/mutator/infer", json=V2_BODY)
        assert await inference_logger.flush(5)
    await inference_logger.aclose()
    bodies = [orjson.loads(body) for _, body in sink.events]
    assert {"instances": [1]} in bodies
    assert [b["inputs"][0]["data"] for b in bodies if "inputs" in b] == [[1.5, 2.5]]
