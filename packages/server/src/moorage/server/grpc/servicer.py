"""``inference.GRPCInferenceService`` over the :class:`DataPlane`, with generic handlers.

The service is wired from core's method table (:data:`moorage.core.protocol.grpc.METHODS`): no
generated ``*_pb2_grpc`` module. Each RPC parses the protobuf with core's converter, calls the
data plane and renders the result; :func:`moorage.server.errors.grpc_errors` maps failures.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from moorage.core.errors import InferenceError, InvalidInput
from moorage.core.protocol import InferResponse, select_outputs
from moorage.core.protocol.grpc import (
    METHODS,
    SERVICE_NAME,
    pb,
    request_from_proto,
    response_to_proto,
)
from moorage.server.dataplane import DataPlane
from moorage.server.errors import grpc_errors

__all__ = ["InferenceServicer", "metadata_to_headers"]

Rpc = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


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

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        if not request.model_name:
            raise InvalidInput("model_name must be set")
        infer_request = request_from_proto(request)
        result, headers = await self.dataplane.infer(
            request.model_name,
            infer_request,
            headers=metadata_to_headers(context),
            version=infer_request.model_version,
            transport="grpc",
        )
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
        if headers:
            await context.send_initial_metadata(tuple((k.lower(), v) for k, v in headers.items()))
        return response_to_proto(result, raw=len(request.raw_input_contents) > 0)

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        loaded = await self.dataplane.load(request.model_name)
        return pb.RepositoryModelLoadResponse(model_name=request.model_name, isLoaded=loaded)

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        unloaded = await self.dataplane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse(model_name=request.model_name, isUnloaded=unloaded)

    def handler(self) -> grpc.GenericRpcHandler:
        """A generic handler serving every RPC of :data:`METHODS`."""
        handlers = {}
        for name, (request_cls, response_cls) in METHODS.items():
            rpc: Rpc = getattr(self, name)
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                grpc_errors(rpc),
                request_deserializer=request_cls.FromString,
                response_serializer=response_cls.SerializeToString,
            )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
