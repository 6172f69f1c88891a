"""HTTP plumbing shared by the v1 and v2 endpoints: bounded body reads, JSON responses, gzip."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from moorage.core.errors import InvalidInput, PayloadTooLarge

__all__ = [
    "ContentEncodingMiddleware",
    "RawResponse",
    "header_dict",
    "json_response",
    "read_body",
    "request_headers",
]

_JSON = "application/json"
_CONTENT_LENGTH = b"content-length"
_CONTENT_TYPE = b"content-type"


def request_headers(request: Request) -> dict[str, str]:
    """The request's headers as the dict the data plane passes to the model: lower-case names
    (as the ASGI server gives them), the first value of a repeated header (as Starlette's
    ``dict(request.headers)``), in one pass over the raw list."""
    return header_dict(request.scope["headers"])


def header_dict(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """:func:`request_headers` of an ASGI scope's header list."""
    headers: dict[str, str] = {}
    for key, value in raw:
        name = key.decode("latin-1")
        if name not in headers:
            headers[name] = value.decode("latin-1")
    return headers


class RawResponse(Response):
    """A ``Response`` whose header list is built directly: ``content-length``, then
    ``content-type``, then ``extra`` (skipping Starlette's header normalisation, which the
    hot routes pay per request)."""

    def __init__(
        self,
        body: bytes,
        *,
        status_code: int = 200,
        content_type: bytes = b"application/json",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        headers = [(_CONTENT_LENGTH, b"%d" % len(body)), (_CONTENT_TYPE, content_type)]
        if extra:
            for key, value in extra.items():
                name = key.lower().encode("latin-1")
                if name in (_CONTENT_LENGTH, _CONTENT_TYPE):
                    headers = [h for h in headers if h[0] != name]
                headers.append((name, value.encode("latin-1")))
        self.raw_headers = headers


async def read_body(
    request: Request, limit: int, *, headers: dict[str, str] | None = None
) -> bytes:
    """The request body, refused with :class:`PayloadTooLarge` (413) past ``limit`` bytes.
    ``headers``: the request's headers as :func:`request_headers` gave them, when at hand."""
    declared = (headers if headers is not None else request.headers).get("content-length")
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
