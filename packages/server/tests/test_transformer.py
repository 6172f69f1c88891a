"""Transformer mode: ``predict`` forwarded to a predictor over v1, v2 REST and gRPC.

In-process tests use the predictor's ASGI app (httpx transport) and a grpc.aio server on
loopback; the integration test runs a transformer process in front of an sklearn predictor
process.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from moorage.core.config.server import ServerSettings
from moorage.core.errors import ConnectionFailed, InvalidInput, ModelNotFound
from moorage.core.protocol import InferRequest, InferResponse, InferTensor
from moorage.server import DataPlane, Model, ModelServer, PredictorConfig
from moorage.server.grpc import create_grpc_server
from moorage.server.predictor import PredictorClient, close_predictor_clients
from moorage.server.rest import create_app
from moorage.server.transformer import apply_predictor_settings, predictor_config

from .conftest import IRIS_ROWS, make_repository


@pytest.fixture
def predictor_app(dataplane: DataPlane) -> Any:
    return create_app(dataplane)


@pytest.fixture(params=["grpcio", "native"])
async def grpc_predictor(
    dataplane: DataPlane, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    server = create_grpc_server(dataplane, implementation=request.param)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


def request_of(rows: list[list[float]], name: str = "echo") -> InferRequest:
    return InferRequest(name, [InferTensor.from_numpy("x", np.asarray(rows, np.float32))], id="t1")


# ----------------------------------------------------------------------------- client
async def test_v1_forwarding(predictor_app: Any) -> None:
    client = PredictorClient(
        "predictor", protocol="v1", transport=httpx.ASGITransport(app=predictor_app)
    )
    result = await client.infer("echo", {"instances": [[1, 2]]}, {"x-request-id": "r1"})
    assert result == {"predictions": [[1, 2]]}
    await client.aclose()


@pytest.mark.parametrize("binary", [False, True])
async def test_v2_forwarding(predictor_app: Any, binary: bool) -> None:
    client = PredictorClient(
        "predictor", protocol="v2", transport=httpx.ASGITransport(app=predictor_app)
    )
    rows = np.asarray([[1, 2], [3, 4]], np.float32)
    request = InferRequest("echo", [InferTensor.from_numpy("x", rows, binary=binary)], id="t2")
    result = await client.infer("echo", request, {})
    assert isinstance(result, InferResponse) and result.id == "t2"
    np.testing.assert_array_equal(result.outputs[0].as_numpy(), rows)
    v2_dict = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    as_dict = await client.infer("sum", v2_dict, {})
    assert as_dict.outputs[0].as_numpy().tolist() == [3.0]
    await client.aclose()


async def test_grpc_forwarding(grpc_predictor: str) -> None:
    client = PredictorClient(grpc_predictor, protocol="grpc-v2", timeout=10)
    result = await client.infer("sum", request_of([[1, 2], [3, 4]], "transformer"), {})
    assert result.outputs[0].as_numpy().tolist() == [3.0, 7.0]
    await client.aclose()


async def test_predictor_errors_come_back_typed(predictor_app: Any, grpc_predictor: str) -> None:
    rest = PredictorClient(
        "predictor", protocol="v2", transport=httpx.ASGITransport(app=predictor_app)
    )
    with pytest.raises(ModelNotFound, match="predictor predictor answered 404"):
        await rest.infer("nope", request_of([[1]]), {})
    v1 = PredictorClient(
        "predictor", protocol="v1", transport=httpx.ASGITransport(app=predictor_app)
    )
    with pytest.raises(InvalidInput, match="refuses 'bad'"):
        await v1.infer("failing", {"instances": ["bad"]}, {})
    grpc_client = PredictorClient(grpc_predictor, protocol="grpc-v2", timeout=10)
    with pytest.raises(ModelNotFound, match="NOT_FOUND"):
        await grpc_client.infer("nope", request_of([[1]]), {})
    for client in (rest, v1, grpc_client):
        await client.aclose()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc-v2"])
async def test_unreachable_predictor(protocol: str) -> None:
    no_retries = httpx.AsyncHTTPTransport(retries=0)  # the default retries connecting 3 times
    client = PredictorClient(
        f"127.0.0.1:{_closed_port()}", protocol=protocol, timeout=5, transport=no_retries
    )
    payload: Any = {"instances": [1]} if protocol == "v1" else request_of([[1]])
    with pytest.raises(ConnectionFailed, match="cannot reach predictor"):
        await client.infer("m", payload, {})
    await client.aclose()


# ----------------------------------------------------------------------------- Model
class Doubler(Model):
    """A transformer: doubles the inputs, leaves predict to the predictor."""

    def preprocess(self, payload: Any, headers: Any = None) -> Any:
        if isinstance(payload, InferRequest):
            x = payload.inputs[0].as_numpy() * 2
            return InferRequest(self.name, [InferTensor.from_numpy("x", x)], id=payload.id)
        return {"instances": (np.asarray(payload["instances"]) * 2).tolist()}


async def test_model_without_predictor_host_is_not_implemented() -> None:
    repository = make_repository()
    repository.update(_ready(Doubler("plain")))
    app = create_app(DataPlane(repository))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/models/plain:predict", json={"instances": [1]})
    assert r.status_code == 501 and r.json()["error"] == "Could not find predictor_host."


def _ready(model: Model) -> Model:
    model.ready = True
    return model


async def test_server_flags_make_models_forward(grpc_predictor: str) -> None:
    settings = ServerSettings.from_cli(
        ["--predictor_host", grpc_predictor, "--predictor_protocol", "grpc-v2"]
    )
    assert predictor_config(settings) == PredictorConfig(grpc_predictor, "grpc-v2", False, 600)
    server = ModelServer(settings, registered_models=make_repository())
    own = Doubler("echo", PredictorConfig("elsewhere:1", "v1"))
    apply_predictor_settings(own, settings)
    assert own.predictor_host == "elsewhere:1"  # a model's own predictor wins
    server.register_model(_ready(Doubler("sum")))
    app = server.create_application()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
        r = await c.post("/v2/models/sum/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [6.0]  # (1 + 2) * 2, summed by the predictor
    await server.observability.aclose()


# ----------------------------------------------------------------------------- processes
TRANSFORMER = textwrap.dedent(
    """
    import numpy as np

    from moorage.core.config.server import ServerSettings
    from moorage.core.protocol import InferRequest, InferResponse, InferTensor
    from moorage.server import Model, ModelServer, PredictorConfig

    SPECIES = np.array(["setosa", "versicolor", "virginica"], dtype=object)


    class MillimetreIris(Model):
        '''Takes iris measurements in mm; the predictor was trained on cm.'''

        def preprocess(self, payload, headers=None):
            if isinstance(payload, InferRequest):
                cm = payload.inputs[0].as_numpy() / 10
                return InferRequest(self.name, [InferTensor.from_numpy("x", cm)], id=payload.id)
            return {"instances": (np.asarray(payload["instances"]) / 10).tolist()}

        def postprocess(self, result, headers=None, response_headers=None):
            response_headers["x-transformed-by"] = self.protocol
            if isinstance(result, InferResponse):
                classes = result.outputs[0].as_numpy().astype(int)
                result.outputs.append(InferTensor.from_numpy("species", SPECIES[classes]))
                return result
            return {"predictions": SPECIES[result["predictions"]].tolist()}


    if __name__ == "__main__":
        settings = ServerSettings.from_cli()
        grpc_host = settings.extra_args[settings.extra_args.index("--predictor_grpc_host") + 1]
        models = [
            MillimetreIris("iris-v1"),  # gets --predictor_host / --predictor_protocol v1
            MillimetreIris("iris-v2", PredictorConfig(settings.predictor_host, "v2")),
            MillimetreIris("iris-grpc", PredictorConfig(grpc_host, "grpc-v2")),
        ]
        for model in models:
            model.ready = True
        ModelServer(settings).start(models)
    """
)


@pytest.fixture(scope="module")
def servers(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    from .test_integration import Server, free_port, stop

    root = tmp_path_factory.mktemp("transformer")
    repository = root / "models"
    for name in ("iris-v1", "iris-v2", "iris-grpc"):
        shutil.copytree(iris_dir, repository / name)
    script = root / "transformer.py"
    script.write_text(TRANSFORMER)
    ports = {"predictor": (free_port(), free_port()), "transformer": (free_port(), free_port())}
    predictor_http, predictor_grpc = ports["predictor"]
    args = {
        "predictor": ["-m", "moorage.server", "--model_dir", str(repository),
                      "--enable_access_log", "true"],
        "transformer": [str(script), "--predictor_host", f"127.0.0.1:{predictor_http}",
                        "--predictor_protocol", "v1", "--enable_grpc", "false",
                        "--predictor_grpc_host", f"127.0.0.1:{predictor_grpc}"],
    }  # fmt: skip
    # Both start at once: the transformer needs the predictor only when it forwards.
    started = {}
    for role, (http, grpc_port) in ports.items():
        log = root / f"{role}.log"
        command = [sys.executable, *args[role], "--host", "127.0.0.1",
                   "--http_port", str(http), "--grpc_port", str(grpc_port)]  # fmt: skip
        process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        started[role] = Server(process, http, grpc_port, log)
    try:
        for server in started.values():
            _wait_live(server)
    except BaseException:
        for server in started.values():
            server.process.kill()
        raise
    predictor, transformer = started["predictor"], started["transformer"]
    yield predictor, transformer
    assert stop(transformer) == 0, transformer.output()
    assert stop(predictor) == 0, predictor.output()


def _wait_live(server: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited {server.process.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/v2/health/live", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not start:\n{server.output()}")


MM_ROWS = [[v * 10 for v in row] for row in IRIS_ROWS]


@pytest.mark.integration
@pytest.mark.slow
def test_transformer_in_front_of_sklearn_v1(servers: tuple[Any, Any]) -> None:
    predictor, transformer = servers
    r = httpx.post(
        f"{transformer.url}/v1/models/iris-v1:predict",
        json={"instances": MM_ROWS},
        headers={"x-request-id": "through-1"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": ["versicolor", "versicolor"]}
    assert r.headers["x-transformed-by"] == "v1"
    # the predictor's access log saw the same id
    assert "through-1" in predictor.output_when(lambda text: "through-1" in text)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("model", "protocol"), [("iris-v2", "v2"), ("iris-grpc", "grpc-v2")])
def test_transformer_in_front_of_sklearn_v2(
    servers: tuple[Any, Any], model: str, protocol: str
) -> None:
    _, transformer = servers
    body = {"id": "q1", "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                    "data": [v for row in MM_ROWS for v in row]}]}  # fmt: skip
    r = httpx.post(f"{transformer.url}/v2/models/{model}/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-transformed-by"] == protocol
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["output-0"]["data"] == [1, 1]
    assert outputs["species"]["data"] == ["versicolor", "versicolor"]
    assert r.json()["id"] == "q1"

    bad = dict(body, inputs=[dict(body["inputs"][0], shape=[1, 2], data=[1, 2])])
    r = httpx.post(f"{transformer.url}/v2/models/{model}/infer", json=bad)
    assert r.status_code == 400, r.text  # the predictor's refusal, passed on
    assert "predictor 127.0.0.1" in r.json()["error"]


# ----------------------------------------------------------------------------- explainer
@pytest.fixture
async def explainer_host(predictor_app: Any) -> AsyncIterator[str]:
    """The echo model's app on a real loopback port (its ``explain`` counts the instances)."""
    import asyncio

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(predictor_app, log_level="warning", lifespan="off", ws="none")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    await task
    sock.close()


async def test_explain_forwards_to_explainer_host(explainer_host: str) -> None:
    front = _ready(Model("echo"))
    front.explainer_host = explainer_host
    repository = make_repository()
    repository.update(front)
    app = create_app(DataPlane(repository))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        ok = await c.post("/v1/models/echo:explain", json={"instances": [[1], [2], [3]]})
        front.explainer_host = f"127.0.0.1:{_closed_port()}"
        down = await c.post("/v1/models/echo:explain", json={"instances": [[1]]})
        front.explainer_host = None
        missing = await c.post("/v1/models/echo:explain", json={"instances": [[1]]})
    assert ok.status_code == 200 and ok.json() == {"explanations": 3}
    assert down.status_code == 503 and "cannot reach explainer" in down.json()["error"]
    assert missing.status_code == 501
    assert missing.json()["error"] == "Could not find explainer_host."
    await close_predictor_clients()
