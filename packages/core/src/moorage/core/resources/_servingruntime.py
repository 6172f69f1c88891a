"""ServingRuntime and ClusterServingRuntime (serving.kserve.io/v1alpha1).

A runtime is a pod template (``containers`` must hold one named ``kserve-container``) plus the
model formats and protocol versions it serves; ``{{.Name}}`` in container args is templated with
the InferenceService's metadata when the predictor is rendered.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from moorage.core._generated import k8s
from moorage.core.resources._meta import (
    GROUP,
    Int32,
    KubeModel,
    PrinterColumn,
    ProtocolVersion,
    Resource,
    StatusModel,
    age_column,
)

__all__ = [
    "BuiltInAdapter",
    "ClusterServingRuntime",
    "ServingRuntime",
    "ServingRuntimePodSpec",
    "ServingRuntimeSpec",
    "ServingRuntimeStatus",
    "ServingRuntimeWorkerSpec",
    "StorageHelper",
    "SupportedModelFormat",
]


class SupportedModelFormat(KubeModel):
    name: str
    version: str | None = None
    auto_select: bool | None = None
    priority: Annotated[Int32 | None, Field(ge=1)] = None


class StorageHelper(KubeModel):
    disabled: bool | None = None


class BuiltInAdapter(KubeModel):
    """ModelMesh only: the adapter that talks to the model server."""

    server_type: Literal["triton", "mlserver", "ovms", "torchserve"] | None = None
    runtime_management_port: int | None = None
    mem_buffer_bytes: int | None = None
    model_loading_timeout_millis: int | None = None
    env: list[k8s.EnvVar] | None = None


class ServingRuntimePodSpec(KubeModel):
    """The pod-level part of a runtime (KServe's ServingRuntimePodSpec)."""

    containers: list[k8s.Container]
    volumes: list[k8s.Volume] | None = None
    node_selector: dict[str, str] | None = None
    affinity: k8s.Affinity | None = None
    tolerations: list[k8s.Toleration] | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    image_pull_secrets: list[k8s.LocalObjectReference] | None = None
    host_ipc: Annotated[bool | None, Field(alias="hostIPC")] = None


class ServingRuntimeWorkerSpec(ServingRuntimePodSpec):
    """``workerSpec``: worker pods of a multi-node runtime."""

    size: int | None = None


class ServingRuntimeSpec(ServingRuntimePodSpec):
    supported_model_formats: list[SupportedModelFormat] | None = None
    multi_model: bool | None = None
    disabled: bool | None = None
    protocol_versions: list[ProtocolVersion] | None = None
    worker_spec: ServingRuntimeWorkerSpec | None = None
    # ModelMesh only:
    grpc_endpoint: str | None = None
    grpc_data_endpoint: str | None = None
    http_data_endpoint: str | None = None
    replicas: int | None = None
    storage_helper: StorageHelper | None = None
    built_in_adapter: BuiltInAdapter | None = None

    def container(self, name: str = "kserve-container") -> k8s.Container | None:
        """The container of that name (the model server is ``kserve-container``)."""
        for container in self.containers:
            if container.name == name:
                return container
        return None


class ServingRuntimeStatus(StatusModel):
    """Empty in KServe v0.14."""


_COLUMNS: tuple[PrinterColumn, ...] = (
    PrinterColumn(name="Disabled", type="boolean", json_path=".spec.disabled"),
    PrinterColumn(name="ModelType", type="string", json_path=".spec.supportedModelFormats[*].name"),
    PrinterColumn(name="Containers", type="string", json_path=".spec.containers[*].name"),
    age_column(),
)


class ServingRuntime(Resource):
    """A namespaced model server template."""

    API_VERSION: ClassVar[str] = f"{GROUP}/v1alpha1"
    KIND: ClassVar[str] = "ServingRuntime"
    PLURAL: ClassVar[str] = "servingruntimes"
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = _COLUMNS

    api_version: Annotated[Literal["serving.kserve.io/v1alpha1"], Field(alias="apiVersion")] = (
        "serving.kserve.io/v1alpha1"
    )
    kind: Literal["ServingRuntime"] = "ServingRuntime"
    spec: ServingRuntimeSpec
    status: ServingRuntimeStatus | None = None


class ClusterServingRuntime(Resource):
    """A cluster-wide model server template."""

    API_VERSION: ClassVar[str] = f"{GROUP}/v1alpha1"
    KIND: ClassVar[str] = "ClusterServingRuntime"
    PLURAL: ClassVar[str] = "clusterservingruntimes"
    SCOPE: ClassVar[Literal["Namespaced", "Cluster"]] = "Cluster"
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = _COLUMNS

    api_version: Annotated[Literal["serving.kserve.io/v1alpha1"], Field(alias="apiVersion")] = (
        "serving.kserve.io/v1alpha1"
    )
    kind: Literal["ClusterServingRuntime"] = "ClusterServingRuntime"
    spec: ServingRuntimeSpec
    status: ServingRuntimeStatus | None = None
