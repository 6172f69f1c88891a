"""HTTP plumbing shared by the v1 and v2 endpoints: bounded body reads, JSON responses, gzip."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from moorage.core.errors import InvalidInput, PayloadTooLarge

__all__ = ["ContentEncodingMiddleware", "json_response", "read_body"]

_JSON = "application/json"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with :class:`PayloadTooLarge` (413) past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidInput(f"invalid Content-Length header {declared!r}") from None
        if size > limit:
            raise PayloadTooLarge(
                f"request body of {size} bytes exceeds the limit of {limit} bytes "
                "(--max_request_body_bytes)"
            )
        return await request.body()
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(
                f"request body exceeds the limit of {limit} bytes (--max_request_body_bytes)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status_code,
        media_type=_JSON,
        headers=headers,
    )


class ContentEncodingMiddleware:
    """gzip responses for clients that send ``Accept-Encoding: gzip``; others skip it entirely.

    Starlette's ``GZipMiddleware`` wraps ``send`` for every request; this sends only the requests
    that asked for gzip through it, so the common uncompressed path pays one header scan.
    """

    def __init__(self, app: ASGIApp, *, minimum_size: int = 1024) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for key, value in scope["headers"]:
                if key == b"accept-encoding":
                    if b"gzip" in value:
                        await self.gzip(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)
