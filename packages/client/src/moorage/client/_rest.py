"""The async REST client for OIP v1 and v2 (KServe 0.14's ``InferenceRESTClient``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pydantic

from moorage.client._config import USE_CLIENT_DEFAULT, RESTConfig
from moorage.client._errors import map_httpx_errors, raise_for_response
from moorage.client._inputs import check_inputs
from moorage.core.errors import InvalidInput, MoorageError, ServerError, UnsupportedProtocol
from moorage.core.protocol import InferRequest, InferResponse
from moorage.core.protocol.rest import HEADER_LENGTH, decode_response, encode_request
from moorage.core.protocol.schema import ModelMetadataResponse, ServerMetadataResponse

__all__ = ["USE_CLIENT_DEFAULT", "InferenceRESTClient"]

logger = logging.getLogger(__name__)

TimeoutArg = Any  # float | None | httpx.Timeout | USE_CLIENT_DEFAULT
Headers = Mapping[str, str]

_JSON = "application/json"
_OCTET = "application/octet-stream"


class InferenceRESTClient:
    """Async REST client for any OIP server (moorage, KServe, MLServer, Triton).

    Every method takes the server's ``base_url`` (absolute: ``http://host:port`` or a prefix
    path under it) and raises core's typed errors (:mod:`moorage.core.errors`) for every
    failure: the server's status and message (``ModelNotFound``, ``ModelNotReady``,
    ``InvalidInput``, ``ServerError`` ...), ``Timeout``, ``ConnectionFailed``.

    Use it as an async context manager, or call :meth:`close`.
    """

    def __init__(self, config: RESTConfig | None = None) -> None:
        self._config = config or RESTConfig()
        self._client = httpx.AsyncClient(
            transport=self._config.build_transport(),
            timeout=self._config.timeout,
            auth=self._config.auth,
            headers=dict(self._config.headers or {}),
        )

    @property
    def config(self) -> RESTConfig:
        return self._config

    # ------------------------------------------------------------------------- inference
    async def infer(
        self,
        base_url: str | httpx.URL,
        data: InferRequest | Mapping[str, Any] | bytes,
        model_name: str | None = None,
        headers: Headers | None = None,
        response_headers: MutableMapping[str, str] | None = None,
        is_graph_endpoint: bool = False,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,
    ) -> InferResponse | dict[str, Any]:
        """Run inference; v2 returns an :class:`InferResponse`, v1 and graphs a ``dict``.

        ``data`` is a core ``InferRequest`` (inputs with ``binary_data`` set go in the binary
        extension; request ``parameters={"binary_data_output": True}`` or a requested output's
        ``binary_data`` asks for binary outputs), or a JSON ``dict`` sent as it is. Without
        ``model_name``, an ``InferRequest``'s own ``model_name`` is used. ``response_headers``,
        if given, is updated with the response's headers.
        """
        if is_graph_endpoint:
            url = _absolute(base_url)
        else:
            if model_name is None:
                if not isinstance(data, InferRequest):
                    raise InvalidInput("model_name should not be 'None'")
                model_name = data.model_name
            rel = (
                f"v1/models/{_segment(model_name)}:predict"
                if self._v1
                else f"v2/models/{_segment(model_name)}/infer"
            )
            url = _join(base_url, rel)
        body, extra = _encode(data)
        response = await self._send("POST", url, headers, timeout, content=body, extra=extra)
        if response_headers is not None:
            response_headers.update(response.headers)
        if is_graph_endpoint or self._v1:
            return _json(response)
        return _infer_response(response)

    async def explain(
        self,
        base_url: str | httpx.URL,
        model_name: str,
        data: Mapping[str, Any],
        headers: Headers | None = None,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,
    ) -> dict[str, Any]:
        """Run the model's explainer (v1 only): ``POST /v1/models/{name}:explain``."""
        if not self._v1:
            raise UnsupportedProtocol(
                f"explain is part of protocol v1, not {self._config.protocol_version}"
            )
        url = _join(base_url, f"v1/models/{_segment(model_name)}:explain")
        body, extra = _encode(data)
        response = await self._send("POST", url, headers, timeout, content=body, extra=extra)
        return _json(response)

    # ------------------------------------------------------------------------- health
    async def is_server_live(
        self,
        base_url: str | httpx.URL,
        headers: Headers | None = None,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,
    ) -> bool:
        """v1: ``GET /`` answers ``{"status": "alive"}``; v2: ``GET /v2/health/live``."""
        if self._v1:
            response = await self._send("GET", _join(base_url, ""), headers, timeout)
            doc = _json(response)
            return str(doc.get("status", "")).lower() == "alive"
        return await self._health(_join(base_url, "v2/health/live"), "live", headers, timeout)

    async def is_server_ready(
        self,
        base_url: str | httpx.URL,
        headers: Headers | None = None,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,
    ) -> bool:
        """v2 only: ``GET /v2/health/ready``."""
        if self._v1:
            raise UnsupportedProtocol("is_server_ready is part of protocol v2, not v1")
        return await self._health(_join(base_url, "v2/health/ready"), "ready", headers, timeout)

    async def is_model_ready(
        self,
        base_url: str | httpx.URL,
        model_name: str,
        headers: Headers | None = None,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,
    ) -> bool:
        """v1 ``GET /v1/models/{name}``, v2 ``GET /v2/models/{name}/ready``.

        A 503 answer means ``False``; an unknown model raises ``ModelNotFound``.
        """
        rel = (
            f"v1/models/{_segment(model_name)}"
            if self._v1
            else f"v2/models/{_segment(model_name)}/ready"
        )
        return await self._health(_join(base_url, rel), "ready", headers, timeout)

    # ------------------------------------------------------------------------- metadata
    async def get_server_metadata(
        self,
        base_url: str | httpx.URL,
        headers: Headers | None = None,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,
    ) -> ServerMetadataResponse:
        """v2 ``GET /v2``: server name, version and extensions."""
        self._require_v2("get_server_metadata")
        response = await self._send("GET", _join(base_url, "v2"), headers, timeout)
        return _model(ServerMetadataResponse, response)

    async def get_model_metadata(
        self,
        base_url: str | httpx.URL,
        model_name: str,
        model_version: str | None = None,
        headers: Headers | None = None,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,
    ) -> ModelMetadataResponse:
        """v2 ``GET /v2/models/{name}[/versions/{version}]``: the model's tensors."""
        self._require_v2("get_model_metadata")
        rel = f"v2/models/{_segment(model_name)}"
        if model_version:
            rel += f"/versions/{_segment(model_version)}"
        response = await self._send("GET", _join(base_url, rel), headers, timeout)
        return _model(ModelMetadataResponse, response)

    # ------------------------------------------------------------------------- repository
    async def load_model(
        self,
        base_url: str | httpx.URL,
        model_name: str,
        headers: Headers | None = None,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,
    ) -> bool:
        """``POST /v2/repository/models/{name}/load``; ``True`` once loaded."""
        return await self._repository(base_url, model_name, "load", headers, timeout)

    async def unload_model(
        self,
        base_url: str | httpx.URL,
        model_name: str,
        headers: Headers | None = None,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,
    ) -> bool:
        """``POST /v2/repository/models/{name}/unload``; ``True`` once unloaded."""
        return await self._repository(base_url, model_name, "unload", headers, timeout)

    # ------------------------------------------------------------------------- lifecycle
    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    aclose = close

    async def __aenter__(self) -> InferenceRESTClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------------- internals
    @property
    def _v1(self) -> bool:
        return self._config.protocol_version == "v1"

    def _require_v2(self, method: str) -> None:
        if self._v1:
            raise UnsupportedProtocol(f"{method} is part of protocol v2, not v1")

    async def _send(
        self,
        method: str,
        url: httpx.URL,
        headers: Headers | None,
        timeout: TimeoutArg,
        *,
        content: bytes | None = None,
        extra: Headers | None = None,
        check: bool = True,
    ) -> httpx.Response:
        merged: dict[str, str] = dict(extra or {})
        if headers:
            merged.update(headers)
        if self._config.verbose:
            logger.info("%s %s (%d bytes)", method, url, len(content or b""))
        with map_httpx_errors(url):
            response = await self._client.request(
                method, url, content=content, headers=merged, timeout=timeout
            )
        if self._config.verbose:
            logger.info(
                "%s %s -> %d %s (%d bytes)",
                method,
                url,
                response.status_code,
                response.http_version,
                len(response.content),
            )
        if check:
            raise_for_response(response)
        return response

    async def _health(
        self, url: httpx.URL, key: str, headers: Headers | None, timeout: TimeoutArg
    ) -> bool:
        response = await self._send("GET", url, headers, timeout, check=False)
        if response.status_code == httpx.codes.SERVICE_UNAVAILABLE:
            return False
        if response.is_client_error and not response.content:
            # OIP: "a 4xx status code indicates false", body empty (MLServer, Triton).
            return False
        raise_for_response(response)
        if not response.content:
            return True  # OIP: 200 with an empty body means true
        doc = _json(response)
        return bool(doc.get(key, True))

    async def _repository(
        self,
        base_url: str | httpx.URL,
        model_name: str,
        action: str,
        headers: Headers | None,
        timeout: TimeoutArg,
    ) -> bool:
        url = _join(base_url, f"v2/repository/models/{_segment(model_name)}/{action}")
        response = await self._send("POST", url, headers, timeout)
        if not response.content:
            return True
        doc = _json(response)
        return bool(doc.get(action, True))


