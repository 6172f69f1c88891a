"""OpenAI-compatible REST routes: parse -> :class:`OpenAIDataPlane` -> render.

Served under ``/openai/v1`` (KServe's prefix) and ``/v1`` (vLLM's): ``POST completions``,
``POST chat/completions`` (``stream``: Server-Sent Events, ``data: {chunk}`` ... ``data:
[DONE]``), ``POST embeddings``, ``GET models`` and ``GET models/{model}``. ``GET /v1/models``
and ``/v1/models/{name}`` stay OIP v1's routes (KServe's); ``GET /v1/models`` carries OpenAI's
list (``object``, ``data``) beside KServe's ``models`` so both kinds of client read it.

Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: 400 for a bad
body, parameter, role or prompt length, 404 for an unknown model, 429 when the model's queue
is full (OIP answers 503 there), 503 for a model not ready. An error after a stream started is
sent as one ``data: {"error": ...}`` event before ``[DONE]``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from moorage.core.errors import InvalidInput, MoorageError, Overloaded
from moorage.server.errors import to_moorage_error
from moorage.server.openai import OpenAIDataPlane
from moorage.server.rest._http import json_response, read_body

__all__ = ["OpenAIEndpoints", "openai_error"]

logger = logging.getLogger(__name__)

PREFIXES = ("/openai/v1", "/v1")
Endpoint = Callable[[Any, Request], Awaitable[Response]]


def openai_error(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` in OpenAI's error shape for any exception."""
    error = to_moorage_error(exc)
    status = HTTPStatus.TOO_MANY_REQUESTS if isinstance(error, Overloaded) else error.status
    kind = {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_error"}
    body = {
        "message": error.message,
        "type": kind.get(int(status), "server_error" if status >= 500 else "invalid_request_error"),
        "param": error.details.get("param"),
        "code": error.code,
    }
    return int(status), {"error": body}


def _openai_errors(endpoint: Endpoint) -> Endpoint:
    @functools.wraps(endpoint)
    async def wrapper(self: Any, request: Request) -> Response:
        try:
            return await endpoint(self, request)
        except Exception as exc:
            if not isinstance(exc, MoorageError):
                logger.exception("OpenAI route %s failed", request.url.path)
            status, body = openai_error(exc)
            return json_response(body, status_code=status)

    return wrapper


async def _sse(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    except Exception as exc:
        logger.warning("stream failed: %s", exc)
        yield b"data: " + orjson.dumps(openai_error(exc)[1]) + b"\n\n"
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    yield b"data: [DONE]\n\n"


def _render(result: dict[str, Any] | AsyncIterator[dict[str, Any]]) -> Response:
    if isinstance(result, dict):
        return json_response(result)
    return StreamingResponse(
        _sse(result), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


class OpenAIEndpoints:
    """The OpenAI routes, bound to one OpenAI data plane."""

    def __init__(self, plane: OpenAIDataPlane, *, max_body: int) -> None:
        self.plane = plane
        self.max_body = max_body

    async def _json(self, request: Request) -> Any:
        body = await read_body(request, self.max_body)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"the request body is not valid JSON: {exc}") from None

    @_openai_errors
    async def completions(self, request: Request) -> Response:
        from moorage.server.openai import _schema  # pydantic, on the first call

        body = _schema.parse(_schema.CompletionRequest, await self._json(request))
        return _render(await self.plane.completion(body))

    @_openai_errors
    async def chat_completions(self, request: Request) -> Response:
        from moorage.server.openai import _schema  # pydantic, on the first call

        body = _schema.parse(_schema.ChatRequest, await self._json(request))
        return _render(await self.plane.chat(body))

    @_openai_errors
    async def embeddings(self, request: Request) -> Response:
        from moorage.server.openai import _schema  # pydantic, on the first call

        body = _schema.parse(_schema.EmbeddingRequest, await self._json(request))
        return json_response(await self.plane.embeddings(body))

    @_openai_errors
    async def models(self, request: Request) -> Response:
        return json_response(self.plane.models())

    @_openai_errors
    async def model(self, request: Request) -> Response:
        return json_response(self.plane.model(request.path_params["model"]))

    def routes(self) -> list[Route]:
        routes = []
        for prefix in PREFIXES:
            routes += [
                Route(f"{prefix}/completions", self.completions, methods=["POST"]),
                Route(f"{prefix}/chat/completions", self.chat_completions, methods=["POST"]),
                Route(f"{prefix}/embeddings", self.embeddings, methods=["POST"]),
            ]
        routes += [
            Route("/openai/v1/models", self.models, methods=["GET"]),
            Route("/openai/v1/models/{model:path}", self.model, methods=["GET"]),
        ]
        return routes
