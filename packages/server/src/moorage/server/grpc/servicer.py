"""``inference.GRPCInferenceService`` over the :class:`DataPlane`, with generic handlers.

The service is wired from core's method table (:data:`moorage.core.protocol.grpc.METHODS`): no
generated ``*_pb2_grpc`` module. Each RPC parses the protobuf with core's converter, calls the
data plane and renders the result; :func:`moorage.server.errors.grpc_errors` maps failures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from moorage.core.errors import InferenceError, InvalidInput
from moorage.core.protocol import InferRequest, InferResponse, select_outputs
from moorage.core.protocol.grpc import (
    METHODS,
    SERVICE_NAME,
    pb,
    request_from_proto,
    response_to_bytes,
)
from moorage.server.dataplane import DataPlane
from moorage.server.errors import grpc_errors, grpc_errors_blocking

__all__ = ["InferenceServicer", "metadata_to_headers"]

Rpc = Callable[[Any, Any], Coroutine[Any, Any, Any]]


def metadata_to_headers(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's invocation metadata as a headers dict (binary ``-bin`` values kept as bytes)."""
    metadata = context.invocation_metadata()
    if not metadata:
        return {}
    return {key: value for key, value in metadata}


class InferenceServicer:
    """The eight RPCs of ``inference.GRPCInferenceService``."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        #: The event loop the async RPCs run on (set by the threaded server when it starts).
        self.loop: asyncio.AbstractEventLoop | None = None

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return pb.ServerLiveResponse(live=await self.dataplane.live())

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=await self.dataplane.ready())

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        ready = await self.dataplane.model_ready(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return pb.ServerMetadataResponse(**self.dataplane.server_metadata())

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        meta = self.dataplane.model_metadata(request.name, request.version or None)
        response = pb.ModelMetadataResponse(
            name=meta["name"], versions=meta.get("versions", []), platform=meta["platform"]
        )
        for kind in ("inputs", "outputs"):
            target = getattr(response, kind)
            for tensor in meta[kind]:
                target.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        return response

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> bytes:  # noqa: N802
        infer_request = _parse(request)
        result, headers = await self.dataplane.infer(
            request.model_name,
            infer_request,
            headers=metadata_to_headers(context),
            version=infer_request.model_version,
            transport="grpc",
        )
        if headers:
            await context.send_initial_metadata(_metadata(headers))
        return _render(request, infer_request, result)

    def model_infer_blocking(self, request: Any, context: grpc.ServicerContext) -> bytes:
        """``ModelInfer`` on a worker thread of the threaded server (sync models run here)."""
        infer_request = _parse(request)
        assert self.loop is not None, "the threaded server sets the loop when it starts"
        result, headers = self.dataplane.infer_blocking(
            request.model_name,
            infer_request,
            headers=metadata_to_headers(context),
            version=infer_request.model_version,
            loop=self.loop,
        )
        if headers:
            context.send_initial_metadata(_metadata(headers))
        return _render(request, infer_request, result)

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        loaded = await self.dataplane.load(request.model_name)
        return pb.RepositoryModelLoadResponse(model_name=request.model_name, isLoaded=loaded)

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        unloaded = await self.dataplane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse(model_name=request.model_name, isUnloaded=unloaded)

    def _handlers(self, wrap: Callable[[str, Any], Any]) -> dict[str, grpc.RpcMethodHandler]:
        handlers = {}
        for name, (request_cls, response_cls) in METHODS.items():
            # ModelInfer returns bytes already (core's response_to_bytes).
            serializer = None if name == "ModelInfer" else response_cls.SerializeToString
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                wrap(name, getattr(self, name)),
                request_deserializer=request_cls.FromString,
                response_serializer=serializer,
            )
        return handlers

    def handler(self) -> grpc.GenericRpcHandler:
        """A generic handler serving every RPC of :data:`METHODS` (grpc.aio)."""
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME, self._handlers(lambda name, rpc: grpc_errors(rpc))
        )

    def blocking_handlers(
        self, wrap: Callable[[str, Any], Any] = lambda name, rpc: rpc
    ) -> dict[str, grpc.RpcMethodHandler]:
        """Method handlers for the threaded (sync) server: ``ModelInfer`` runs on the worker
        thread, the other RPCs on the event loop. ``wrap(name, behavior)`` decorates each
        behavior once (metrics, request ids), instead of a per-call interceptor."""

        def blocking(name: str, rpc: Rpc) -> Any:
            if name == "ModelInfer":
                behavior: Any = self.model_infer_blocking
            else:

                def behavior(request: Any, context: grpc.ServicerContext) -> Any:
                    assert self.loop is not None
                    future = asyncio.run_coroutine_threadsafe(rpc(request, context), self.loop)
                    return future.result()

                behavior.__name__ = name
            return wrap(name, grpc_errors_blocking(behavior))

        return self._handlers(blocking)


def _parse(request: Any) -> InferRequest:
    if not request.model_name:
        raise InvalidInput("model_name must be set")
    return request_from_proto(request)


def _metadata(headers: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((k.lower(), v) for k, v in headers.items())


def _render(request: Any, infer_request: InferRequest, result: Any) -> bytes:
    """The serialized ``ModelInferResponse`` (raw contents when the request used them)."""
    if not isinstance(result, InferResponse):
        raise InferenceError(
            f"model '{request.model_name}' returned {type(result).__name__}; "
            "gRPC needs an InferResponse"
        )
    if infer_request.outputs is not None:
        result = InferResponse(
            result.model_name,
            select_outputs(result, infer_request),
            id=result.id,
            parameters=result.parameters,
            model_version=result.model_version,
        )
    return response_to_bytes(result, raw=len(request.raw_input_contents) > 0)
