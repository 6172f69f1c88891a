"""Open Inference Protocol v2 REST endpoints: parse -> :class:`DataPlane` -> render."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from moorage.core.errors import InferenceError, InvalidInput
from moorage.core.protocol import InferRequest, InferResponse
from moorage.core.protocol.rest import HEADER_LENGTH, decode_request, encode_response
from moorage.server.dataplane import DataPlane
from moorage.server.rest._http import RawResponse, json_response, read_body, request_headers

__all__ = ["V2Endpoints", "render_v2"]


def render_v2(result: Any, request: InferRequest | None, extra: dict[str, str]) -> Response:
    """A v2 response body: binary extension when any output is binary, JSON otherwise."""
    if isinstance(result, InferResponse):
        body, json_length = encode_response(result, request=request)
        if json_length is None:
            return RawResponse(body, extra=extra)
        headers = dict(extra)
        headers[HEADER_LENGTH] = str(json_length)
        return RawResponse(body, content_type=b"application/octet-stream", extra=headers)
    if isinstance(result, dict):
        return json_response(result, headers=extra or None)
    raise InferenceError(
        f"model returned {type(result).__name__}; a v2 model must return an InferResponse or dict"
    )


def _header_length(headers: dict[str, str]) -> int | None:
    value = headers.get(HEADER_LENGTH.lower())
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{HEADER_LENGTH} must be an integer, got {value!r}") from None


class V2Endpoints:
    """The v2 routes, bound to one data plane."""

    def __init__(self, dataplane: DataPlane, *, max_body: int) -> None:
        self.dataplane = dataplane
        self.max_body = max_body

    async def infer(self, request: Request) -> Response:
        headers = request_headers(request)
        body = await read_body(request, self.max_body, headers=headers)
        return await self.infer_body(request.path_params, headers, body)

    async def infer_body(
        self, params: dict[str, str], headers: dict[str, str], body: bytes
    ) -> Response:
        """:meth:`infer` for a body already read (within ``max_body``): ``params`` are the
        path's (``model_name``, ``model_version``), ``headers`` as ``request_headers`` makes
        them."""
        name = params["model_name"]
        version = params.get("model_version")
        infer_request = decode_request(
            body, model_name=name, header_length=_header_length(headers), model_version=version
        )
        result, extra = await self.dataplane.infer(
            name, infer_request, headers=headers, version=version
        )
        return render_v2(result, infer_request, extra)

    async def server_metadata(self, request: Request) -> Response:
        return json_response(self.dataplane.server_metadata())

    async def live(self, request: Request) -> Response:
        return json_response({"live": await self.dataplane.live()})

    async def ready(self, request: Request) -> Response:
        ready = await self.dataplane.ready()
        return json_response({"ready": ready}, status_code=200 if ready else 503)

    async def models(self, request: Request) -> Response:
        return json_response({"models": self.dataplane.model_names()})

    async def model_metadata(self, request: Request) -> Response:
        params = request.path_params
        meta = self.dataplane.model_metadata(params["model_name"], params.get("model_version"))
        return json_response(meta)

    async def model_ready(self, request: Request) -> Response:
        name = request.path_params["model_name"]
        ready = await self.dataplane.model_ready(name, request.path_params.get("model_version"))
        return json_response({"name": name, "ready": ready}, status_code=200 if ready else 503)

    async def load(self, request: Request) -> Response:
        name = request.path_params["model_name"]
        return json_response({"name": name, "load": await self.dataplane.load(name)})

    async def unload(self, request: Request) -> Response:
        name = request.path_params["model_name"]
        return json_response({"name": name, "unload": await self.dataplane.unload(name)})

    async def repository_index(self, request: Request) -> Response:
        index = []
        for name, model in self.dataplane.repository.get_models().items():
            entry = {"name": name, "state": "READY" if model.ready else "UNAVAILABLE"}
            if getattr(model, "load_error", None):
                entry["reason"] = model.load_error  # type: ignore[attr-defined]
            index.append(entry)
        return Response(orjson.dumps(index), media_type="application/json")

    def routes(self) -> list[Route]:
        m = "/v2/models/{model_name}"
        mv = "/v2/models/{model_name}/versions/{model_version}"
        return [
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2/models", self.models, methods=["GET"]),
            Route(f"{m}/infer", self.infer, methods=["POST"]),
            Route(f"{mv}/infer", self.infer, methods=["POST"]),
            Route(f"{m}/ready", self.model_ready, methods=["GET"]),
            Route(f"{mv}/ready", self.model_ready, methods=["GET"]),
            Route(m, self.model_metadata, methods=["GET"]),
            Route(mv, self.model_metadata, methods=["GET"]),
            Route("/v2/repository/index", self.repository_index, methods=["POST"]),
            Route("/v2/repository/models/{model_name}/load", self.load, methods=["POST"]),
            Route("/v2/repository/models/{model_name}/unload", self.unload, methods=["POST"]),
        ]
