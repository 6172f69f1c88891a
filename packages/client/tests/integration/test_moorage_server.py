"""The clients against real moorage-server processes (packages/server): v1 and v2 JSON, the
binary tensor extension in and out, FP16, BYTES (an sklearn text pipeline), gRPC with raw and
typed contents, errors, and a server that goes away."""

from __future__ import annotations

import signal
from typing import Any

import numpy as np
import pytest

from moorage.client import (
    ConnectionFailed,
    InferenceGRPCClient,
    InferenceRESTClient,
    InferInput,
    InferRequest,
    InvalidInput,
    ModelNotFound,
    RequestedOutput,
    RESTConfig,
    SyncInferenceRESTClient,
)
from moorage.core.protocol import InferTensor
from moorage.core.protocol.rest import HEADER_LENGTH

pytestmark = pytest.mark.integration

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]]
IRIS_CLASSES = [0, 1, 2]
TEXTS = ["good great", "awful bad poor", "great fine good"]
TEXT_CLASSES = [1, 0, 1]


@pytest.fixture(scope="module")
def iris(moorage_servers: dict[str, Any]) -> Any:
    return moorage_servers["iris"]


@pytest.fixture(scope="module")
def text(moorage_servers: dict[str, Any]) -> Any:
    return moorage_servers["text"]


def iris_request(dtype: Any = np.float64, *, binary: bool = False, **kwargs: Any) -> InferRequest:
    x = np.asarray(IRIS_ROWS, dtype=dtype)
    return InferRequest("iris", [InferTensor.from_numpy("x", x, binary=binary)], **kwargs)


def classes(response: Any) -> list[int]:
    return [int(v) for v in response.outputs[0].as_numpy().reshape(-1)]


async def test_v1_predict_health(iris: Any) -> None:
    async with InferenceRESTClient(RESTConfig(protocol="v1")) as client:
        assert await client.is_server_live(iris.rest_url) is True
        assert await client.is_model_ready(iris.rest_url, "iris") is True
        result = await client.infer(iris.rest_url, {"instances": IRIS_ROWS}, model_name="iris")
        assert result == {"predictions": IRIS_CLASSES}
        with pytest.raises(ModelNotFound, match="nope"):
            await client.infer(iris.rest_url, {"instances": IRIS_ROWS}, model_name="nope")


async def test_v2_health_metadata(iris: Any) -> None:
    async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
        assert await client.is_server_live(iris.rest_url) is True
        assert await client.is_server_ready(iris.rest_url) is True
        assert await client.is_model_ready(iris.rest_url, "iris") is True
        assert (await client.get_server_metadata(iris.rest_url)).name == "moorage"
        assert (await client.get_model_metadata(iris.rest_url, "iris")).name == "iris"
        with pytest.raises(ModelNotFound) as info:
            await client.is_model_ready(iris.rest_url, "nope")
    assert info.value.details["server_code"] == "model_not_found"


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize(("binary_in", "binary_out"), [(False, False), (True, False), (True, True)])
async def test_v2_json_and_binary(iris: Any, dtype: Any, binary_in: bool, binary_out: bool) -> None:
    req = iris_request(dtype, binary=binary_in, parameters={"binary_data_output": binary_out})
    headers: dict[str, str] = {}
    async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
        result = await client.infer(iris.rest_url, req, response_headers=headers)
    assert classes(result) == IRIS_CLASSES
    assert (HEADER_LENGTH in headers) is binary_out
    if binary_out:
        assert not result.outputs[0].as_numpy().flags.owndata  # a view into the body


async def test_binary_output_requested_per_output(iris: Any) -> None:
    req = iris_request(request_outputs=[RequestedOutput("output-0", {"binary_data": True})])
    headers: dict[str, str] = {}
    async with InferenceRESTClient(RESTConfig(protocol="v2", http2=True)) as client:
        result = await client.infer(iris.rest_url, req, response_headers=headers)
    assert HEADER_LENGTH in headers and classes(result) == IRIS_CLASSES


