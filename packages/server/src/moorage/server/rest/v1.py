"""OIP v1 (KServe / TF-Serving style) REST endpoints: parse -> :class:`DataPlane` -> render."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from moorage.core.errors import ModelNotReady
from moorage.core.protocol import InferResponse
from moorage.core.protocol.v1 import decode_v1_request, encode_v1_response
from moorage.server.dataplane import DataPlane, Verb
from moorage.server.rest._http import RawResponse, json_response, read_body, request_headers
from moorage.server.rest.v2 import render_v2

__all__ = ["V1Endpoints"]

#: Content types whose bodies are decoded as JSON (KServe's list, plus what curl ``-d`` and
#: plain-text clients send); bodies of any other type reach the model as raw bytes.
JSON_TYPES = frozenset(
    {
        "application/json",
        "application/cloudevents+json",
        "application/ld+json",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
        "text/plain",
    }
)


def _is_json(headers: dict[str, str]) -> bool:
    content_type = headers.get("content-type")
    if not content_type:
        return True
    return content_type.split(";", 1)[0].strip().lower() in JSON_TYPES


def render_v1(result: Any, headers: dict[str, str]) -> Response:
    if isinstance(result, InferResponse):
        return render_v2(result, None, headers)
    if isinstance(result, bytes | str):
        return Response(result, headers=headers or None)
    return RawResponse(encode_v1_response(result), extra=headers)


class V1Endpoints:
    """The v1 routes, bound to one data plane."""

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        max_body: int,
        listing: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.dataplane = dataplane
        self.max_body = max_body
        self.listing = listing

    async def _run(self, request: Request, verb: Verb) -> Response:
        headers = request_headers(request)
        body = await read_body(request, self.max_body, headers=headers)
        return await self._run_body(request.path_params, headers, body, verb)

    async def predict_body(
        self, params: dict[str, str], headers: dict[str, str], body: bytes
    ) -> Response:
        """:meth:`predict` for a body already read (within ``max_body``)."""
        return await self._run_body(params, headers, body, "predict")

    async def _run_body(
        self, params: dict[str, str], headers: dict[str, str], body: bytes, verb: Verb
    ) -> Response:
        name = params["model_name"]
        payload: Any = decode_v1_request(body) if _is_json(headers) else body
        result, extra = await self.dataplane.infer(
            name, payload, headers=headers, verb=verb, protocol="v1"
        )
        return render_v1(result, extra)

    async def predict(self, request: Request) -> Response:
        return await self._run(request, "predict")

    async def explain(self, request: Request) -> Response:
        return await self._run(request, "explain")

    async def root(self, request: Request) -> Response:
        return json_response({"status": "alive"})

    async def models(self, request: Request) -> Response:
        """KServe's ``{"models": [names]}``; with ``listing``, OpenAI's model list in the same
        body (``object``, ``data``), since vLLM's clients read ``GET /v1/models`` too."""
        body: dict[str, Any] = {"models": self.dataplane.model_names()}
        if self.listing is not None:
            body.update(self.listing())
        return json_response(body)

    async def model_status(self, request: Request) -> Response:
        name = request.path_params["model_name"]
        if not await self.dataplane.model_ready(name):
            raise ModelNotReady(f"Model with name {name} is not ready.", model=name)
        return json_response({"name": name, "ready": True})

    def routes(self) -> list[Route]:
        return [
            Route("/", self.root, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model_name}:predict", self.predict, methods=["POST"]),
            Route("/v1/models/{model_name}:explain", self.explain, methods=["POST"]),
            Route("/v1/models/{model_name}", self.model_status, methods=["GET"]),
        ]
