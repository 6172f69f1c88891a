"""The async gRPC client for OIP v2 (KServe 0.14's ``InferenceGRPCClient``).

Two transports behind one client, chosen once when it is built (``transport=``):

- **native** (the default where it can serve): the client's own HTTP/2 connection
  (:mod:`moorage.client._channel` over :mod:`moorage.client._h2`), a fraction of grpc.aio's
  CPU per call;
- **grpcio**: ``grpc.aio`` through ``channel.unary_unary``, needed for ``creds`` objects,
  channel arguments the native transport does not know (:data:`HONOURED_OPTIONS` lists those
  it honours) and target forms other than ``host:port`` (``dns:///``, ``unix:``, ...).

Both send core's message classes (``METHODS``; ``ModelInfer`` as ``request_to_bytes``) and
raise the same typed errors; the connection or channel is made on first use, inside the
running event loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

import grpc
import grpc.aio
import orjson

from moorage.client._channel import (
    HONOURED_OPTIONS,
    Channel,
    NativeOptions,
    native_options,
    parse_target,
    ssl_context,
)
from moorage.client._config import USE_CLIENT_DEFAULT
from moorage.client._errors import error_from_grpc, map_grpc_errors
from moorage.client._inputs import check_inputs
from moorage.core.errors import ConnectionFailed, InvalidInput, MoorageError, ServerError
from moorage.core.protocol import InferRequest, InferResponse
from moorage.core.protocol.grpc import (
    METHODS,
    SERVICE_NAME,
    pb,
    request_to_bytes,
    response_from_proto,
)
from moorage.core.protocol.schema import (
    MetadataTensor,
    ModelMetadataResponse,
    ServerMetadataResponse,
)

__all__ = ["HONOURED_OPTIONS", "InferenceGRPCClient", "Transport", "default_channel_options"]

logger = logging.getLogger(__name__)

ChannelOption = tuple[str, Any]
PemSource = str | os.PathLike[str] | bytes
Transport = Literal["auto", "native", "grpcio"]
_PRESERIALIZED = frozenset({"ModelInfer"})


def default_channel_options(*, retries: int = 3) -> list[ChannelOption]:
    """KServe's channel options: unlimited message sizes and a retry policy for UNAVAILABLE."""
    service_config = {
        "methodConfig": [
            {
                "name": [{"service": SERVICE_NAME}],
                "retryPolicy": {
                    "maxAttempts": max(2, retries),
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
    return [
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", -1),
        ("grpc.enable_retries", 1 if retries > 1 else 0),
        ("grpc.service_config", orjson.dumps(service_config).decode()),
    ]


class InferenceGRPCClient:
    """Async gRPC client for any OIP v2 server (``inference.GRPCInferenceService``).

    ``url`` is ``host:port`` (``:443`` with ``use_ssl``, else ``:80`` is appended when no port
    is given). TLS: ``use_ssl=True`` with optional ``root_certificates``, ``private_key`` and
    ``certificate_chain`` (PEM file paths, as in KServe, or PEM ``bytes``), or your own
    ``creds``. ``channel_args`` are added to :func:`default_channel_options` (same keys
    replace the defaults). ``timeout`` is the default deadline in seconds (``None``: none).

    Moorage additions (keyword-only): ``headers`` sent as metadata on every call, ``retries``
    (attempts for ``UNAVAILABLE``, KServe's 3), ``raw`` — send tensors as raw contents
    (the default; FP16/BF16 always travel raw) or in typed ``contents`` — and ``transport``:
    ``"native"`` (the client's own HTTP/2 connection), ``"grpcio"`` (``grpc.aio``) or
    ``"auto"`` (native unless ``creds``, a ``channel_args`` key outside
    :data:`HONOURED_OPTIONS` or a non-``host:port`` target needs grpcio); :attr:`transport`
    says which one a client uses.
    """

    def __init__(
        self,
        url: str,
        verbose: bool = False,
        use_ssl: bool = False,
        root_certificates: PemSource | None = None,
        private_key: PemSource | None = None,
        certificate_chain: PemSource | None = None,
        creds: grpc.ChannelCredentials | None = None,
        channel_args: Sequence[ChannelOption] | None = None,
        timeout: float | None = 60,
        *,
        headers: Mapping[str, str] | None = None,
        retries: int = 3,
        raw: bool = True,
        transport: Transport = "auto",
    ) -> None:
        if not url:
            raise InvalidInput("url should not be empty")
        if ":" not in url.rsplit("]", 1)[-1]:
            url = f"{url}:443" if use_ssl or creds is not None else f"{url}:80"
        self._url = url
        self._verbose = verbose
        self._timeout = timeout
        self._raw = raw
        self._headers = tuple((k.lower(), str(v)) for k, v in (headers or {}).items())
        self._metadata = self._headers or None
        options = dict(default_channel_options(retries=retries))
        options.update(dict(channel_args or ()))
        self._options = list(options.items())
        if transport not in ("auto", "native", "grpcio"):
            raise InvalidInput(f"transport must be 'auto', 'native' or 'grpcio', not {transport!r}")
        pems = (
            _pem(root_certificates, "root_certificates"),
            _pem(private_key, "private_key"),
            _pem(certificate_chain, "certificate_chain"),
        )
        native = None if transport == "grpcio" else self._native_options(creds, transport)
        self._creds = creds
        self._native: Channel | None = None
        self._native_config: tuple[NativeOptions, Any, str, int] | None = None
        if native is not None:
            host, port = native[1]
            context = ssl_context(*pems) if use_ssl else None
            self._native_config = (native[0], context, host, port)
        elif creds is None and use_ssl:
            self._creds = grpc.ssl_channel_credentials(*pems)
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict[str, Any] = {}
        self._closed = False

    def _native_options(
        self, creds: grpc.ChannelCredentials | None, transport: Transport
    ) -> tuple[NativeOptions, tuple[str, int]] | None:
        """The native transport's settings, or ``None`` where ``auto`` needs grpcio."""
        target = parse_target(self._url)
        options = native_options(self._options)
        why = None
        if creds is not None:
            why = "creds (a grpc.ChannelCredentials object) need grpcio"
        elif target is None:
            why = f"target {self._url!r} needs grpcio (the native transport takes host:port)"
        elif isinstance(options, str):
            why = options
        if why is None:
            assert target is not None and not isinstance(options, str)
            return options, target
        if transport == "native":
            raise InvalidInput(f"transport='native' cannot serve this client: {why}")
        logger.debug("gRPC client for %s uses grpcio: %s", self._url, why)
        return None

    @property
    def url(self) -> str:
        return self._url

    @property
    def transport(self) -> Literal["native", "grpcio"]:
        """The transport this client uses: ``"native"`` or ``"grpcio"``."""
        return "native" if self._native_config is not None else "grpcio"

    # ------------------------------------------------------------------------- inference
    async def infer(
        self,
        infer_request: InferRequest,
        timeout: Any = USE_CLIENT_DEFAULT,
        headers: Mapping[str, str] | None = None,
    ) -> InferResponse:
        """Run inference (``ModelInfer``); tensors go as raw contents unless ``raw=False``."""
        if not isinstance(infer_request, InferRequest):
            raise InvalidInput(
                "Invalid input format: expected an InferRequest, "
                f"got {type(infer_request).__name__}"
            )
        check_inputs(infer_request)
        # serialized here, at memory-copy speed: the ModelInfer call has no serializer
        message = request_to_bytes(infer_request, raw=self._raw)
        reply = await self._call("ModelInfer", message, timeout, headers)
        try:
            return response_from_proto(reply)
        except MoorageError as exc:
            raise ServerError(f"invalid ModelInfer response from {self._url}: {exc}") from exc

    # ------------------------------------------------------------------------- health
    async def is_server_live(
        self, timeout: Any = USE_CLIENT_DEFAULT, headers: Mapping[str, str] | None = None
    ) -> bool:
        reply = await self._call("ServerLive", pb.ServerLiveRequest(), timeout, headers)
        return bool(reply.live)

    async def is_server_ready(
        self, timeout: Any = USE_CLIENT_DEFAULT, headers: Mapping[str, str] | None = None
    ) -> bool:
        reply = await self._call("ServerReady", pb.ServerReadyRequest(), timeout, headers)
        return bool(reply.ready)

    async def is_model_ready(
        self,
        model_name: str,
        timeout: Any = USE_CLIENT_DEFAULT,
        headers: Mapping[str, str] | None = None,
        model_version: str | None = None,
    ) -> bool:
        """``ModelReady``; an unknown model raises ``ModelNotFound``."""
        request = pb.ModelReadyRequest(name=model_name, version=model_version or "")
        reply = await self._call("ModelReady", request, timeout, headers)
        return bool(reply.ready)

    # ------------------------------------------------------------------------- metadata
    async def get_server_metadata(
        self, timeout: Any = USE_CLIENT_DEFAULT, headers: Mapping[str, str] | None = None
    ) -> ServerMetadataResponse:
        reply = await self._call("ServerMetadata", pb.ServerMetadataRequest(), timeout, headers)
        return ServerMetadataResponse(
            name=reply.name, version=reply.version, extensions=list(reply.extensions)
        )

    async def get_model_metadata(
        self,
        model_name: str,
        model_version: str | None = None,
        timeout: Any = USE_CLIENT_DEFAULT,
        headers: Mapping[str, str] | None = None,
    ) -> ModelMetadataResponse:
        request = pb.ModelMetadataRequest(name=model_name, version=model_version or "")
        reply = await self._call("ModelMetadata", request, timeout, headers)
        return ModelMetadataResponse(
            name=reply.name,
            versions=list(reply.versions),
            platform=reply.platform,
            inputs=[_metadata_tensor(t) for t in reply.inputs],
            outputs=[_metadata_tensor(t) for t in reply.outputs],
        )

    # ------------------------------------------------------------------------- repository
    async def load_model(
        self,
        model_name: str,
        timeout: Any = USE_CLIENT_DEFAULT,
        headers: Mapping[str, str] | None = None,
    ) -> bool:
        """``RepositoryModelLoad``; ``True`` once loaded (a failure raises)."""
        request = pb.RepositoryModelLoadRequest(model_name=model_name)
        await self._call("RepositoryModelLoad", request, timeout, headers)
        return True

    async def unload_model(
        self,
        model_name: str,
        timeout: Any = USE_CLIENT_DEFAULT,
        headers: Mapping[str, str] | None = None,
    ) -> bool:
        """``RepositoryModelUnload``; ``True`` once unloaded (a failure raises)."""
        request = pb.RepositoryModelUnloadRequest(model_name=model_name)
        await self._call("RepositoryModelUnload", request, timeout, headers)
        return True

    # ------------------------------------------------------------------------- lifecycle
    async def close(self) -> None:
        """Close the channel; the client cannot be used afterwards."""
        self._closed = True
        channel, self._channel = self._channel, None
        native, self._native = self._native, None
        self._calls.clear()
        if channel is not None:
            await channel.close()
        if native is not None:
            await native.close()

    aclose = close

    async def __aenter__(self) -> InferenceGRPCClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------------- internals
    def _callable(self, rpc: str) -> Any:
        call = self._calls.get(rpc)
        if call is not None:
            return call
        if self._closed:
            raise ConnectionFailed(f"the gRPC client for {self._url} is closed")
        if self._channel is None:
            if self._creds is not None:
                self._channel = grpc.aio.secure_channel(self._url, self._creds, self._options)
            else:
                self._channel = grpc.aio.insecure_channel(self._url, self._options)
        request_cls, response_cls = METHODS[rpc]
        call = self._channel.unary_unary(
            f"/{SERVICE_NAME}/{rpc}",
            # ModelInfer requests arrive as bytes from request_to_bytes
            request_serializer=None if rpc in _PRESERIALIZED else request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        self._calls[rpc] = call
        return call

    async def _call(
        self, rpc: str, message: Any, timeout: Any, headers: Mapping[str, str] | None
    ) -> Any:
        deadline = self._timeout if timeout is USE_CLIENT_DEFAULT else timeout
        if self._verbose:
            logger.info("gRPC %s -> %s", rpc, self._url)
        if self._native_config is not None:
            channel = self._native or self._native_channel()
            payload = message if rpc in _PRESERIALIZED else message.SerializeToString()
            extra = tuple((k.lower(), str(v)) for k, v in headers.items()) if headers else None
            try:  # map_grpc_errors, inlined: a context manager per call costs ~2 us here
                reply = METHODS[rpc][1].FromString(
                    await channel.unary(rpc, payload, deadline, extra)
                )
            except grpc.RpcError as exc:
                raise error_from_grpc(exc, self._url) from exc
        else:
            metadata = self._metadata
            if headers:
                metadata = (*self._headers, *((k.lower(), str(v)) for k, v in headers.items()))
            with map_grpc_errors(self._url):
                reply = await self._callable(rpc)(message, timeout=deadline, metadata=metadata)
        if self._verbose:
            logger.info("gRPC %s <- %s: OK", rpc, self._url)
        return reply

    def _native_channel(self) -> Channel:
        if self._closed:
            raise ConnectionFailed(f"the gRPC client for {self._url} is closed")
        assert self._native_config is not None
        options, context, host, port = self._native_config
        self._native = Channel(
            self._url, host, port, options=options, context=context, metadata=self._headers
        )
        return self._native


def _metadata_tensor(message: Any) -> MetadataTensor:
    return MetadataTensor(
        name=message.name, datatype=message.datatype, shape=[int(d) for d in message.shape]
    )


def _pem(source: PemSource | None, what: str) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    try:
        with open(source, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} from {os.fspath(source)!r}: {exc}") from exc