async def test_kserve_style_request(iris: Any) -> None:
    inp = InferInput("input-0", [3, 4], "FP32")
    inp.set_data_from_numpy(np.asarray(IRIS_ROWS, dtype=np.float32), binary_data=True)
    req = InferRequest(model_name="iris", infer_inputs=[inp], request_id="abc")
    async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
        result = await client.infer(iris.rest_url, req, model_name="iris")
    assert result.id == "abc" and classes(result) == IRIS_CLASSES


@pytest.mark.parametrize("binary", [False, True])
async def test_bytes_in(text: Any, binary: bool) -> None:
    req = InferRequest("text", [InferTensor.from_numpy("t", TEXTS, binary=binary)])
    async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
        result = await client.infer(text.rest_url, req)
    assert classes(result) == TEXT_CLASSES


async def test_invalid_input_carries_the_servers_message(iris: Any, transport: str) -> None:
    req = InferRequest("iris", [InferTensor.from_numpy("x", np.zeros((1, 3)))])
    async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
        with pytest.raises(InvalidInput, match="features") as info:
            await client.infer(iris.rest_url, req)
    assert info.value.details["status_code"] == 400
    async with InferenceGRPCClient(iris.grpc_url, transport=transport) as grpc_client:
        with pytest.raises(InvalidInput, match="features") as grpc_info:
            await grpc_client.infer(req)
    assert grpc_info.value.details["grpc_status"] == "INVALID_ARGUMENT"


async def test_grpc_health_metadata(iris: Any, transport: str) -> None:
    async with InferenceGRPCClient(iris.grpc_url, transport=transport) as client:
        assert await client.is_server_live() is True
        assert await client.is_server_ready() is True
        assert await client.is_model_ready("iris") is True
        assert (await client.get_server_metadata()).name == "moorage"
        assert (await client.get_model_metadata("iris")).name == "iris"
        with pytest.raises(ModelNotFound):
            await client.is_model_ready("nope")


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
async def test_grpc_infer(iris: Any, raw: bool, dtype: Any, transport: str) -> None:
    async with InferenceGRPCClient(iris.grpc_url, raw=raw, transport=transport) as client:
        result = await client.infer(iris_request(dtype), headers={"x-request-id": "r"})
    assert classes(result) == IRIS_CLASSES


@pytest.mark.parametrize("raw", [True, False])
async def test_grpc_bytes_in(text: Any, raw: bool, transport: str) -> None:
    req = InferRequest("text", [InferTensor.from_numpy("t", TEXTS)])
    async with InferenceGRPCClient(text.grpc_url, raw=raw, transport=transport) as client:
        assert classes(await client.infer(req)) == TEXT_CLASSES


def test_sync_twin(iris: Any) -> None:
    with SyncInferenceRESTClient(RESTConfig(protocol="v2")) as client:
        assert classes(client.infer(iris.rest_url, iris_request(binary=True))) == IRIS_CLASSES


async def test_server_going_down(moorage_servers: dict[str, Any]) -> None:
    """One kill for both gRPC transports (the server cannot come back for a second run)."""
    peer = moorage_servers["doomed"]
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=1, timeout=5))
    clients = [
        InferenceGRPCClient(peer.grpc_url, timeout=5, retries=1, transport=transport)
        for transport in ("native", "grpcio")
    ]
    try:
        # warm connections first: the pooled keep-alive connection and the gRPC channels
        assert classes(await rest.infer(peer.rest_url, iris_request())) == IRIS_CLASSES
        for grpc_client in clients:
            assert classes(await grpc_client.infer(iris_request())) == IRIS_CLASSES
        peer.stop(signal.SIGKILL)
        with pytest.raises(ConnectionFailed):
            await rest.infer(peer.rest_url, iris_request())
        with pytest.raises(ConnectionFailed):
            await rest.is_server_live(peer.rest_url)
        for grpc_client in clients:
            with pytest.raises(ConnectionFailed):
                await grpc_client.infer(iris_request())
    finally:
        await rest.close()
        for grpc_client in clients:
            await grpc_client.close()
