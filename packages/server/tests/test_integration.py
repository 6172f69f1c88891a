"""Real ``moorage-server`` processes on loopback, driven by httpx, grpcio and tritonclient."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from moorage.core.protocol import InferRequest, InferTensor
from moorage.core.protocol.grpc import METHODS, SERVICE_NAME, request_to_proto, response_from_proto

from .conftest import IRIS_ROWS

pytestmark = pytest.mark.integration

MAX_BODY = 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    http: int
    grpc: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def output_when(self, ready: Callable[[str], bool], timeout: float = 5.0) -> str:
        """The output once ``ready(output)`` (access lines of a busy server are written up to
        50 ms after their request), or as it is after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.output()
            if ready(text) or time.monotonic() > deadline:
                return text
            time.sleep(0.02)


def start(
    args: list[str],
    log: Path,
    *,
    script: Path | None = None,
    timeout: float = 60,
    until: str = "/v2/health/live",
) -> Server:
    """A real `moorage-server` (or `script`) on free loopback ports, once `until` answers 200."""
    http, grpc_port = free_port(), free_port()
    command = [sys.executable, str(script)] if script else [sys.executable, "-m", "moorage.server"]
    command += [
        *args,
        "--host",
        "127.0.0.1",
        "--http_port",
        str(http),
        "--grpc_port",
        str(grpc_port),
    ]
    handle = log.open("wb")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    server = Server(process, http, grpc_port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited {process.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}{until}", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not start:\n{server.output()}")


def stop(server: Server, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    if server.process.poll() is None:
        server.process.send_signal(sig)
    try:
        return server.process.wait(timeout)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise


@pytest.fixture(scope="session")
def iris_server(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / "iris.log"
    server = start(
        ["--model_name", "sklearn-iris", "--model_dir", str(iris_dir),
         "--max_request_body_bytes", str(MAX_BODY), "--extra_runtime_flag", "1"],
        log,
    )  # fmt: skip
    yield server
    assert stop(server) == 0, server.output()


@pytest.fixture(scope="session")
def iris_grpcio(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / "iris-grpcio.log"
    server = start(
        ["--model_name", "sklearn-iris", "--model_dir", str(iris_dir), "--grpc_server", "grpcio"],
        log,
    )
    yield server
    assert stop(server) == 0, server.output()


@pytest.fixture(params=["native", "grpcio"])
def grpc_iris(request: pytest.FixtureRequest) -> Server:
    """The iris server with each gRPC implementation."""
    fixture = "iris_server" if request.param == "native" else "iris_grpcio"
    server: Server = request.getfixturevalue(fixture)
    return server


V2 = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                  "data": [v for row in IRIS_ROWS for v in row]}]}  # fmt: skip


def test_httpx_v1_v2(iris_server: Server) -> None:
    with httpx.Client(base_url=iris_server.url) as client:
        assert client.get("/v2/health/ready").json() == {"ready": True}
        listing = client.get("/v1/models").json()
        assert listing["models"] == ["sklearn-iris"]  # KServe's shape
        assert [m["id"] for m in listing["data"]] == ["sklearn-iris"]  # OpenAI's, beside it
        v1 = client.post("/v1/models/sklearn-iris:predict", json={"instances": IRIS_ROWS})
        assert v1.json() == {"predictions": [1, 1]}
        v2 = client.post("/v2/models/sklearn-iris/infer", json=V2).json()
        assert v2["outputs"][0]["data"] == [1, 1]


@pytest.mark.parametrize(
    ("path", "content", "status"),
    [
        ("/v2/models/sklearn-iris/infer", b"{", 400),
        ("/v2/models/other/infer", b'{"inputs": []}', 404),
        ("/v1/models/sklearn-iris:predict", b'{"instances": [[1, 2]]}', 400),
        ("/v1/models/sklearn-iris:predict", b" " * (MAX_BODY + 1), 413),
    ],
)
def test_errors_over_the_wire(iris_server: Server, path: str, content: bytes, status: int) -> None:
    with httpx.Client(base_url=iris_server.url) as client:
        response = client.post(path, content=content)
        assert response.status_code == status, response.text
        assert response.json()["error"]
        assert client.get("/v2/health/live").status_code == 200


