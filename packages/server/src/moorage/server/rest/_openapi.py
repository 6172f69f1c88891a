"""The OpenAPI document of the REST routes (served only with ``--enable_docs_url``).

The routes are plain Starlette endpoints (no per-request validation of tensor payloads), so the
document is assembled here from core's pydantic schema models rather than from signatures.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from moorage.core.protocol import schema

__all__ = ["openapi_document"]

#: A v1 model answers any JSON object; ``{"predictions": [...]}`` is only the convention.
_V1_RESULT: dict[str, Any] = {
    "type": "object",
    "description": 'The model\'s result; by convention {"predictions": [...]} or '
    '{"explanations": ...}.',
}

# (method, path, summary, request body model, response model or JSON schema)
_OPERATIONS: list[
    tuple[str, str, str, type[BaseModel] | None, type[BaseModel] | dict[str, Any] | None]
] = [
    ("get", "/", "Server liveness (v1)", None, None),
    ("get", "/v1/models", "List models (v1)", None, schema.ListModelsResponse),
    ("get", "/v1/models/{model_name}", "Model status (v1)", None, schema.V1ModelStatus),
    ("post", "/v1/models/{model_name}:predict", "Predict (v1)", schema.V1PredictRequest,
     _V1_RESULT),
    ("post", "/v1/models/{model_name}:explain", "Explain (v1)", schema.V1PredictRequest,
     _V1_RESULT),
    ("get", "/v2", "Server metadata", None, schema.ServerMetadataResponse),
    ("get", "/v2/health/live", "Server liveness", None, schema.ServerLiveResponse),
    ("get", "/v2/health/ready", "Server readiness", None, schema.ServerReadyResponse),
    ("get", "/v2/models", "List models", None, schema.ListModelsResponse),
    ("get", "/v2/models/{model_name}", "Model metadata", None, schema.ModelMetadataResponse),
    ("get", "/v2/models/{model_name}/versions/{model_version}", "Model version metadata", None,
     schema.ModelMetadataResponse),
    ("get", "/v2/models/{model_name}/ready", "Model readiness", None, schema.ModelReadyResponse),
    ("get", "/v2/models/{model_name}/versions/{model_version}/ready", "Model version readiness",
     None, schema.ModelReadyResponse),
    ("post", "/v2/models/{model_name}/infer", "Inference", schema.InferenceRequestSchema,
     schema.InferenceResponseSchema),
    ("post", "/v2/models/{model_name}/versions/{model_version}/infer", "Inference (version)",
     schema.InferenceRequestSchema, schema.InferenceResponseSchema),
    ("post", "/v2/repository/models/{model_name}/load", "Load a model", None,
     schema.RepositoryLoadResponse),
    ("post", "/v2/repository/models/{model_name}/unload", "Unload a model", None,
     schema.RepositoryUnloadResponse),
]  # fmt: skip

_REF = "#/components/schemas/{model}"


def _ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    if model.__name__ not in components:
        doc = model.model_json_schema(ref_template=_REF)
        components.update(doc.pop("$defs", {}))
        components[model.__name__] = doc
    return {"$ref": _REF.format(model=model.__name__)}


def openapi_document(*, title: str, version: str) -> dict[str, Any]:
    components: dict[str, Any] = {}
    error = _ref(schema.ErrorResponse, components)
    paths: dict[str, Any] = {}
    for method, path, summary, body, response in _OPERATIONS:
        op: dict[str, Any] = {"summary": summary}
        params = [p.strip("{}") for p in path.replace(":", "/").split("/") if p.startswith("{")]
        if params:
            op["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in params
            ]
        if body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(body, components)}},
            }
        ok: dict[str, Any] = {"description": "OK"}
        if isinstance(response, dict):
            ok["content"] = {"application/json": {"schema": response}}
        elif response is not None:
            ok["content"] = {"application/json": {"schema": _ref(response, components)}}
        op["responses"] = {
            "200": ok,
            "default": {
                "description": "Error",
                "content": {"application/json": {"schema": error}},
            },
        }
        if path.endswith("/ready") and response is not None:
            # Readiness answers 503 with the same body (``"ready": false``) when not ready.
            op["responses"]["503"] = {"description": "Not ready", "content": ok["content"]}
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": components},
    }
