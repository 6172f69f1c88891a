"""TrainedModel (serving.kserve.io/v1alpha1): a model loaded into a multi-model InferenceService."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from moorage.core.resources._meta import (
    GROUP,
    Addressable,
    Condition,
    Int64,
    KubeModel,
    PrinterColumn,
    Quantity,
    Resource,
    StatusModel,
    age_column,
    ready_column,
)

__all__ = [
    "TrainedModel",
    "TrainedModelSpec",
    "TrainedModelStatus",
    "TrainedModelTarget",
]

_V1ALPHA1 = f"{GROUP}/v1alpha1"


class TrainedModelTarget(KubeModel):
    """``spec.model`` of a TrainedModel."""

    storage_uri: str
    framework: str
    memory: Quantity


class TrainedModelSpec(KubeModel):
    inference_service: str
    model: TrainedModelTarget


class TrainedModelStatus(StatusModel):
    observed_generation: Int64 | None = None
    conditions: list[Condition] | None = None
    annotations: dict[str, str] | None = None
    url: str | None = None
    address: Addressable | None = None


class TrainedModel(Resource):
    """A model loaded into a multi-model InferenceService."""

    API_VERSION: ClassVar[str] = _V1ALPHA1
    KIND: ClassVar[str] = "TrainedModel"
    PLURAL: ClassVar[str] = "trainedmodels"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("tm",)
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="URL", type="string", json_path=".status.url"),
        ready_column(),
        age_column(),
    )

    api_version: Annotated[Literal["serving.kserve.io/v1alpha1"], Field(alias="apiVersion")] = (
        "serving.kserve.io/v1alpha1"
    )
    kind: Literal["TrainedModel"] = "TrainedModel"
    spec: TrainedModelSpec
    status: TrainedModelStatus | None = None
