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

from moorage.client._config import USE_CLIENT_DEFAULT, RESTConfig, ssl_context
from moorage.client._errors import map_httpx_errors, raise_for_response
from moorage.client._http11 import ConnectionPool, Reply, Route, Timeouts, encode_headers, route_for
from moorage.client._inputs import check_inputs
from moorage.client._version import __version__
from moorage.core.errors import InvalidInput, MoorageError, ServerError, UnsupportedProtocol
from moorage.core.protocol import InferRequest, InferResponse
from moorage.core.protocol.rest import HEADER_LENGTH, decode_response, encode_request
from moorage.core.protocol.schema import ModelMetadataResponse, ServerMetadataResponse

__all__ = ["USE_CLIENT_DEFAULT", "InferenceRESTClient"]

logger = logging.getLogger(__name__)

TimeoutArg = Any  # float | None | httpx.Timeout | USE_CLIENT_DEFAULT
Headers = Mapping[str, str]
Response = httpx.Response | Reply

_JSON = "application/json"
_OCTET = "application/octet-stream"
#: What httpx's client would choose itself on the fast path; ``headers`` override them.
_DEFAULT_HEADERS = {
    "accept": ("Accept", "*/*"),
    "user-agent": ("User-Agent", f"moorage-client/{__version__}"),
}
#: Headers the fast path writes itself (framing) or takes from ``_encode``.
_FRAMING = frozenset({"host", "content-length", "transfer-encoding"})
_PER_CALL = frozenset({"content-type", HEADER_LENGTH}) | _FRAMING


class InferenceRESTClient:
    """Async REST client for any OIP server (moorage, KServe, MLServer, Triton).

    Every method takes the server's ``base_url`` (absolute: ``http://host:port`` or a prefix
    path under it) and raises core's typed errors (:mod:`moorage.core.errors`) for every
    failure: the server's status and message (``ModelNotFound``, ``ModelNotReady``,
    ``InvalidInput``, ``ServerError`` ...), ``Timeout``, ``ConnectionFailed``.

    Use it as an async context manager, or call :meth:`close`.
    """

    def __init__(self, config: RESTConfig | None = None) -> None:
        self._config = config = config or RESTConfig()
        context = None if config.transport is not None else ssl_context(config.verify, config.cert)
        self._client = httpx.AsyncClient(
            transport=config.build_transport(context=context),
            timeout=config.timeout,
            auth=config.auth,
            headers=dict(config.headers or {}),
        )
        # Plain HTTP/1.1 goes through our own pool (moorage.client._http11); httpx keeps
        # HTTP/2, custom transports, auth flows, proxies and cookie-carrying sessions.
        self._pool: ConnectionPool | None = None
        if config.fast_path:
            if context is not None:
                context.set_alpn_protocols(["http/1.1"])
            self._pool = ConnectionPool(
                ssl_context=context, limits=config.limits, retries=config.retries
            )
        self._default_timeouts = _timeouts(config.timeout)
        base = dict(_DEFAULT_HEADERS)
        for name, value in (config.headers or {}).items():
            base[name.lower()] = (name, str(value))
        self._base_headers = base
        self._base_block = encode_headers(v for k, v in base.items() if k not in _FRAMING)
        # config headers that the per-call merge must see (rare): take the general path
        self._merge_always = bool(base.keys() & _PER_CALL)

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
            url = route_for(_absolute(base_url))
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
        if self._pool is not None:
            await self._pool.aclose()
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
        route: Route,
        headers: Headers | None,
        timeout: TimeoutArg,
        *,
        content: bytes | None = None,
        extra: Headers | None = None,
        check: bool = True,
    ) -> Response:
        url = route.url
        if self._config.verbose:
            logger.info("%s %s (%d bytes)", method, url, len(content or b""))
        pool = self._pool
        response: Response
        if (
            pool is not None
            and not pool.closed
            and route.origin[0] in _SCHEMES
            and not self._client.cookies
        ):
            try:
                head = self._head(method, route, headers, content, extra)
                timeouts = (
                    self._default_timeouts if timeout is USE_CLIENT_DEFAULT else _timeouts(timeout)
                )
                response = await pool.request(route, method, head, content or b"", timeouts)
            except httpx.HTTPError as exc:
                with map_httpx_errors(url):
                    raise exc
            if "set-cookie" in response.headers:
                self._client.cookies.extract_cookies(response.to_httpx(method))
            if not response.is_success:
                response = response.to_httpx(method)
        else:
            merged: dict[str, str] = dict(extra or {})
            if headers:
                merged.update(headers)
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
        if check and isinstance(response, httpx.Response):
            raise_for_response(response)
        return response

    def _head(
        self,
        method: str,
        route: Route,
        headers: Headers | None,
        content: bytes | None,
        extra: Headers | None,
    ) -> bytes:
        """The request line and headers, with httpx's precedence: call > body's > config's."""
        host = route.host
        if headers or self._merge_always:
            merged = dict(self._base_headers)
            for source in (extra, headers):
                for name, value in (source or {}).items():
                    merged[name.lower()] = (name, str(value))
            if "host" in merged:
                host = merged["host"][1].encode()
            block = encode_headers(v for k, v in merged.items() if k not in _FRAMING)
        else:
            block = self._base_block + encode_headers((extra or {}).items())
        length = b"" if content is None else b"Content-Length: %d\r\n" % len(content)
        return b"".join(
            (
                method.encode(),
                b" ",
                route.target,
                b" HTTP/1.1\r\nHost: ",
                host,
                b"\r\n",
                block,
                length,
                b"\r\n",
            )
        )

    async def _health(
        self, url: Route, key: str, headers: Headers | None, timeout: TimeoutArg
    ) -> bool:
        response = await self._send("GET", url, headers, timeout, check=False)
        if response.status_code == httpx.codes.SERVICE_UNAVAILABLE:
            return False
        if response.is_client_error and not response.content:
            # OIP: "a 4xx status code indicates false", body empty (MLServer, Triton).
            return False
        if isinstance(response, httpx.Response):
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


