"""Builders of the Kubernetes objects the cache tests use (plain dicts, as the API returns them)."""

from __future__ import annotations

from typing import Any

GROUP_LABEL = "moorage.test/models"


def node(name: str, *, ready: bool = True, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {GROUP_LABEL: "yes", **(labels or {})}},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def group(
    name: str = "workers",
    *,
    limit: str = "1Gi",
    path: str = "/models",
    selector: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if selector is None:
        selector = {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": GROUP_LABEL, "operator": "In", "values": ["yes"]}]}
            ]
        }
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LocalModelNodeGroup",
        "metadata": {"name": name},
        "spec": {
            "storageLimit": limit,
            "persistentVolumeSpec": {
                "accessModes": ["ReadWriteOnce"],
                "volumeMode": "Filesystem",
                "capacity": {"storage": limit},
                "local": {"path": path},
                "storageClassName": "local-storage",
                "nodeAffinity": {"required": selector},
            },
            "persistentVolumeClaimSpec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": limit}},
                "storageClassName": "local-storage",
                "volumeMode": "Filesystem",
            },
        },
    }


def cache(
    name: str,
    uri: str,
    *,
    size: str = "100Mi",
    group: str = "workers",
    created: str = "2026-01-01T00:00:00Z",
    deleting: bool = False,
    uid: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "creationTimestamp": created}
    if uid:
        meta["uid"] = uid
    if deleting:
        meta["deletionTimestamp"] = "2026-01-02T00:00:00Z"
        meta["finalizers"] = ["localmodel.kserve.io/finalizer"]
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LocalModelCache",
        "metadata": meta,
        "spec": {"sourceModelUri": uri, "modelSize": size, "nodeGroups": [group]},
    }


def isvc(
    name: str,
    uri: str,
    *,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri}}},
    }


def lmn(
    name: str,
    models: list[tuple[str, str]],
    status: dict[str, str] | None = None,
    messages: dict[str, str] | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LocalModelNode",
        "metadata": {"name": name},
        "spec": {"localModels": [{"sourceModelUri": u, "modelName": m} for m, u in models]},
    }
    if status is not None:
        obj["status"] = {"modelStatus": status}
        if messages:
            obj["status"]["modelDetails"] = {m: {"message": t} for m, t in messages.items()}
    return obj
