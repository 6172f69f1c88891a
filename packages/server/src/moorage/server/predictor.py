"""The client a model's default ``predict`` and ``explain`` forward with (transformer mode).

A :class:`PredictorClient` talks to one remote model server:

- ``v1``: ``POST http(s)://<host>/v1/models/<name>:predict`` (or ``:explain``) with the JSON object;
- ``v2``: ``POST http(s)://<host>/v2/models/<name>/infer`` (core's REST codec, binary tensors
  where the inputs ask for it), answered with an :class:`~moorage.core.protocol.InferResponse`;
- ``grpc-v2``: ``inference.GRPCInferenceService/ModelInfer`` on ``<host>`` (raw contents).

It forwards ``x-request-id``, ``x-b3-traceid``, ``traceparent`` and ``tracestate``. The peer's
errors come back typed (its ``code``, else its HTTP/gRPC status): a 400 from the predictor is a
400 from the transformer. An unreachable peer is :class:`~moorage.core.errors.ConnectionFailed`
(503), a slow one :class:`~moorage.core.errors.Timeout` (504). :func:`pooled_client` keeps one
client per peer and event loop.

This module sits below :mod:`moorage.server.model` (whose defaults call it) and imports nothing
else of the server; :mod:`moorage.server.transformer` wires the server's settings to models.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from moorage.core.errors import (
    ERROR_CODE_METADATA,
    GRPC_STATUS_NAMES,
    ConnectionFailed,
    InferenceError,
    MoorageError,
    Timeout,
    error_for_code,
    error_for_status,
)
from moorage.core.protocol import InferRequest, InferResponse
from moorage.core.protocol.grpc import (
    METHODS,
    SERVICE_NAME,
    request_to_proto,
    response_from_proto,
)
from moorage.core.protocol.rest import (
    HEADER_LENGTH,
    decode_request,
    decode_response,
    encode_request,
)

if TYPE_CHECKING:
    import grpc
    import httpx

__all__ = ["PredictorClient", "close_predictor_clients", "pooled_client"]

logger = logging.getLogger(__name__)

#: Request headers passed on to the predictor (KServe passes the first two).
FORWARDED_HEADERS = ("x-request-id", "x-b3-traceid", "traceparent", "tracestate")
#: Connection attempts per request (KServe's ``RESTConfig(retries=3)``).
CONNECT_RETRIES = 3


def _forwarded(headers: dict[str, Any] | None) -> dict[str, str]:
    if not headers:
        return {}
    out = {}
    for name in FORWARDED_HEADERS:
        value = headers.get(name)
        if isinstance(value, str):
            out[name] = value
    return out


@contextlib.contextmanager
def _http_errors(host: str, role: str = "predictor") -> Iterator[None]:
    import httpx

    try:
        yield
    except httpx.TimeoutException as exc:
        raise Timeout(f"{role} {host} did not answer in time: {exc}", host=host) from exc
    except httpx.HTTPError as exc:
        raise ConnectionFailed(
            f"cannot reach {role} {host}: {type(exc).__name__}: {exc}", host=host
        ) from exc


def _remote_error(host: str, status: int, body: bytes, role: str = "predictor") -> MoorageError:
    message = body.decode("utf-8", "replace")[:2000]
    code = None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        if isinstance(doc.get("error"), str):
            message = doc["error"]
        if isinstance(doc.get("code"), str):
            code = doc["code"]
    cls = (error_for_code(code) if code else None) or error_for_status(status)
    return cls(f"{role} {host} answered {status}: {message}", host=host, status=status)


class PredictorClient:
    """Forwards inference requests to one predictor over REST (v1/v2) or gRPC (v2)."""

    def __init__(
        self,
        host: str,
        *,
        protocol: str = "v1",
        use_ssl: bool = False,
        timeout: float = 600,
        transport: httpx.AsyncBaseTransport | None = None,
        role: str = "predictor",
    ) -> None:
        if protocol not in ("v1", "v2", "grpc-v2"):
            raise ValueError(f"unsupported predictor protocol {protocol!r}")
        self.host = host
        #: What the peer is, in error messages ("predictor" or "explainer").
        self.role = role
        self.protocol = protocol
        self.use_ssl = use_ssl
        self.timeout = timeout
        self.base_url = f"{'https' if use_ssl else 'http'}://{host}"
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._channel: grpc.aio.Channel | None = None
        self._infer_rpc: Any = None

    # ------------------------------------------------------------------ transports
    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            # httpx is imported on first use: it costs ~0.1 s of start-up that only
            # transformers need (``ModelServer`` imports this module for every server).
            import httpx

            transport = self._transport or httpx.AsyncHTTPTransport(retries=CONNECT_RETRIES)
            self._http = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=self.timeout,
                transport=transport,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
            )
        return self._http

    def _grpc_infer(self) -> Any:
        if self._infer_rpc is None:
            # grpcio, like httpx, is imported on first use: only a grpc-v2 predictor needs it.
            import grpc

            options = [
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
            ]
            if self.use_ssl:
                self._channel = grpc.aio.secure_channel(
                    self.host, grpc.ssl_channel_credentials(), options=options
                )
            else:
                self._channel = grpc.aio.insecure_channel(self.host, options=options)
            request_cls, response_cls = METHODS["ModelInfer"]
            self._infer_rpc = self._channel.unary_unary(
                f"/{SERVICE_NAME}/ModelInfer",
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )
        return self._infer_rpc

    # ------------------------------------------------------------------ forwarding
    async def infer(self, model_name: str, payload: Any, headers: dict[str, Any] | None) -> Any:
        """The predictor's answer for ``payload`` (a v1 dict or an InferRequest / v2 dict)."""
        forwarded = _forwarded(headers)
        if self.protocol == "v1":
            return await self._v1(model_name, payload, forwarded)
        request = _as_infer_request(payload, model_name)
        if self.protocol == "v2":
            return await self._v2(model_name, request, forwarded)
        return await self._grpc(model_name, request, forwarded)

    async def explain(self, model_name: str, payload: Any, headers: dict[str, Any] | None) -> Any:
        """The explainer's v1 ``:explain`` answer for ``payload`` (KServe explains over v1 only)."""
        return await self._v1(model_name, payload, _forwarded(headers), verb="explain")

    async def _v1(
        self, model_name: str, payload: Any, headers: dict[str, str], verb: str = "predict"
    ) -> Any:
        if not isinstance(payload, dict):
            raise InferenceError(
                f"a v1 {verb} call takes a JSON object; preprocess of '{model_name}' returned "
                f"{type(payload).__name__} (use --predictor_protocol v2 for InferRequest)",
                model=model_name,
            )
        body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
        headers["content-type"] = "application/json"
        with _http_errors(self.host, self.role):
            response = await self._http_client().post(
                f"/v1/models/{model_name}:{verb}", content=body, headers=headers
            )
        if not response.is_success:
            raise _remote_error(self.host, response.status_code, response.content, self.role)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise InferenceError(
                f"{self.role} {self.host} answered with invalid JSON: {exc}", model=model_name
            ) from None

    async def _v2(self, model_name: str, request: InferRequest, headers: dict[str, str]) -> Any:
        body, json_length = encode_request(request)
        if json_length is None:
            headers["content-type"] = "application/json"
        else:
            headers["content-type"] = "application/octet-stream"
            headers[HEADER_LENGTH] = str(json_length)
        path = f"/v2/models/{model_name}/infer"
        if request.model_version:
            path = f"/v2/models/{model_name}/versions/{request.model_version}/infer"
        with _http_errors(self.host):
            response = await self._http_client().post(path, content=body, headers=headers)
        if not response.is_success:
            raise _remote_error(self.host, response.status_code, response.content)
        length = response.headers.get(HEADER_LENGTH)
        return decode_response(response.content, header_length=int(length) if length else None)

    async def _grpc(self, model_name: str, request: InferRequest, headers: dict[str, str]) -> Any:
        import grpc  # imported by _grpc_infer already

        message = request_to_proto(request, raw=True)
        metadata = (
            ("request_type", "grpc_v2"),
            ("response_type", "grpc_v2"),
            *headers.items(),
        )
        try:
            reply = await self._grpc_infer()(message, metadata=metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            details = exc.details() or code.name
            # A moorage predictor names the error (an UNAVAILABLE may be overloaded or not
            # ready rather than unreachable): the same table as REST's body "code".
            server_code = next(
                (str(value) for key, value in exc.trailing_metadata() or ()
                 if key == ERROR_CODE_METADATA),
                None,
            )  # fmt: skip
            typed = error_for_code(server_code) if server_code else None
            if typed is not None:
                raise typed(
                    f"predictor {self.host} answered {code.name}: {details}", host=self.host
                ) from exc
            if code is grpc.StatusCode.UNAVAILABLE:
                raise ConnectionFailed(
                    f"cannot reach predictor {self.host}: {details}", host=self.host
                ) from exc
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                raise Timeout(
                    f"predictor {self.host} did not answer in time", host=self.host
                ) from exc
            status = GRPC_STATUS_NAMES.get(code.name, 500)
            raise error_for_status(status)(
                f"predictor {self.host} answered {code.name}: {details}", host=self.host
            ) from exc
        return response_from_proto(reply)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._infer_rpc = None


def _as_infer_request(payload: Any, model_name: str) -> InferRequest:
    if isinstance(payload, InferRequest):
        if payload.model_name == model_name:
            return payload
        return InferRequest(
            model_name,
            payload.inputs,
            id=payload.id,
            parameters=payload.parameters,
            outputs=payload.outputs,
            model_version=payload.model_version,
        )
    if isinstance(payload, dict):
        return decode_request(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
                              model_name=model_name)  # fmt: skip
    if isinstance(payload, InferResponse):
        raise InferenceError(
            f"preprocess of '{model_name}' returned an InferResponse; a predictor takes requests",
            model=model_name,
        )
    raise InferenceError(
        f"a v2 predictor takes an InferRequest or a v2 JSON object; preprocess of "
        f"'{model_name}' returned {type(payload).__name__}",
        model=model_name,
    )


# ----------------------------------------------------------------------------- per-loop pool
_clients: dict[
    tuple[str, str, bool, float, str], tuple[asyncio.AbstractEventLoop, PredictorClient]
] = {}


def pooled_client(
    host: str,
    *,
    protocol: str = "v1",
    use_ssl: bool = False,
    timeout: float = 600,
    role: str = "predictor",
) -> PredictorClient:
    """The running loop's client for ``host`` (made on first use; one per loop and settings)."""
    key = (host, protocol, use_ssl, timeout, role)
    loop = asyncio.get_running_loop()
    entry = _clients.get(key)
    if entry is not None and entry[0] is loop:
        return entry[1]
    client = PredictorClient(
        host, protocol=protocol, use_ssl=use_ssl, timeout=timeout, role=role
    )  # a client made on another (finished) loop cannot be reused here
    _clients[key] = (loop, client)
    return client


async def close_predictor_clients() -> None:
    """Close the pooled predictor connections of the running loop (server shutdown)."""
    loop = asyncio.get_running_loop()
    for key, (owner, client) in list(_clients.items()):
        if owner is loop:
            del _clients[key]
            await client.aclose()