def test_grpc_with_core_messages(grpc_iris: Server) -> None:
    iris_server = grpc_iris
    request_cls, response_cls = METHODS["ModelInfer"]
    data = np.asarray(IRIS_ROWS, dtype=np.float32)
    message = request_to_proto(InferRequest("sklearn-iris", [InferTensor.from_numpy("x", data)]))
    with grpc.insecure_channel(f"127.0.0.1:{iris_server.grpc}") as channel:
        infer = channel.unary_unary(
            f"/{SERVICE_NAME}/ModelInfer",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        reply = response_from_proto(infer(message, timeout=10))
        assert reply.output("output-0").data.tolist() == [1, 1]
        message.model_name = "missing"
        with pytest.raises(grpc.RpcError) as info:
            infer(message, timeout=10)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_tritonclient_http(iris_server: Server) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(f"127.0.0.1:{iris_server.http}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("sklearn-iris")
    assert client.get_model_metadata("sklearn-iris")["name"] == "sklearn-iris"
    data = np.asarray(IRIS_ROWS, dtype=np.float32)
    for binary_in in (False, True):
        for binary_out in (False, True):
            tensor = triton.InferInput("x", [2, 4], "FP32")
            tensor.set_data_from_numpy(data, binary_data=binary_in)
            output = triton.InferRequestedOutput("output-0", binary_data=binary_out)
            result = client.infer("sklearn-iris", [tensor], outputs=[output], request_id="t1")
            assert result.as_numpy("output-0").tolist() == [1, 1]
            assert result.get_response()["id"] == "t1"
    with pytest.raises(Exception, match="missing"):
        client.infer("missing", [tensor])
    client.close()


def test_tritonclient_grpc(grpc_iris: Server) -> None:
    iris_server = grpc_iris
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(f"127.0.0.1:{iris_server.grpc}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("sklearn-iris")
    assert client.get_server_metadata().name == "moorage"
    tensor = triton.InferInput("x", [2, 4], "FP32")
    tensor.set_data_from_numpy(np.asarray(IRIS_ROWS, dtype=np.float32))
    result = client.infer(
        "sklearn-iris", [tensor], outputs=[triton.InferRequestedOutput("output-0")]
    )
    assert result.as_numpy("output-0").tolist() == [1, 1]
    bad = triton.InferInput("x", [2, 3], "FP32")
    bad.set_data_from_numpy(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(Exception, match="features"):
        client.infer("sklearn-iris", [bad])
    client.close()


PORTED_MODEL = textwrap.dedent(
    '''
    """A KServe custom model, ported by changing the import line only."""
    import asyncio

    from moorage.server import Model, ModelServer


    class SlowModel(Model):
        def __init__(self, name):
            super().__init__(name)
            self.load()

        async def predict(self, payload, headers=None, response_headers=None):
            await asyncio.sleep(float(payload["instances"][0]))
            response_headers["x-slept"] = str(payload["instances"][0])
            return {"predictions": payload["instances"]}


    if __name__ == "__main__":
        ModelServer().start([SlowModel("slow")])
    '''
)


@pytest.mark.slow
def test_sigterm_finishes_in_flight_requests(tmp_path: Path) -> None:
    script = tmp_path / "model.py"
    script.write_text(PORTED_MODEL)
    server = start([], tmp_path / "slow.log", script=script)

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            pending = asyncio.create_task(
                client.post("/v1/models/slow:predict", json={"instances": [1.5]})
            )
            await asyncio.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            return await pending

    response = asyncio.run(scenario())
    assert response.status_code == 200 and response.json() == {"predictions": [1.5]}
    assert response.headers["x-slept"] == "1.5"
    assert server.process.wait(20) == 0, server.output()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v2/health/live", timeout=2)


@pytest.mark.slow
def test_workers_share_the_port(iris_dir: Path, tmp_path: Path) -> None:
    server = start(
        ["--model_name", "iris", "--model_dir", str(iris_dir), "--workers", "2",
         "--enable_access_log", "true"],
        tmp_path / "workers.log",
    )  # fmt: skip
    try:
        for _ in range(40):
            if server.output().count("moorage-server ready") >= 2:
                break
            time.sleep(0.25)
        with httpx.Client(base_url=server.url) as client:
            for _ in range(10):
                response = client.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
                assert response.json() == {"predictions": [1, 1]}
        import tritonclient.grpc as triton

        for _ in range(24):  # fresh connections: SO_REUSEPORT spreads them over the workers
            grpc_client = triton.InferenceServerClient(f"127.0.0.1:{server.grpc}")
            assert grpc_client.is_model_ready("iris")
            grpc_client.close()

        def served(text: str) -> set[str]:
            return {line.split()[1] for line in text.splitlines() if "gRPC ModelReady OK" in line}

        output = server.output_when(lambda text: len(served(text)) >= 2)
        pids = {line.split()[1] for line in output.splitlines() if "ready:" in line}
        assert len(pids) == 2, output
        assert served(output) == pids, output
    finally:
        assert stop(server) == 0, server.output()
    assert os.waitstatus_to_exitcode(0) == 0


GRPC_SLOW_MODEL = PORTED_MODEL.replace(
    '        await asyncio.sleep(float(payload["instances"][0]))',
    """        if isinstance(payload, dict):
            await asyncio.sleep(float(payload["instances"][0]))
            return {"predictions": payload["instances"]}
        await asyncio.sleep(float(payload.inputs[0].data[0]))
        return InferResponse(self.name, list(payload.inputs))""",
).replace(
    "from moorage.server import",
    "from moorage.core.protocol import InferResponse\nfrom moorage.server import",
)


@pytest.mark.slow
@pytest.mark.parametrize("implementation", ["native", "grpcio"])
def test_sigterm_finishes_in_flight_grpc_calls(tmp_path: Path, implementation: str) -> None:
    script = tmp_path / "model.py"
    script.write_text(GRPC_SLOW_MODEL)
    server = start(["--grpc_server", implementation], tmp_path / "slow.log", script=script)
    request_cls, response_cls = METHODS["ModelInfer"]
    message = request_to_proto(InferRequest("slow", [InferTensor.from_numpy("x", np.ones(1))]))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc}") as channel:
        infer = channel.unary_unary(
            f"/{SERVICE_NAME}/ModelInfer",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        pending = infer.future(message, timeout=20)
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        reply = response_from_proto(pending.result())
        assert reply.output("x").data.tolist() == [1.0]
    assert server.process.wait(20) == 0, server.output()
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc}") as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(f"/{SERVICE_NAME}/ServerLive")(b"", timeout=2)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_a_taken_port_is_one_error_line(iris_server: Server, iris_dir: Path) -> None:
    """A REST port another process holds: exit 1 and one line naming the address, no
    traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "moorage.server", "--model_name", "iris",
         "--model_dir", str(iris_dir), "--host", "127.0.0.1", "--http_port", str(iris_server.http),
         "--grpc_port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{iris_server.http}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr
