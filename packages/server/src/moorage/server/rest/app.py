"""``create_app``: the ASGI application serving OIP v1 and v2 over one :class:`DataPlane`.

The routes are plain Starlette endpoints (no dependency injection or pydantic on tensor
payloads). The application is a plain ``Starlette`` one unless ``enable_docs_url`` asks for
``/docs`` and ``/openapi.json``: then it is a ``FastAPI`` app, imported only then (FastAPI and
its pydantic models cost about half a second of start-up). In front of its middleware stack,
:class:`~moorage.server.rest.hotpath.HotPath` serves the inference and health routes without
Starlette's layers, with the same endpoints, observability and error mapping; it stands aside
(everything goes through Starlette) when the app has middleware or exception handlers it does
not know. Hook points for later features:

- ``app.state.dataplane.hooks``: per-inference hooks (metrics, inference logger);
- ``create_app(..., routers=[...])``: extra ``APIRouter`` slices (``/metrics``, OpenAI routes);
- ``create_app(..., middleware=[...])``: extra ASGI middleware (access logs, tracing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Router

from moorage.server._version import __version__
from moorage.server.access_log import AccessLogMiddleware
from moorage.server.dataplane import DataPlane
from moorage.server.errors import install_exception_handlers
from moorage.server.openai import OpenAIDataPlane
from moorage.server.rest._http import ContentEncodingMiddleware
from moorage.server.rest.hotpath import HotPath
from moorage.server.rest.openai import OpenAIEndpoints
from moorage.server.rest.v1 import V1Endpoints
from moorage.server.rest.v2 import V2Endpoints

__all__ = ["DEFAULT_MAX_BODY", "create_app"]

DEFAULT_MAX_BODY = 128 * 1024 * 1024
TITLE = "Moorage ModelServer"


def create_app(
    dataplane: DataPlane,
    *,
    enable_docs_url: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    gzip: bool = True,
    routers: Sequence[Router] = (),
    middleware: Sequence[Middleware] = (),
) -> Starlette:
    """The REST application for ``dataplane``. ``routers`` (Starlette ``Router`` or FastAPI
    ``APIRouter``) add their routes after the built-in ones."""
    stack = list(middleware)
    if gzip:
        stack.append(Middleware(ContentEncodingMiddleware))
    openai = OpenAIDataPlane(dataplane)
    v2 = V2Endpoints(dataplane, max_body=max_body_bytes)
    v1 = V1Endpoints(dataplane, max_body=max_body_bytes, listing=openai.models)
    routes: list[BaseRoute] = [*v2.routes(), *v1.routes()]
    # Starlette matches routes in order: inference first keeps the hot path's lookup short.
    routes.sort(key=lambda route: not getattr(route, "path", "").endswith(("/infer", ":predict")))
    routes.extend(OpenAIEndpoints(openai, max_body=max_body_bytes).routes())
    for router in routers:
        routes.extend(router.routes)
    if enable_docs_url:
        app = _docs_app(routes, stack)
    else:
        app = Starlette(routes=routes, middleware=stack)
    app.state.dataplane = dataplane
    install_exception_handlers(app)
    _install_hot_path(app, v2, v1)
    return app


#: Middleware whose work :class:`HotPath` does itself, for the routes it serves.
_KNOWN_MIDDLEWARE = (AccessLogMiddleware, ContentEncodingMiddleware)


def _install_hot_path(app: Starlette, v2: V2Endpoints, v1: V1Endpoints) -> None:
    """Put :class:`HotPath` in front of ``app``'s middleware stack, when it is built (on the
    first request), unless by then the app has middleware or exception handlers that HotPath
    does not stand in for: then every request goes through Starlette."""
    handlers = dict(app.exception_handlers)
    build = app.build_middleware_stack

    def build_middleware_stack() -> Any:
        stack = build()
        middleware = app.user_middleware
        if app.exception_handlers != handlers or any(
            m.cls not in _KNOWN_MIDDLEWARE for m in middleware
        ):
            return stack
        observer = None
        gzip_minimum_size = None
        for m in middleware:
            kwargs: dict[str, Any] = dict(m.kwargs)
            if m.cls is AccessLogMiddleware:
                observer = AccessLogMiddleware(stack, *m.args, **kwargs)
            else:
                gzip_minimum_size = int(kwargs.get("minimum_size", 1024))
        return HotPath(stack, v2=v2, v1=v1, observer=observer, gzip_minimum_size=gzip_minimum_size)

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


def _docs_app(routes: list[BaseRoute], middleware: list[Middleware]) -> Starlette:
    from fastapi import FastAPI

    app = FastAPI(
        title=TITLE,
        version=__version__,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        middleware=middleware,
    )
    app.router.routes[:0] = routes

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            # Imported on first use: the schema models cost start-up time.
            from moorage.server.rest._openapi import openapi_document

            app.openapi_schema = openapi_document(title=TITLE, version=__version__)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
