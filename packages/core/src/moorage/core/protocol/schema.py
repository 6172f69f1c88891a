"""Pydantic models of the OIP REST bodies that are not tensor payloads, plus the request and
response shapes for OpenAPI documentation.

Tensor payloads on the hot path go through :mod:`moorage.core.protocol.rest`, not through these
models; these describe the schema (docs, metadata, health, errors).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from moorage.core.protocol._datatypes import Datatype

__all__ = [
    "ErrorResponse",
    "InferenceRequestSchema",
    "InferenceResponseSchema",
    "ListModelsResponse",
    "MetadataTensor",
    "ModelMetadataResponse",
    "ModelReadyResponse",
    "RepositoryLoadResponse",
    "RepositoryUnloadResponse",
    "RequestInputSchema",
    "RequestOutputSchema",
    "ResponseOutputSchema",
    "ServerLiveResponse",
    "ServerMetadataResponse",
    "ServerReadyResponse",
    "V1ModelStatus",
    "V1PredictRequest",
    "V1PredictResponse",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class ErrorResponse(_Model):
    """Every error body: ``{"error": "<message>"}`` as KServe sends, plus moorage's stable code."""

    error: str
    code: str | None = None


class ServerLiveResponse(_Model):
    live: bool


class ServerReadyResponse(_Model):
    ready: bool


class ModelReadyResponse(_Model):
    name: str
    ready: bool


class ServerMetadataResponse(_Model):
    name: str
    version: str
    extensions: list[str] = Field(default_factory=list)


class MetadataTensor(_Model):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(_Model):
    name: str
    versions: list[str] | None = None
    platform: str = ""
    inputs: list[MetadataTensor] = Field(default_factory=list)
    outputs: list[MetadataTensor] = Field(default_factory=list)


class ListModelsResponse(_Model):
    models: list[str]


class RepositoryLoadResponse(_Model):
    name: str
    load: bool


class RepositoryUnloadResponse(_Model):
    name: str
    unload: bool


class V1ModelStatus(_Model):
    """``GET /v1/models/{name}``."""

    name: str
    ready: bool


class V1PredictRequest(_Model):
    """``POST /v1/models/{name}:predict``: ``instances`` (row list) or ``inputs``."""

    instances: list[Any] | None = None
    inputs: Any = None


class V1PredictResponse(_Model):
    predictions: list[Any]


class RequestInputSchema(_Model):
    name: str
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    #: Flat or nested (row-major) list; a bare scalar counts as a one-element list.
    data: list[Any] | bool | float | str | None = None


class RequestOutputSchema(_Model):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequestSchema(_Model):
    """``POST /v2/models/{name}/infer`` (JSON form; see the binary extension for the other)."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInputSchema]
    outputs: list[RequestOutputSchema] | None = None


class ResponseOutputSchema(_Model):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferenceResponseSchema(_Model):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutputSchema]
