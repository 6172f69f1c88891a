"""``inference.GRPCInferenceService`` over the :class:`DataPlane`, with generic handlers.

The service is wired from core's method table (:data:`moorage.core.protocol.grpc.METHODS`): no
generated ``*_pb2_grpc`` module. Each RPC parses the protobuf with core's converter, calls the
data plane and renders the result; :func:`moorage.server.errors.grpc_errors` maps failures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

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

if TYPE_CHECKING:
    import grpc

__all__ = ["InferenceServicer", "metadata_to_headers"]

Rpc = Callable[[Any, Any], Coroutine[Any, Any, Any]]
_INFER_REQUEST = METHODS["ModelInfer"][0]


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
        """The serialized ``ModelInferResponse``; ``request`` is a ``ModelInferRequest`` or its
        bytes (as the servers hand it over: no coroutine in between to parse it)."""
        if type(request) is not _INFER_REQUEST:
            request = _decode(_INFER_REQUEST, request)
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

    def _behaviors(self) -> dict[str, Callable[[Any, Any], Coroutine[Any, Any, bytes]]]:
        """Each RPC as ``async (request bytes, context) -> response bytes``: parsing and
        serializing happen inside the call, so that an undecodable request is the caller's
        INVALID_ARGUMENT (grpcio's own deserializer would answer INTERNAL)."""
        behaviors = {}
        for name, (request_cls, _) in METHODS.items():
            behaviors[name] = _bytes_behavior(name, getattr(self, name), request_cls)
        return behaviors

    def async_handlers(
        self, wrap: Callable[[str, Any], Any] = lambda name, rpc: rpc
    ) -> dict[str, Callable[[Any, Any], Coroutine[Any, Any, bytes]]]:
        """Every RPC as ``async (request bytes, context) -> response bytes`` with errors
        mapped (:func:`grpc_errors`), ``wrap(name, behavior)`` applied once per method: what
        the native server calls."""
        return {name: wrap(name, grpc_errors(rpc)) for name, rpc in self._behaviors().items()}

    @staticmethod
    def _method_handlers(behaviors: dict[str, Any]) -> dict[str, grpc.RpcMethodHandler]:
        # Requests arrive and replies leave as bytes (see _behaviors).
        import grpc  # grpcio servers only: the native one runs without it

        return {name: grpc.unary_unary_rpc_method_handler(b) for name, b in behaviors.items()}

    def handler(self) -> grpc.GenericRpcHandler:
        """A generic handler serving every RPC of :data:`METHODS` (grpc.aio)."""
        import grpc

        return grpc.method_handlers_generic_handler(
            SERVICE_NAME, self._method_handlers(self.async_handlers())
        )

    def blocking_handlers(
        self, wrap: Callable[[str, Any], Any] = lambda name, rpc: rpc
    ) -> dict[str, grpc.RpcMethodHandler]:
        """Method handlers for the threaded (sync) server: ``ModelInfer`` runs on the worker
        thread, the other RPCs on the event loop. ``wrap(name, behavior)`` decorates each
        behavior once (metrics, request ids), instead of a per-call interceptor."""
        request_cls = METHODS["ModelInfer"][0]

        def infer(data: Any, context: grpc.ServicerContext) -> bytes:
            return self.model_infer_blocking(_decode(request_cls, data), context)

        infer.__name__ = "ModelInfer"
        behaviors: dict[str, Any] = {}
        for name, rpc in self._behaviors().items():
            if name == "ModelInfer":
                behavior: Any = infer
            else:
                behavior = self._on_loop(name, rpc)
            behaviors[name] = wrap(name, grpc_errors_blocking(behavior))
        return self._method_handlers(behaviors)

    def _on_loop(self, name: str, rpc: Any) -> Callable[[Any, grpc.ServicerContext], bytes]:
        def behavior(data: Any, context: grpc.ServicerContext) -> bytes:
            assert self.loop is not None
            result: bytes = asyncio.run_coroutine_threadsafe(rpc(data, context), self.loop).result()
            return result

        behavior.__name__ = name
        return behavior


def _decode(request_cls: Any, data: Any) -> Any:
    try:
        return request_cls.FromString(data)
    except DecodeError as exc:
        raise InvalidInput(
            f"the request is not a valid {request_cls.DESCRIPTOR.full_name}: {exc}"
        ) from None


def _bytes_behavior(
    name: str, rpc: Rpc, request_cls: Any
) -> Callable[[Any, Any], Coroutine[Any, Any, bytes]]:
    if name == "ModelInfer":  # parses its bytes and returns bytes already
        return rpc

    async def behavior(data: Any, context: Any) -> bytes:
        result: bytes = (await rpc(_decode(request_cls, data), context)).SerializeToString()
        return result

    behavior.__name__ = behavior.__qualname__ = name
    return behavior


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
