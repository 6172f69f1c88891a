"""``HotPath``: the inference and health routes as plain ASGI, ahead of the Starlette app.

Inference requests are most of a model server's traffic, and for a small model Starlette's
layers around them (error middleware, the middleware stack, the router's regular expressions,
the per-request exception wrappers) cost more than the parse -> :class:`DataPlane` -> render
they wrap. ``HotPath`` sits in front of the application and serves these routes itself:

- ``POST /v2/models/{model_name}/infer`` (and ``.../versions/{model_version}/infer``);
- ``POST /v1/models/{model_name}:predict`` and ``:explain``;
- ``GET /v2/health/live`` and ``GET /v2/health/ready``.

It matches them with string operations, calls the very same endpoint methods as the Starlette
routes (:class:`~moorage.server.rest.v2.V2Endpoints`, :class:`~moorage.server.rest.v1.V1Endpoints`)
and sends their response in two ASGI messages. The per-request observability is the same
:class:`~moorage.server.access_log.AccessLogMiddleware`'s (request id in, out and in the
context, HTTP metrics labelled with the route template, the access line), called inline;
errors map through :func:`moorage.server.errors.error_response`, as the app's handlers do;
gzip goes through the same :class:`~moorage.server.rest._http.ContentEncodingMiddleware`
logic (Starlette's ``GZipMiddleware``) for the clients that ask for it.

Every other request (other paths, other methods, a ``root_path``) goes to the application
unchanged, and so does everything when the app has middleware ``HotPath`` cannot stand in
for (see :func:`~moorage.server.rest.app.create_app`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moorage.core.errors import MoorageError
from moorage.server.access_log import AccessLogMiddleware
from moorage.server.dataplane import request_id_var
from moorage.server.errors import error_response
from moorage.server.rest.v1 import V1Endpoints
from moorage.server.rest.v2 import V2Endpoints

__all__ = ["HotPath"]

logger = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]

_V2_MODELS = "/v2/models/"
_V1_MODELS = "/v1/models/"
_INFER = "/infer"
_PREDICT = ":predict"
_EXPLAIN = ":explain"
_REQUEST_ID = b"x-request-id"
_ACCEPT_ENCODING = b"accept-encoding"

#: Route templates, as the Starlette routes name them (the ``route`` metrics label).
V2_INFER = "/v2/models/{model_name}/infer"
V2_VERSION_INFER = "/v2/models/{model_name}/versions/{model_version}/infer"
V1_PREDICT = "/v1/models/{model_name}:predict"
V1_EXPLAIN = "/v1/models/{model_name}:explain"
LIVE = "/v2/health/live"
READY = "/v2/health/ready"


class HotPath:
    """ASGI app: the hot routes served directly, anything else passed to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        v2: V2Endpoints,
        v1: V1Endpoints,
        observer: AccessLogMiddleware | None = None,
        gzip_minimum_size: int | None = None,
    ) -> None:
        self.app = app
        self.observer = observer
        self._v2_infer: Endpoint = v2.infer
        self._v1_predict: Endpoint = v1.predict
        self._v1_explain: Endpoint = v1.explain
        self._fixed: dict[tuple[str, str], tuple[Endpoint, str]] = {
            ("GET", LIVE): (v2.live, LIVE),
            ("GET", READY): (v2.ready, READY),
        }
        self._gzip: ASGIApp | None = (
            GZipMiddleware(self._respond, minimum_size=gzip_minimum_size)
            if gzip_minimum_size is not None
            else None
        )

    def match(self, method: str, path: str) -> tuple[Endpoint, str, dict[str, str]] | None:
        """``(endpoint, route template, path params)`` of a hot route, else ``None``.

        Path parameters match what Starlette's ``{name}`` does: one non-empty segment."""
        if method == "POST":
            if path.startswith(_V2_MODELS) and path.endswith(_INFER):
                rest = path[len(_V2_MODELS) : -len(_INFER)]
                if rest and "/" not in rest:
                    return self._v2_infer, V2_INFER, {"model_name": rest}
                parts = rest.split("/")
                if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
                    params = {"model_name": parts[0], "model_version": parts[2]}
                    return self._v2_infer, V2_VERSION_INFER, params
                return None
            if path.startswith(_V1_MODELS):
                if path.endswith(_PREDICT):
                    name = path[len(_V1_MODELS) : -len(_PREDICT)]
                    if name and "/" not in name:
                        return self._v1_predict, V1_PREDICT, {"model_name": name}
                elif path.endswith(_EXPLAIN):
                    name = path[len(_V1_MODELS) : -len(_EXPLAIN)]
                    if name and "/" not in name:
                        return self._v1_explain, V1_EXPLAIN, {"model_name": name}
            return None
        fixed = self._fixed.get((method, path))
        if fixed is None:
            return None
        return fixed[0], fixed[1], {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        found = self.match(scope["method"], scope["path"])
        if found is None:
            await self.app(scope, receive, send)
            return
        endpoint, route, params = found
        scope["path_params"] = params
        scope["moorage.endpoint"] = endpoint
        observer = self.observer
        if observer is None:
            await self._serve(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = observer.request_id(scope)
        status, sent = 500, 0
        headers: list[tuple[bytes, bytes]] = []
        token = request_id_var.set(request_id)
        try:
            status, sent, headers = await self._serve(scope, receive, send, request_id)
        finally:
            request_id_var.reset(token)
            seconds = time.perf_counter() - start
            observer.finish(scope, request_id, route, status, sent, seconds, headers)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, request_id: str | None = None
    ) -> tuple[int, int, list[tuple[bytes, bytes]]]:
        """Answer the request; returns ``(status, body bytes sent, response headers)``."""
        if self._gzip is not None and _wants_gzip(scope["headers"]):
            return await self._serve_gzip(scope, receive, send, request_id)
        response = await self._response(scope, receive)
        headers = response.raw_headers
        if request_id is not None and not _has_request_id(headers):
            headers = [*headers, (_REQUEST_ID, request_id.encode("latin-1"))]
        body = response.body
        status = response.status_code
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return status, len(body), headers

    async def _serve_gzip(
        self, scope: Scope, receive: Receive, send: Send, request_id: str | None
    ) -> tuple[int, int, list[tuple[bytes, bytes]]]:
        status, sent = 500, 0
        headers: list[tuple[bytes, bytes]] = []

        async def observed(message: Message) -> None:
            nonlocal status, sent, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                if request_id is not None and not _has_request_id(headers):
                    headers.append((_REQUEST_ID, request_id.encode("latin-1")))
                message["headers"] = headers
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        assert self._gzip is not None
        await self._gzip(scope, receive, observed)
        return status, sent, headers

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The endpoint's response as an ASGI app (what the gzip wrapper calls)."""
        response = await self._response(scope, receive)
        await response(scope, receive, send)

    async def _response(self, scope: Scope, receive: Receive) -> Response:
        """The endpoint's response, or the error response for what it raised (mapped as the
        application's exception handlers map it)."""
        endpoint: Endpoint = scope["moorage.endpoint"]
        try:
            return await endpoint(Request(scope, receive))
        except (MoorageError, ClientDisconnect) as exc:
            return error_response(exc)  # a disconnected client gets nothing: uvicorn drops it
        except Exception as exc:
            if not isinstance(exc, NotImplementedError):
                logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            return error_response(exc)


def _wants_gzip(headers: list[tuple[bytes, bytes]]) -> bool:
    for key, value in headers:
        if key == _ACCEPT_ENCODING:
            return b"gzip" in value
    return False


def _has_request_id(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(key.lower() == _REQUEST_ID for key, _ in headers)
