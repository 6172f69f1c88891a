"""gRPC call semantics, the same on the native server and on grpc.aio: big messages, many calls
at once, deadlines, limits, metadata, compression, graceful stop. Real servers, grpcio clients."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest

from moorage.core.config.server import ServerSettings
from moorage.core.protocol import InferRequest, InferResponse, InferTensor
from moorage.core.protocol.grpc import (
    METHODS,
    SERVICE_NAME,
    pb,
    request_to_bytes,
    request_to_proto,
    response_from_proto,
)
from moorage.server import DataPlane, Model, ModelServer
from moorage.server.access_log import GrpcAccessInterceptor
from moorage.server.grpc import GrpcImplementation, NativeGrpcServer, create_grpc_server

from .conftest import make_repository

LIMIT = 20 * 1024 * 1024
MIB16 = 16 * 1024 * 1024


class SleepModel(Model):
    """async predict: sleeps ``parameters["sleep"]`` seconds, then echoes the inputs."""

    def __init__(self, name: str = "sleep") -> None:
        super().__init__(name)
        self.ready = True
        self.finished = 0

    async def predict(self, payload: Any, headers: Any = None) -> Any:
        await asyncio.sleep(float(payload.parameters.get("sleep", 0)))
        self.finished += 1
        return InferResponse(self.name, list(payload.inputs), id=payload.id)


@dataclass
class Target:
    port: int
    server: Any
    dataplane: DataPlane
    channel: grpc.aio.Channel

    def method(self, name: str, channel: grpc.aio.Channel | None = None) -> Any:
        request_cls, response_cls = METHODS[name]
        return (channel or self.channel).unary_unary(
            f"/{SERVICE_NAME}/{name}",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )

    def raw(self, name: str) -> Any:
        """The method taking and returning bytes (no protobuf on the client side)."""
        return self.channel.unary_unary(f"/{SERVICE_NAME}/{name}")


def channel_to(port: int, **kwargs: Any) -> grpc.aio.Channel:
    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options, **kwargs)


@pytest.fixture(params=["native", "aio"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    repository = make_repository()
    repository.update(SleepModel())
    dataplane = DataPlane(repository, max_inflight=512)
    server = create_grpc_server(
        dataplane,
        implementation="native" if request.param == "native" else "grpcio",
        max_send_message_length=LIMIT,
        max_receive_message_length=LIMIT,
        interceptors=[GrpcAccessInterceptor()],
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = channel_to(port)
    yield Target(port, server, dataplane, channel)
    await channel.close()
    await server.stop(0)


def infer_request(name: str, data: np.ndarray[Any, Any], **parameters: Any) -> InferRequest:
    return InferRequest(name, [InferTensor.from_numpy("x", data)], parameters=parameters)


async def test_16_mib_tensor_both_ways(target: Target) -> None:
    data = np.random.default_rng(0).random(MIB16 // 4, dtype=np.float32)
    reply = await target.raw("ModelInfer")(request_to_bytes(infer_request("echo", data)))
    assert len(reply) > MIB16
    np.testing.assert_array_equal(
        response_from_proto(pb.ModelInferResponse.FromString(reply)).output("x").data, data
    )


async def test_200_concurrent_calls_over_one_channel(target: Target) -> None:
    infer = target.method("ModelInfer")

    async def one(i: int) -> float:
        reply = await infer(request_to_proto(infer_request("sleep", np.full(3, i, np.float32),
                                                           sleep=0.05)))  # fmt: skip
        return float(response_from_proto(reply).output("x").data[0])

    assert await asyncio.gather(*(one(i) for i in range(200))) == list(range(200))


async def test_deadline_exceeded(target: Target) -> None:
    model: Any = target.dataplane.repository.get_model("sleep")
    message = request_to_proto(infer_request("sleep", np.ones(1, np.float32), sleep=5))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await target.method("ModelInfer")(message, timeout=0.3)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.sleep(0.1)  # the server side has let go of the call
    assert target.dataplane.repository.bound("sleep").inflight == 0
    assert model.finished == 0
    quick = request_to_proto(infer_request("sleep", np.ones(1, np.float32)))
    assert (await target.method("ModelInfer")(quick, timeout=5)).model_name == "sleep"


async def test_undecodable_request_is_invalid_argument(target: Target) -> None:
    for name in ("ModelInfer", "ModelReady"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await target.raw(name)(b"\xff\xff\xff")
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
        assert "not a valid inference." in (info.value.details() or "")


async def test_unknown_model_is_not_found_with_its_name(target: Target) -> None:
    message = request_to_proto(infer_request("nöpe-模型", np.ones(1, np.float32)))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await target.method("ModelInfer")(message)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert "nöpe-模型" in (info.value.details() or "")  # percent-encoded on the wire


async def test_unknown_method_is_unimplemented(target: Target) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await target.channel.unary_unary(f"/{SERVICE_NAME}/Nope")(b"")
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_message_over_the_receive_limit(target: Target) -> None:
    data = np.zeros(LIMIT // 4 + 16, np.float32)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await target.raw("ModelInfer")(request_to_bytes(infer_request("echo", data)))
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await target.method("ServerLive")(pb.ServerLiveRequest())).live


async def test_reply_over_the_send_limit(target: Target) -> None:
    # A request just under the limit whose echo, with its tensor metadata, is over it.
    data = np.zeros((LIMIT - 64) // 4, np.float32)
    request = infer_request("echo", data)
    request.id = "x" * 64
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await target.raw("ModelInfer")(request_to_bytes(request))
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_metadata_in_and_out(target: Target) -> None:
    call = target.method("ModelInfer")(
        request_to_proto(infer_request("echo", np.ones(2, np.float32))),
        metadata=(("x-echo", "hello"), ("x-request-id", "rid-7"), ("trace-bin", b"\x00\xffab")),
    )
    await call
    assert ("x-echoed", "hello") in tuple(await call.initial_metadata())
    assert dict(await call.trailing_metadata())["x-request-id"] == "rid-7"
    model: Any = target.dataplane.repository.get_model("echo")
    assert model.seen_headers["x-request-id"] == "rid-7"
    assert model.seen_headers["trace-bin"] == b"\x00\xffab"
    assert "te" not in model.seen_headers and "content-type" not in model.seen_headers


async def test_errors_carry_the_request_id(target: Target) -> None:
    message = request_to_proto(infer_request("failing", np.ones(1, np.float32)))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await target.method("ModelInfer")(message, metadata=(("x-request-id", "e-1"),))
    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert dict(info.value.trailing_metadata())["x-request-id"] == "e-1"


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
async def test_compressed_requests(target: Target, compression: grpc.Compression) -> None:
    async with channel_to(target.port, compression=compression) as channel:
        data = np.arange(1000, dtype=np.float32)
        reply = await target.method("ModelInfer", channel)(
            request_to_proto(infer_request("echo", data))
        )
    np.testing.assert_array_equal(response_from_proto(reply).output("x").data, data)


async def test_graceful_stop_finishes_the_call_then_refuses(target: Target) -> None:
    message = request_to_proto(infer_request("sleep", np.ones(1, np.float32), sleep=0.5))
    pending = asyncio.ensure_future(target.method("ModelInfer")(message, timeout=10))
    await asyncio.sleep(0.2)
    stopping = asyncio.ensure_future(target.server.stop(5))
    await asyncio.sleep(0.05)
    assert (await pending).model_name == "sleep"
    await asyncio.wait_for(stopping, 5)
    async with channel_to(target.port) as fresh:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await target.method("ServerLive", fresh)(pb.ServerLiveRequest(), timeout=2)
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def test_stop_without_grace_cancels_calls(target: Target) -> None:
    message = request_to_proto(infer_request("sleep", np.ones(1, np.float32), sleep=30))
    pending = asyncio.ensure_future(target.method("ModelInfer")(message, timeout=20))
    await asyncio.sleep(0.2)
    await asyncio.wait_for(target.server.stop(0), 5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await pending
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    model: Any = target.dataplane.repository.get_model("sleep")
    assert model.finished == 0


@pytest.mark.slow
@pytest.mark.parametrize("implementation", ["native", "grpcio"])
async def test_100_mib_messages(implementation: GrpcImplementation) -> None:
    limit = 110 * 1024 * 1024
    server = create_grpc_server(
        DataPlane(make_repository()),
        implementation=implementation,
        max_send_message_length=limit,
        max_receive_message_length=limit,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        data = np.arange(100 * 1024 * 1024 // 8, dtype=np.float64)
        async with channel_to(port) as channel:
            reply = await channel.unary_unary(f"/{SERVICE_NAME}/ModelInfer")(
                request_to_bytes(infer_request("echo", data)), timeout=120
            )
        out = response_from_proto(pb.ModelInferResponse.FromString(reply)).output("x").data
        assert out.shape == data.shape and out[-1] == data[-1] and np.array_equal(out, data)
    finally:
        await server.stop(0)


class _Foreign(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        return await continuation(handler_call_details)


async def test_foreign_interceptors_select_grpcio(caplog: pytest.LogCaptureFixture) -> None:
    dataplane = DataPlane(make_repository())
    ours = create_grpc_server(
        dataplane, implementation="native", interceptors=[GrpcAccessInterceptor()]
    )
    assert isinstance(ours, NativeGrpcServer)
    with caplog.at_level(logging.WARNING, logger="moorage.server.grpc.server"):
        mixed = create_grpc_server(
            dataplane, implementation="native", interceptors=[GrpcAccessInterceptor(), _Foreign()]
        )
    assert isinstance(mixed, grpc.aio.Server)
    assert "_Foreign" in caplog.text


async def test_model_server_wiring(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServerSettings(_cli_parse_args=False).grpc_server == "native"
    assert ServerSettings.from_cli(["--grpc_server", "grpcio"]).grpc_server == "grpcio"
    monkeypatch.setenv("MOORAGE_GRPC_SERVER", "grpcio")
    assert ServerSettings.from_cli([]).grpc_server == "grpcio"
    monkeypatch.delenv("MOORAGE_GRPC_SERVER")

    async def serve_once(server: ModelServer) -> Any:
        task = asyncio.ensure_future(server.serve())
        for _ in range(100):
            if server.grpc_port:
                break
            await asyncio.sleep(0.02)
        kind = server._grpc
        async with channel_to(server.grpc_port or 0) as channel:
            live = await channel.unary_unary(
                f"/{SERVICE_NAME}/ServerLive",
                response_deserializer=pb.ServerLiveResponse.FromString,
            )(b"", timeout=5)
            assert live.live
        server.stop()
        await asyncio.wait_for(task, 10)
        return kind

    settings = ServerSettings.from_cli(
        ["--http_port", "0", "--grpc_port", "0", "--host", "127.0.0.1", "--configure_logging",
         "false", "--graceful_shutdown_seconds", "1"]
    )  # fmt: skip
    native = ModelServer(settings, registered_models=make_repository())
    assert isinstance(await serve_once(native), NativeGrpcServer)
    wrapped = ModelServer(settings, registered_models=make_repository())
    wrapped.grpc_interceptors.append(_Foreign())
    assert not isinstance(await serve_once(wrapped), NativeGrpcServer)


async def test_a_serving_server_keeps_its_start_up_objects_out_of_the_collectors_reach() -> None:
    """Full collections scan only what requests made (gc.freeze once the server is up); a
    process that goes on after serving gets them back (gc.unfreeze)."""
    import gc

    settings = ServerSettings.from_cli(
        ["--http_port", "0", "--grpc_port", "0", "--host", "127.0.0.1", "--configure_logging",
         "false", "--graceful_shutdown_seconds", "1"]
    )  # fmt: skip
    server = ModelServer(settings, registered_models=make_repository())
    task = asyncio.ensure_future(server.serve())
    for _ in range(200):
        if gc.get_freeze_count():
            break
        await asyncio.sleep(0.02)
    assert gc.get_freeze_count() > 10_000
    server.stop()
    await asyncio.wait_for(task, 10)
    assert gc.get_freeze_count() == 0


class _Cyclic(Model):
    """A model in a reference cycle: only the cyclic collector frees it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True
        self.me = self

    async def predict(self, payload: Any, headers: Any = None) -> Any:
        return payload


async def test_models_that_leave_a_frozen_process_are_collected() -> None:
    """While serving (frozen), a model registered later is frozen too; one unloaded or replaced
    is collected although it was frozen."""
    import gc
    import weakref

    from moorage.server.repository import ModelRepository

    repository = ModelRepository()
    first = _Cyclic("cyclic")
    gone = weakref.ref(first)
    repository.update(first)
    gc.freeze()  # as a serving server does
    try:
        frozen = gc.get_freeze_count()
        repository.update(_Cyclic("later"))
        assert gc.get_freeze_count() > frozen  # the newcomer joined the frozen objects
        del first
        await repository.unload("cyclic")
        assert gone() is None and gc.get_freeze_count() > 0
        replaced = repository.get_model("later")
        gone = weakref.ref(replaced)
        del replaced
        repository.update(_Cyclic("later"))  # a new model under the same name
        assert gone() is None and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
