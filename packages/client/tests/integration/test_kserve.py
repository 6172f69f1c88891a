"""The clients against KServe 0.14.1's own Python model server: the reference implementation of
the binary tensor extension and of v1, independent of moorage's codec."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from moorage.client import (
    InferenceGRPCClient,
    InferenceRESTClient,
    InferRequest,
    InvalidInput,
    ModelNotFound,
    RESTConfig,
    ServerError,
)
from moorage.core.protocol import InferTensor
from moorage.core.protocol.rest import HEADER_LENGTH

# the first test may build KServe's venv (scripts/peers.sh): allow it the time
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]]
IRIS_CLASSES = [0, 1, 2]


def iris_request(dtype: Any, *, binary: bool, binary_out: bool) -> InferRequest:
    x = np.asarray(IRIS_ROWS, dtype=dtype)
    return InferRequest(
        "iris",
        [InferTensor.from_numpy("input-0", x, binary=binary)],
        parameters={"binary_data_output": binary_out},
    )


async def test_v1(kserve_server: Any) -> None:
    async with InferenceRESTClient(RESTConfig(protocol="v1")) as client:
        assert await client.is_server_live(kserve_server.rest_url) is True
        assert await client.is_model_ready(kserve_server.rest_url, "iris") is True
        result = await client.infer(kserve_server.rest_url, {"instances": IRIS_ROWS}, "iris")
        assert result == {"predictions": IRIS_CLASSES}


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize(("binary", "binary_out"), [(False, False), (True, False), (True, True)])
async def test_v2_json_and_binary(
    kserve_server: Any, dtype: Any, binary: bool, binary_out: bool
) -> None:
    headers: dict[str, str] = {}
    if dtype is np.float16 and not binary:
        # KServe refuses FP16 in JSON; the client relays its words as InvalidInput
        async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
            with pytest.raises(InvalidInput, match="FP16 data via JSON is not supported"):
                await client.infer(
                    kserve_server.rest_url, iris_request(dtype, binary=False, binary_out=False)
                )
        return
    async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
        result = await client.infer(
            kserve_server.rest_url,
            iris_request(dtype, binary=binary, binary_out=binary_out),
            response_headers=headers,
        )
    assert result.outputs[0].as_numpy().reshape(-1).tolist() == IRIS_CLASSES
    assert (HEADER_LENGTH in headers) is binary_out


async def test_v2_health_and_errors(kserve_server: Any) -> None:
    async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
        assert await client.is_server_ready(kserve_server.rest_url) is True
        assert (await client.get_model_metadata(kserve_server.rest_url, "iris")).name == "iris"
        with pytest.raises(ModelNotFound, match="nope"):
            await client.is_model_ready(kserve_server.rest_url, "nope")


@pytest.mark.parametrize("raw", [True, False])
async def test_grpc(kserve_server: Any, raw: bool, transport: str) -> None:
    async with InferenceGRPCClient(kserve_server.grpc_url, raw=raw, transport=transport) as client:
        assert await client.is_server_ready() is True
        assert await client.is_model_ready("iris") is True
        result = await client.infer(iris_request(np.float32, binary=False, binary_out=False))
        assert result.outputs[0].as_numpy().reshape(-1).tolist() == IRIS_CLASSES
        # KServe 0.14 lets its ModelNotFound escape the servicer as UNKNOWN
        with pytest.raises(ServerError, match="Model with name nope does not exist"):
            await client.infer(InferRequest("nope", [InferTensor.from_numpy("x", [[1.0]])]))
