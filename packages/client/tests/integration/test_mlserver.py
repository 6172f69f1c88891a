"""The clients against a real MLServer 1.7.1 process (an independent OIP v2 implementation).

MLServer speaks v2 JSON over REST (no binary tensor extension, no v1) and v2 over gRPC with raw
contents; its health endpoints answer with a bare status code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from moorage.client import (
    InferenceGRPCClient,
    InferenceRESTClient,
    InferRequest,
    ModelNotFound,
    MoorageError,
    RESTConfig,
    ServerError,
    SyncInferenceGRPCClient,
    SyncInferenceRESTClient,
    Timeout,
)
from moorage.core.protocol import InferTensor

# the first test may build MLServer's venv (scripts/peers.sh): allow it the time
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]]
IRIS_CLASSES = [0, 1, 2]


def v2() -> RESTConfig:
    return RESTConfig(protocol="v2")


def iris_request(dtype: Any = np.float64, *, raw_binary: bool = False) -> InferRequest:
    x = np.asarray(IRIS_ROWS, dtype=dtype)
    return InferRequest("iris", [InferTensor.from_numpy("x", x, binary=raw_binary)])


async def test_rest_health_and_metadata(mlserver: Any) -> None:
    async with InferenceRESTClient(v2()) as client:
        assert await client.is_server_live(mlserver.rest_url) is True
        assert await client.is_server_ready(mlserver.rest_url) is True
        assert await client.is_model_ready(mlserver.rest_url, "iris") is True
        meta = await client.get_server_metadata(mlserver.rest_url)
        assert (meta.name, meta.version) == ("mlserver", "1.7.1")
        model = await client.get_model_metadata(mlserver.rest_url, "iris")
        assert model.name == "iris"
        with pytest.raises(ModelNotFound, match="Model nope not found"):
            await client.is_model_ready(mlserver.rest_url, "nope")


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
async def test_rest_v2_json_infer(mlserver: Any, dtype: Any) -> None:
    async with InferenceRESTClient(v2()) as client:
        result = await client.infer(mlserver.rest_url, iris_request(dtype))
    assert result.model_name == "iris" and result.model_version == "v1"
    assert result.outputs[0].as_numpy().reshape(-1).tolist() == IRIS_CLASSES


async def test_rest_echo_dtypes_and_bytes(mlserver: Any) -> None:
    tensors = {
        "f16": np.array([[0.5, -2.0]], dtype=np.float16),
        "i8": np.array([[-3, 4]], dtype=np.int8),
        "u64": np.array([[1, 2**40]], dtype=np.uint64),
        "b": np.array([[True, False]]),
    }
    req = InferRequest(
        "echo",
        [InferTensor.from_numpy(k, v) for k, v in tensors.items()]
        + [InferTensor.from_numpy("s", [["héllo", "wörld"]])],
    )
    async with InferenceRESTClient(v2()) as client:
        result = await client.infer(mlserver.rest_url, req)
    for name, expected in tensors.items():
        out = result.output(name).as_numpy()
        assert out.dtype == expected.dtype, name
        np.testing.assert_array_equal(out, expected)
    assert [v.decode() if isinstance(v, bytes) else v for v in result.output("s").data.ravel()] == [
        "héllo",
        "wörld",
    ]


async def test_rest_binary_request_is_refused_with_a_typed_error(mlserver: Any) -> None:
    """MLServer has no binary tensor extension (it fails with a bare 500): still a core error."""
    async with InferenceRESTClient(v2()) as client:
        with pytest.raises(ServerError) as info:
            await client.infer(mlserver.rest_url, iris_request(raw_binary=True))
    assert info.value.details["status_code"] == 500
    assert "/v2/models/iris/infer" in info.value.message


async def test_model_failure_is_server_error(mlserver: Any, transport: str) -> None:
    """sklearn rejects 3 features; MLServer answers a bare 500, gRPC INTERNAL/UNKNOWN."""
    req = InferRequest("iris", [InferTensor.from_numpy("x", np.zeros((1, 3)))])
    async with InferenceRESTClient(v2()) as client:
        with pytest.raises(ServerError) as info:
            await client.infer(mlserver.rest_url, req)
    assert info.value.details["status_code"] == 500
    async with InferenceGRPCClient(mlserver.grpc_url, transport=transport) as grpc_client:
        with pytest.raises(MoorageError) as grpc_info:
            await grpc_client.infer(req)
    assert "features" in grpc_info.value.message  # sklearn's own words, relayed by MLServer


async def test_rest_timeout(mlserver: Any) -> None:
    req = InferRequest("echo", [InferTensor.from_numpy("x", [[1]])], parameters={"sleep_ms": 1000})
    async with InferenceRESTClient(v2()) as client:
        with pytest.raises(Timeout):
            await client.infer(mlserver.rest_url, req, timeout=0.2)


async def test_rest_repository_unload_and_load(mlserver: Any) -> None:
    async with InferenceRESTClient(v2()) as client:
        assert await client.unload_model(mlserver.rest_url, "echo") is True
        try:
            with pytest.raises(ModelNotFound):
                await client.is_model_ready(mlserver.rest_url, "echo")
        finally:
            assert await client.load_model(mlserver.rest_url, "echo") is True
        assert await client.is_model_ready(mlserver.rest_url, "echo") is True


async def test_grpc_health_and_metadata(mlserver: Any, transport: str) -> None:
    async with InferenceGRPCClient(mlserver.grpc_url, transport=transport) as client:
        assert await client.is_server_live() is True
        assert await client.is_server_ready() is True
        assert await client.is_model_ready("iris") is True
        assert (await client.get_server_metadata()).name == "mlserver"
        assert (await client.get_model_metadata("iris")).name == "iris"
        # MLServer's ModelReady lets its ModelNotFound escape as UNKNOWN: a ServerError that
        # still carries its message
        with pytest.raises(ServerError, match="Model nope with version  not found"):
            await client.is_model_ready("nope")


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
async def test_grpc_infer(mlserver: Any, raw: bool, dtype: Any, transport: str) -> None:
    async with InferenceGRPCClient(mlserver.grpc_url, raw=raw, transport=transport) as client:
        result = await client.infer(iris_request(dtype))
    assert result.outputs[0].as_numpy().reshape(-1).tolist() == IRIS_CLASSES


async def test_grpc_raw_fp16_and_bytes_echo(mlserver: Any, transport: str) -> None:
    h = np.array([[1.5, -0.25, 65504.0]], dtype=np.float16)
    req = InferRequest(
        "echo", [InferTensor.from_numpy("h", h), InferTensor.from_numpy("s", [[b"\x00a", b"z"]])]
    )
    async with InferenceGRPCClient(mlserver.grpc_url, transport=transport) as client:
        result = await client.infer(req)
    out = result.output("h").as_numpy()
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, h)
    assert result.output("s").as_numpy().ravel().tolist() == [b"\x00a", b"z"]


async def test_grpc_timeout_and_errors(mlserver: Any, transport: str) -> None:
    slow = InferRequest("echo", [InferTensor.from_numpy("x", [[1]])], parameters={"sleep_ms": 1000})
    async with InferenceGRPCClient(mlserver.grpc_url, timeout=0.2, transport=transport) as client:
        with pytest.raises(Timeout):
            await client.infer(slow)
        with pytest.raises(ModelNotFound):
            await client.infer(InferRequest("nope", [InferTensor.from_numpy("x", [[1]])]))


def test_sync_twins(mlserver: Any, transport: str) -> None:
    with SyncInferenceRESTClient(v2()) as rest:
        result = rest.infer(mlserver.rest_url, iris_request())
        assert result.outputs[0].as_numpy().reshape(-1).tolist() == IRIS_CLASSES
    with SyncInferenceGRPCClient(mlserver.grpc_url, transport=transport) as grpc_client:
        result = grpc_client.infer(iris_request(np.float32))
        assert result.outputs[0].as_numpy().reshape(-1).tolist() == IRIS_CLASSES
