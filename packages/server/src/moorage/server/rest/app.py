"""``create_app``: the FastAPI application serving OIP v1 and v2 over one :class:`DataPlane`.

The inference routes are plain Starlette endpoints on the FastAPI app (no dependency injection
or pydantic on tensor payloads). Hook points for later features:

- ``app.state.dataplane.hooks``: per-inference hooks (metrics, inference logger);
- ``create_app(..., routers=[...])``: extra ``APIRouter`` slices (``/metrics``, OpenAI routes);
- ``create_app(..., middleware=[...])``: extra ASGI middleware (access logs, tracing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.middleware import Middleware

from moorage.server._version import __version__
from moorage.server.dataplane import DataPlane
from moorage.server.errors import install_exception_handlers
from moorage.server.rest._http import ContentEncodingMiddleware
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
    routers: Sequence[APIRouter] = (),
    middleware: Sequence[Middleware] = (),
) -> FastAPI:
    """The REST application for ``dataplane``."""
    stack = list(middleware)
    if gzip:
        stack.append(Middleware(ContentEncodingMiddleware))
    app = FastAPI(
        title=TITLE,
        version=__version__,
        docs_url="/docs" if enable_docs_url else None,
        redoc_url=None,
        openapi_url="/openapi.json" if enable_docs_url else None,
        middleware=stack,
    )
    app.state.dataplane = dataplane
    for router in routers:
        app.include_router(router)
    routes = [
        *V2Endpoints(dataplane, max_body=max_body_bytes).routes(),
        *V1Endpoints(dataplane, max_body=max_body_bytes).routes(),
    ]
    # Starlette matches routes in order: inference first keeps the hot path's lookup short.
    routes.sort(key=lambda route: not route.path.endswith(("/infer", ":predict")))
    app.router.routes[:0] = routes
    install_exception_handlers(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            # Imported on first use: the schema models cost start-up time docs-less servers skip.
            from moorage.server.rest._openapi import openapi_document

            app.openapi_schema = openapi_document(title=TITLE, version=__version__)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