# ----------------------------------------------------------------------------- helpers
def _encode(data: Any) -> tuple[bytes, dict[str, str]]:
    if isinstance(data, InferRequest):
        check_inputs(data)
        body, json_length = encode_request(data)
        if json_length is None:
            return body, {"content-type": _JSON}
        return body, {HEADER_LENGTH: str(json_length), "content-type": _OCTET}
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data), {"content-type": _JSON}
    if isinstance(data, Mapping):
        try:
            body = orjson.dumps(
                dict(data), option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
            )
        except TypeError as exc:
            raise InvalidInput(f"request data is not JSON serializable: {exc}") from exc
        return body, {"content-type": _JSON}
    raise InvalidInput(
        "Invalid input format: expected an InferRequest, a dict or bytes, "
        f"got {type(data).__name__}"
    )


def _infer_response(response: httpx.Response) -> InferResponse:
    header = response.headers.get(HEADER_LENGTH)
    try:
        length = int(header) if header is not None else None
        return decode_response(response.content, header_length=length)
    except (ValueError, MoorageError) as exc:
        raise ServerError(
            f"invalid inference response from '{response.request.url}': {exc}",
            url=str(response.request.url),
        ) from exc


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        doc = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise ServerError(
            f"invalid JSON from '{response.request.url}': {exc}", url=str(response.request.url)
        ) from exc
    if not isinstance(doc, dict):
        raise ServerError(
            f"expected a JSON object from '{response.request.url}', got {type(doc).__name__}",
            url=str(response.request.url),
        )
    return doc


