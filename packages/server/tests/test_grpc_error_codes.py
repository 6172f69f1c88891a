"""Typed errors over gRPC: every failed call carries ``moorage-error-code``, on every gRPC
server, and the transformer's predictor client raises the error it names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest

from moorage.core.errors import (
    ERROR_CODE_METADATA,
    ModelNotFound,
    ModelNotReady,
    MoorageError,
    Overloaded,
    ServerNotReady,
)
from moorage.core.protocol import InferRequest, InferTensor
from moorage.core.protocol.grpc import SERVICE_NAME, pb, request_to_proto
from moorage.server import DataPlane, Model
from moorage.server.grpc import create_grpc_server
from moorage.server.predictor import PredictorClient

from .conftest import make_repository


class _Raising(Model):
    """Sync predict raising the error named by the model's name."""

    ERRORS: dict[str, type[MoorageError]] = {
        "overloaded": Overloaded, "not-ready": ServerNotReady, "model-not-ready": ModelNotReady,
    }  # fmt: skip

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    def predict(self, payload: Any, headers: Any = None) -> Any:
        raise self.ERRORS[self.name]("refused")


@pytest.fixture(params=["native", "aio", "threaded"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    repository = make_repository()
    for name in _Raising.ERRORS:
        repository.update(_Raising(name))
    server = create_grpc_server(
        DataPlane(repository, max_inflight=8),
        implementation="native" if request.param == "native" else "grpcio",
        threaded=request.param == "threaded",
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


def _request(name: str) -> Any:
    return request_to_proto(InferRequest(name, [InferTensor.from_numpy("x", np.ones((1, 2)))]))


@pytest.mark.parametrize(
    ("model", "code"),
    [("overloaded", "overloaded"), ("not-ready", "server_not_ready"),
     ("model-not-ready", "model_not_ready"), ("missing", "model_not_found")],
)  # fmt: skip
async def test_failed_calls_carry_the_error_code(target: str, model: str, code: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        infer = channel.unary_unary(
            f"/{SERVICE_NAME}/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await infer(_request(model), timeout=5)
    metadata = dict(info.value.trailing_metadata() or ())
    assert metadata[ERROR_CODE_METADATA] == code


@pytest.mark.parametrize(
    ("model", "error"),
    [("overloaded", Overloaded), ("not-ready", ServerNotReady),
     ("model-not-ready", ModelNotReady), ("missing", ModelNotFound)],
)  # fmt: skip
async def test_predictor_client_raises_the_named_error(
    target: str, model: str, error: type[MoorageError]
) -> None:
    """Overloaded and ServerNotReady are UNAVAILABLE like an unreachable predictor: the
    trailer tells them apart."""
    client = PredictorClient(target, protocol="grpc-v2", timeout=5)
    request = InferRequest(model, [InferTensor.from_numpy("x", np.ones((1, 2), np.float32))])
    with pytest.raises(error) as info:
        await client.infer(model, request, {})
    assert type(info.value) is error
    await client.aclose()
