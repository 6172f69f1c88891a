"""gRPC ``inference.GRPCInferenceService`` in-process, called with core's messages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import numpy as np
import pytest

from moorage.core.protocol import InferRequest, InferTensor, RequestedOutput
from moorage.core.protocol.grpc import (
    METHODS,
    SERVICE_NAME,
    pb,
    request_to_proto,
    response_from_proto,
)
from moorage.server import DataPlane
from moorage.server.grpc import create_grpc_server

Call = Callable[..., Any]


#: The three servers create_grpc_server makes: (implementation, threaded).
SERVERS = [("grpcio", False), ("grpcio", True), ("native", False)]
SERVER_IDS = ["aio", "threaded", "native"]


@pytest.fixture(params=SERVERS, ids=SERVER_IDS)
async def rpc(
    dataplane: DataPlane, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[[str], Call]]:
    implementation, threaded = request.param
    server = create_grpc_server(dataplane, threaded=threaded, implementation=implementation)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")

    def method(name: str) -> Call:
        request_cls, response_cls = METHODS[name]
        return channel.unary_unary(
            f"/{SERVICE_NAME}/{name}",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )

    yield method
    await channel.close()
    await server.stop(0)


def test_every_rpc_is_served() -> None:
    assert set(METHODS) == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
        "ModelInfer", "RepositoryModelLoad", "RepositoryModelUnload",
    }  # fmt: skip


async def test_health_and_metadata(rpc: Callable[[str], Call]) -> None:
    assert (await rpc("ServerLive")(pb.ServerLiveRequest())).live
    assert not (await rpc("ServerReady")(pb.ServerReadyRequest())).ready  # "lazy" not loaded
    assert (await rpc("ModelReady")(pb.ModelReadyRequest(name="echo"))).ready
    meta = await rpc("ServerMetadata")(pb.ServerMetadataRequest())
    assert meta.name == "moorage" and list(meta.extensions) == ["model_repository_extension"]
    model = await rpc("ModelMetadata")(pb.ModelMetadataRequest(name="echo"))
    assert model.name == "echo"
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("x", "FP32", [-1, 4])]


async def test_repository_load_unload(rpc: Callable[[str], Call]) -> None:
    loaded = await rpc("RepositoryModelLoad")(pb.RepositoryModelLoadRequest(model_name="lazy"))
    assert loaded.isLoaded and loaded.model_name == "lazy"
    assert (await rpc("ServerReady")(pb.ServerReadyRequest())).ready
    unload = rpc("RepositoryModelUnload")
    out = await unload(pb.RepositoryModelUnloadRequest(model_name="lazy"))
    assert out.isUnloaded
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await unload(pb.RepositoryModelUnloadRequest(model_name="lazy"))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("raw", [True, False])
async def test_infer(rpc: Callable[[str], Call], raw: bool) -> None:
    data = np.arange(8, dtype=np.float32).reshape(2, 4)
    request = InferRequest("echo", [InferTensor.from_numpy("x", data)], id="g1")
    message = request_to_proto(request, raw=raw)
    reply = await rpc("ModelInfer")(message, metadata=(("x-echo", "m"),))
    assert len(reply.raw_output_contents) == (1 if raw else 0)
    response = response_from_proto(reply)
    assert response.id == "g1" and response.model_name == "echo"
    np.testing.assert_array_equal(response.output("x").data, data)


async def test_infer_selected_outputs_and_headers(
    rpc: Callable[[str], Call], dataplane: DataPlane
) -> None:
    request = InferRequest(
        "echo",
        [InferTensor.from_numpy("a", np.ones(2)), InferTensor.from_numpy("b", np.zeros(2))],
        outputs=[RequestedOutput("b")],
    )
    call = rpc("ModelInfer")(
        request_to_proto(request), metadata=(("x-echo", "hi"), ("x-request-id", "abc"))
    )
    reply = await call
    assert [o.name for o in reply.outputs] == ["b"]
    model: Any = dataplane.repository.get_model("echo")
    assert model.seen_headers["x-request-id"] == "abc"
    assert ("x-echoed", "hi") in tuple(await call.initial_metadata())


async def test_sync_model(rpc: Callable[[str], Call]) -> None:
    request = InferRequest("sum", [InferTensor.from_numpy("x", np.ones((3, 2)))])
    reply = await rpc("ModelInfer")(request_to_proto(request))
    np.testing.assert_array_equal(response_from_proto(reply).output("sum").data, [2, 2, 2])


def _bad_messages() -> list[tuple[Any, grpc.StatusCode, str]]:
    ok = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[2])
    ok.contents.fp32_contents.extend([1, 2])
    wrong_count = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[3])
    wrong_count.contents.fp32_contents.extend([1, 2])
    bad_type = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP99", shape=[1])
    raw_mismatch = pb.ModelInferRequest(model_name="echo")
    raw_mismatch.inputs.add(name="x", datatype="FP32", shape=[2])
    raw_mismatch.raw_input_contents.append(b"\x00" * 5)
    raw_count = pb.ModelInferRequest(model_name="echo")
    raw_count.inputs.add(name="x", datatype="FP32", shape=[1])
    raw_count.inputs.add(name="y", datatype="FP32", shape=[1])
    raw_count.raw_input_contents.append(b"\x00" * 4)
    return [
        (pb.ModelInferRequest(model_name="nope", inputs=[ok]), grpc.StatusCode.NOT_FOUND, "nope"),
        (pb.ModelInferRequest(model_name="", inputs=[ok]), grpc.StatusCode.INVALID_ARGUMENT,
         "model"),
        (pb.ModelInferRequest(model_name="echo", inputs=[wrong_count]),
         grpc.StatusCode.INVALID_ARGUMENT, "needs 3 elements"),
        (pb.ModelInferRequest(model_name="echo", inputs=[bad_type]),
         grpc.StatusCode.INVALID_ARGUMENT, "FP99"),
        (raw_mismatch, grpc.StatusCode.INVALID_ARGUMENT, "bytes"),
        (raw_count, grpc.StatusCode.INVALID_ARGUMENT, "raw contents"),
        (pb.ModelInferRequest(model_name="failing", inputs=[ok]), grpc.StatusCode.INTERNAL,
         "failing"),
        (pb.ModelInferRequest(model_name="lazy", inputs=[ok]), grpc.StatusCode.UNAVAILABLE,
         "not ready"),
        (pb.ModelInferRequest(model_name="echo", model_version="9", inputs=[ok]),
         grpc.StatusCode.NOT_FOUND, "version"),
    ]  # fmt: skip


@pytest.mark.parametrize(("message", "code", "needle"), _bad_messages())
async def test_bad_infer(
    rpc: Callable[[str], Call], message: Any, code: grpc.StatusCode, needle: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rpc("ModelInfer")(message)
    assert info.value.code() is code
    assert needle in (info.value.details() or "")
    assert (await rpc("ServerLive")(pb.ServerLiveRequest())).live


async def test_overloaded_is_unavailable(rpc: Callable[[str], Call], dataplane: DataPlane) -> None:
    import asyncio

    dataplane.repository.bound("echo").inflight = dataplane.max_inflight
    message = request_to_proto(InferRequest("echo", [InferTensor.from_numpy("x", np.ones(1))]))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rpc("ModelInfer")(message)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    dataplane.repository.bound("echo").inflight = 0
    await asyncio.sleep(0)
    assert (await rpc("ModelInfer")(message)).model_name == "echo"