def _infer_response(response: Response) -> InferResponse:
    header = response.headers.get(HEADER_LENGTH)
    try:
        length = int(header) if header is not None else None
        return decode_response(response.content, header_length=length)
    except (ValueError, MoorageError) as exc:
        raise ServerError(
            f"invalid inference response from '{response.url}': {exc}",
            url=str(response.url),
        ) from exc


def _json(response: Response) -> dict[str, Any]:
    try:
        doc = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise ServerError(
            f"invalid JSON from '{response.url}': {exc}", url=str(response.url)
        ) from exc
    if not isinstance(doc, dict):
        raise ServerError(
            f"expected a JSON object from '{response.url}', got {type(doc).__name__}",
            url=str(response.url),
        )
    return doc


def _model(cls: type[pydantic.BaseModel], response: Response) -> Any:
    try:
        return cls.model_validate(_json(response))
    except pydantic.ValidationError as exc:
        raise ServerError(
            f"unexpected {cls.__name__} from '{response.url}': {exc}",
            url=str(response.url),
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
_URLS: dict[tuple[str | httpx.URL, str], Route] = {}
_URLS_MAX = 512
_SCHEMES = frozenset({"http", "https"})


def _join(base_url: str | httpx.URL, rel: str) -> Route:
    key = (base_url, rel)
    route = _URLS.get(key)
    if route is None:
        base = _absolute(base_url)
        path = base.raw_path.split(b"?", 1)[0].decode("ascii").rstrip("/")
        route = route_for(base.copy_with(raw_path=f"{path}/{rel}".encode("ascii")))
        if len(_URLS) >= _URLS_MAX:
            _URLS.clear()
        _URLS[key] = route
    return route


def _timeouts(timeout: Any) -> Timeouts:
    t = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
    return (t.connect, t.read, t.write, t.pool)


def _segment(value: str) -> str:
    return quote(str(value), safe="")
