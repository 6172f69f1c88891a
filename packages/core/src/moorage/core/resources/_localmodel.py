"""The local model cache kinds of KServe v0.14.1 (serving.kserve.io/v1alpha1).

``LocalModelCache`` names a model (``sourceModelUri``) to keep on the nodes of one
``LocalModelNodeGroup``; the cache controller writes one ``LocalModelNode`` per node and the node
agent reports each download in its status. (v0.14.0's ``ClusterLocalModel`` is not modelled.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from moorage.core._generated import k8s
from moorage.core.resources._meta import (
    GROUP,
    Condition,
    Int64,
    KubeModel,
    PrinterColumn,
    Quantity,
    Resource,
    StatusModel,
    age_column,
)

__all__ = [
    "LocalModelCache",
    "LocalModelCacheSpec",
    "LocalModelCacheStatus",
    "LocalModelInfo",
    "LocalModelNode",
    "LocalModelNodeGroup",
    "LocalModelNodeGroupSpec",
    "LocalModelNodeGroupStatus",
    "LocalModelNodeSpec",
    "LocalModelNodeStatus",
    "ModelCopies",
    "ModelDetail",
    "ModelDownloadStatus",
    "NamespacedName",
    "NodeStatus",
    "matching_cache",
]

_V1ALPHA1 = f"{GROUP}/v1alpha1"

#: Per-node state of a cached model, as the cache controller reports it.
NodeStatus = Literal[
    "NodeNotReady", "NodeDownloadPending", "NodeDownloading", "NodeDownloaded", "NodeDownloadError"
]
#: Per-model state on one node, as the node agent reports it.
ModelDownloadStatus = Literal[
    "ModelDownloadPending", "ModelDownloading", "ModelDownloaded", "ModelDownloadError"
]

#: How a node agent's model status reads in the cache's node status.
NODE_STATUS_FOR: dict[str, str] = {
    "ModelDownloadPending": "NodeDownloadPending",
    "ModelDownloading": "NodeDownloading",
    "ModelDownloaded": "NodeDownloaded",
    "ModelDownloadError": "NodeDownloadError",
}


class LocalModelCacheSpec(KubeModel):
    #: Immutable, enforced by the API server through a CEL rule (as KServe's CRD does).
    source_model_uri: Annotated[
        str,
        Field(
            json_schema_extra={
                "x-kubernetes-validations": [
                    {"rule": "self == oldSelf", "message": "StorageUri is immutable"}
                ]
            }
        ),
    ]
    model_size: Quantity
    node_groups: Annotated[list[str], Field(min_length=1, max_length=1)]


class ModelCopies(StatusModel):
    available: int | None = None
    total: int | None = None
    failed: int | None = None


class NamespacedName(StatusModel):
    namespace: str | None = None
    name: str | None = None


class LocalModelCacheStatus(StatusModel):
    node_status: dict[str, NodeStatus] | None = None
    copies: ModelCopies | None = None
    inference_services: list[NamespacedName] | None = None
    #: A moorage extension: ``Ready`` (reason ``Downloaded``, ``Downloading``, ``DownloadError``,
    #: ``NoNodes`` or ``DuplicateSourceModelUri``) and ``DeletionBlocked`` while in use.
    conditions: list[Condition] | None = None


class LocalModelCache(Resource):
    API_VERSION: ClassVar[str] = _V1ALPHA1
    KIND: ClassVar[str] = "LocalModelCache"
    PLURAL: ClassVar[str] = "localmodelcaches"
    SCOPE: ClassVar[Literal["Namespaced", "Cluster"]] = "Cluster"
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="URI", type="string", json_path=".spec.sourceModelUri"),
        PrinterColumn(name="Size", type="string", json_path=".spec.modelSize"),
        PrinterColumn(name="Available", type="integer", json_path=".status.copies.available"),
        PrinterColumn(name="Total", type="integer", json_path=".status.copies.total"),
        age_column(),
    )

    api_version: Annotated[Literal["serving.kserve.io/v1alpha1"], Field(alias="apiVersion")] = (
        "serving.kserve.io/v1alpha1"
    )
    kind: Literal["LocalModelCache"] = "LocalModelCache"
    spec: LocalModelCacheSpec
    status: LocalModelCacheStatus | None = None

    def matches(self, storage_uri: str) -> bool:
        """Whether an InferenceService with that storage URI uses this cache (prefix match)."""
        return storage_uri.startswith(self.spec.source_model_uri)


def matching_cache(storage_uri: str, sources: Mapping[str, str]) -> str | None:
    """The LocalModelCache an InferenceService with ``storage_uri`` picks up, or None.

    ``sources`` maps each cache's name to its ``sourceModelUri``. The first cache by name whose
    source is a plain string prefix of ``storage_uri`` wins: KServe's webhook takes the first of
    the list the API server returns, which for a cluster-scoped kind is sorted by name. An empty
    source matches nothing. The InferenceService's defaulting and the cache controller both use
    this rule, so they agree on the cache.
    """
    for name in sorted(sources):
        source = sources[name]
        if source and storage_uri.startswith(source):
            return name
    return None


class LocalModelNodeGroupSpec(KubeModel):
    storage_limit: Quantity
    persistent_volume_spec: k8s.PersistentVolumeSpec
    persistent_volume_claim_spec: k8s.PersistentVolumeClaimSpec


class LocalModelNodeGroupStatus(StatusModel):
    used: Quantity | None = None
    available: Quantity | None = None


class LocalModelNodeGroup(Resource):
    API_VERSION: ClassVar[str] = _V1ALPHA1
    KIND: ClassVar[str] = "LocalModelNodeGroup"
    PLURAL: ClassVar[str] = "localmodelnodegroups"
    SCOPE: ClassVar[Literal["Namespaced", "Cluster"]] = "Cluster"
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Limit", type="string", json_path=".spec.storageLimit"),
        age_column(),
    )

    api_version: Annotated[Literal["serving.kserve.io/v1alpha1"], Field(alias="apiVersion")] = (
        "serving.kserve.io/v1alpha1"
    )
    kind: Literal["LocalModelNodeGroup"] = "LocalModelNodeGroup"
    spec: LocalModelNodeGroupSpec
    status: LocalModelNodeGroupStatus | None = None


class LocalModelInfo(KubeModel):
    source_model_uri: str
    model_name: str


class LocalModelNodeSpec(KubeModel):
    local_models: list[LocalModelInfo]


class ModelDetail(StatusModel):
    """A moorage extension: how one model's download on a node is going, from its node agent."""

    message: str | None = None
    #: bytes of the model on disk so far, and in all (0 until the size is known).
    bytes_downloaded: Int64 | None = None
    bytes_total: Int64 | None = None
    #: bytes the last download moved over the network (less than the total when it resumed).
    bytes_fetched: Int64 | None = None
    #: tries of the current (or last) download.
    attempts: int | None = None


class LocalModelNodeStatus(StatusModel):
    model_status: dict[str, ModelDownloadStatus] | None = None
    #: A moorage extension, keyed like ``modelStatus``.
    model_details: dict[str, ModelDetail] | None = None


class LocalModelNode(Resource):
    """The models one node should hold; named after the Kubernetes node."""

    API_VERSION: ClassVar[str] = _V1ALPHA1
    KIND: ClassVar[str] = "LocalModelNode"
    PLURAL: ClassVar[str] = "localmodelnodes"
    SCOPE: ClassVar[Literal["Namespaced", "Cluster"]] = "Cluster"
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (age_column(),)

    api_version: Annotated[Literal["serving.kserve.io/v1alpha1"], Field(alias="apiVersion")] = (
        "serving.kserve.io/v1alpha1"
    )
    kind: Literal["LocalModelNode"] = "LocalModelNode"
    spec: LocalModelNodeSpec
    status: LocalModelNodeStatus | None = None
