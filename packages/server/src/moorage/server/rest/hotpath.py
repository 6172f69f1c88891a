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

:meth:`HotPath.direct` serves moorage-server's own HTTP/1.1 protocol
(:mod:`moorage.server.http1`) without ASGI for the commonest requests, v2 infer and v1
predict with a ``Content-Length`` body: the body is read whole, the endpoint's body-level
method answers (``infer_body``, ``predict_body``), observed as above, and the protocol writes
the head and body at once. What that path leaves out, it declines, and the request goes
through ``__call__`` as before: chunked or over-limit bodies, ``Expect``, ``X-Forwarded-*`` /
``Forwarded`` (uvicorn's proxy-headers middleware reads those), gzip, a ``root_path``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moorage.core.errors import MoorageError
from moorage.server.access_log import AccessLogMiddleware
from moorage.server.dataplane import request_id_var
from moorage.server.errors import error_response
from moorage.server.rest._http import header_dict
from moorage.server.rest.v1 import V1Endpoints
from moorage.server.rest.v2 import V2Endpoints

__all__ = ["HotPath"]

logger = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]
_T = TypeVar("_T")
#: An endpoint's body-level method: ``(path params, headers, body) -> Response``.
BodyEndpoint = Callable[[dict[str, str], dict[str, str], bytes], Awaitable[Response]]
#: A response as the HTTP/1.1 protocol writes it: ``(status, headers, body)``.
Answer = tuple[int, list[tuple[bytes, bytes]], "bytes | memoryview"]
#: What :meth:`HotPath.direct` hands the server: the request's body -> its :data:`Answer`.
DirectAnswer = Callable[[bytes], Awaitable[Answer]]

_V2_MODELS = "/v2/models/"
_V1_MODELS = "/v1/models/"
_INFER = "/infer"
_PREDICT = ":predict"
_EXPLAIN = ":explain"
_REQUEST_ID = b"x-request-id"
_ACCEPT_ENCODING = b"accept-encoding"
_CONTENT_LENGTH = b"content-length"
#: Request headers that send a hot route through ASGI after all (see the module docstring).
_DECLINED = frozenset({b"transfer-encoding", b"expect", b"forwarded"})

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
        self._by_body: dict[Endpoint, BodyEndpoint] = {
            self._v2_infer: v2.infer_body,
            self._v1_predict: v1.predict_body,
        }
        self._max_body = min(v2.max_body, v1.max_body)
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
        if self.observer is None:
            await self._serve(scope, receive, send)
            return

        async def serve(request_id: str) -> tuple[int, int, list[tuple[bytes, bytes]], None]:
            return *(await self._serve(scope, receive, send, request_id)), None

        await self._observed(scope, route, serve)

    async def _observed(
        self,
        scope: Scope,
        route: str,
        serve: Callable[[str], Awaitable[tuple[int, int, list[tuple[bytes, bytes]], _T]]],
    ) -> _T:
        """``serve(request id)``'s result, observed: the request id in the context, then the
        metrics and access line of its ``(status, body bytes, response headers)``."""
        observer = self.observer
        assert observer is not None
        start = time.perf_counter()
        request_id = observer.request_id(scope)
        status, sent = 500, 0
        headers: list[tuple[bytes, bytes]] = []
        token = request_id_var.set(request_id)
        try:
            status, sent, headers, result = await serve(request_id)
            return result
        finally:
            request_id_var.reset(token)
            seconds = time.perf_counter() - start
            observer.finish(scope, request_id, route, status, sent, seconds, headers)

    def direct(self, scope: Scope) -> DirectAnswer | None:
        """For the HTTP/1.1 protocol, before it reads the body: the function answering this
        request from its whole body, or ``None`` when it goes through ASGI."""
        if scope["method"] != "POST" or scope.get("root_path"):
            return None
        found = self.match("POST", scope["path"])
        if found is None:
            return None
        endpoint, route, params = found
        by_body = self._by_body.get(endpoint)
        if by_body is None:
            return None
        length = -1
        gzip = self._gzip is not None
        for key, value in scope["headers"]:
            if key == _CONTENT_LENGTH:
                if length >= 0 or not value.isdigit():
                    return None
                length = int(value)
            elif (
                key in _DECLINED
                or key.startswith(b"x-forwarded-")
                or (gzip and key == _ACCEPT_ENCODING and b"gzip" in value)
            ):
                return None
        if not 0 <= length <= self._max_body:
            return None

        async def answer(body: bytes) -> Answer:
            return await self._answer(scope, by_body, route, params, body)

        return answer

    async def _answer(
        self,
        scope: Scope,
        endpoint: BodyEndpoint,
        route: str,
        params: dict[str, str],
        body: bytes,
    ) -> Answer:
        if self.observer is None:
            response = await _mapped(scope, endpoint(params, header_dict(scope["headers"]), body))
            return response.status_code, response.raw_headers, response.body

        async def serve(request_id: str) -> tuple[int, int, list[tuple[bytes, bytes]], Answer]:
            response = await _mapped(scope, endpoint(params, header_dict(scope["headers"]), body))
            headers = _with_request_id(response.raw_headers, request_id)
            status, out = response.status_code, response.body
            return status, len(out), headers, (status, headers, out)

        return await self._observed(scope, route, serve)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, request_id: str | None = None
    ) -> tuple[int, int, list[tuple[bytes, bytes]]]:
        """Answer the request; returns ``(status, body bytes sent, response headers)``."""
        if self._gzip is not None and _wants_gzip(scope["headers"]):
            return await self._serve_gzip(scope, receive, send, request_id)
        response = await self._response(scope, receive)
        headers = response.raw_headers
        if request_id is not None:
            headers = _with_request_id(headers, request_id)
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
                if request_id is not None:
                    headers = _with_request_id(headers, request_id)
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
        return await _mapped(scope, endpoint(Request(scope, receive)))


async def _mapped(scope: Scope, answer: Awaitable[Response]) -> Response:
    """``answer``'s response, or the error response for what it raised (mapped as the
    application's exception handlers map it)."""
    try:
        return await answer
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


def _with_request_id(
    headers: list[tuple[bytes, bytes]], request_id: str
) -> list[tuple[bytes, bytes]]:
    """``headers`` with ``x-request-id: request_id`` added, unless they carry one."""
    if any(key.lower() == _REQUEST_ID for key, _ in headers):
        return headers
    return [*headers, (_REQUEST_ID, request_id.encode("latin-1"))]