def _model(cls: type[pydantic.BaseModel], response: httpx.Response) -> Any:
    try:
        return cls.model_validate(_json(response))
    except pydantic.ValidationError as exc:
        raise ServerError(
            f"unexpected {cls.__name__} from '{response.request.url}': {exc}",
            url=str(response.request.url),
        ) from exc


def _absolute(base_url: str | httpx.URL) -> httpx.URL:
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InvalidInput(f"invalid base url {base_url!r}: {exc}") from exc
    if not url.is_absolute_url:
        raise InvalidInput(f"Base url should not be a relative url: {str(base_url)!r}")
    return url


#: Joined URLs by (base_url, rel): parsing a URL costs more than the rest of a request's own
#: client-side work, and callers send to the same few endpoints over and over.
_URLS: dict[tuple[str | httpx.URL, str], httpx.URL] = {}
_URLS_MAX = 512


def _join(base_url: str | httpx.URL, rel: str) -> httpx.URL:
    key = (base_url, rel)
    url = _URLS.get(key)
    if url is None:
        base = _absolute(base_url)
        path = base.raw_path.split(b"?", 1)[0].decode("ascii").rstrip("/")
        url = base.copy_with(raw_path=f"{path}/{rel}".encode("ascii"))
        if len(_URLS) >= _URLS_MAX:
            _URLS.clear()
        _URLS[key] = url
    return url


def _segment(value: str) -> str:
    return quote(str(value), safe="")
