"""InferenceGraph (serving.kserve.io/v1alpha1): routers chaining InferenceServices."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from moorage.core._generated import k8s
from moorage.core.resources._meta import (
    GROUP,
    Condition,
    Int64,
    KubeModel,
    PrinterColumn,
    Resource,
    StatusModel,
    age_column,
    ready_column,
)

__all__ = [
    "InferenceGraph",
    "InferenceGraphSpec",
    "InferenceGraphStatus",
    "InferenceRouter",
    "InferenceStep",
]

_V1ALPHA1 = f"{GROUP}/v1alpha1"


class InferenceStep(KubeModel):
    """One step of a router: a target (node, service or URL) and how it is called."""

    name: str | None = None
    node_name: str | None = None
    service_name: str | None = None
    service_url: str | None = None
    data: str | None = None
    weight: Int64 | None = None
    condition: str | None = None
    dependency: Literal["Soft", "Hard"] | None = None


class InferenceRouter(KubeModel):
    router_type: Literal["Sequence", "Splitter", "Ensemble", "Switch"]
    steps: list[InferenceStep] | None = None


class InferenceGraphSpec(KubeModel):
    nodes: dict[str, InferenceRouter]
    resources: k8s.ResourceRequirements | None = None
    affinity: k8s.Affinity | None = None
    timeout: Int64 | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    scale_target: int | None = None
    scale_metric: Literal["cpu", "memory", "concurrency", "rps"] | None = None


class InferenceGraphStatus(StatusModel):
    observed_generation: Int64 | None = None
    conditions: list[Condition] | None = None
    annotations: dict[str, str] | None = None
    url: str | None = None


class InferenceGraph(Resource):
    """A graph of InferenceServices behind one router."""

    API_VERSION: ClassVar[str] = _V1ALPHA1
    KIND: ClassVar[str] = "InferenceGraph"
    PLURAL: ClassVar[str] = "inferencegraphs"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ig",)
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="URL", type="string", json_path=".status.url"),
        ready_column(),
        age_column(),
    )

    api_version: Annotated[Literal["serving.kserve.io/v1alpha1"], Field(alias="apiVersion")] = (
        "serving.kserve.io/v1alpha1"
    )
    kind: Literal["InferenceGraph"] = "InferenceGraph"
    spec: InferenceGraphSpec
    status: InferenceGraphStatus | None = None
