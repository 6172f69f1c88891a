"""What the operator sends to the API server to apply a rendering: pure.

* :func:`owned` stamps a rendered object with the InferenceService's controller owner
  reference (the API server's garbage collector deletes it with the InferenceService).
* :func:`apply_request` is the server-side apply of one object: ``PATCH`` with
  ``Content-Type: application/apply-patch+yaml`` (JSON is YAML), ``fieldManager=moorage`` and
  ``force=true``. Only the fields the rendering sets are owned by moorage; a field it leaves out
  (a Deployment's ``replicas``, which the HPA owns) is never touched, and a field moorage set
  before and no longer renders is removed by the API server.
* :func:`prune` lists the objects the InferenceService owns that the new rendering no longer
  contains (a transformer removed, an HPA switched off): they are deleted.
* :func:`digest` fingerprints a rendering, so that a reconcile whose inputs did not change
  sends nothing at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import orjson

__all__ = [
    "FIELD_MANAGER",
    "KINDS",
    "ObjectRef",
    "Request",
    "apply_request",
    "digest",
    "merge_patch",
    "object_path",
    "owned",
    "prune",
    "ref",
]

FIELD_MANAGER = "moorage"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE = "application/merge-patch+json"


class Kind(NamedTuple):
    api_version: str
    plural: str
    namespaced: bool = True


#: Every kind the operator reads or writes, by ``kind``.
KINDS: dict[str, Kind] = {
    "Deployment": Kind("apps/v1", "deployments"),
    "Service": Kind("v1", "services"),
    "HorizontalPodAutoscaler": Kind("autoscaling/v2", "horizontalpodautoscalers"),
    "Ingress": Kind("networking.k8s.io/v1", "ingresses"),
    "PersistentVolumeClaim": Kind("v1", "persistentvolumeclaims"),
    "InferenceService": Kind("serving.kserve.io/v1beta1", "inferenceservices"),
    "ConfigMap": Kind("v1", "configmaps"),
    "TrainedModel": Kind("serving.kserve.io/v1alpha1", "trainedmodels"),
    "Event": Kind("v1", "events"),
    "Lease": Kind("coordination.k8s.io/v1", "leases"),
}

#: The kinds a rendering creates, which the operator prunes.
OWNED_KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "Ingress", "ConfigMap")


class ObjectRef(NamedTuple):
    kind: str
    namespace: str | None
    name: str


class Request(NamedTuple):
    """One HTTP call to the API server."""

    method: str
    path: str
    params: dict[str, str]
    content_type: str | None
    body: bytes | None


def ref(obj: Mapping[str, Any]) -> ObjectRef:
    meta = obj.get("metadata") or {}
    return ObjectRef(obj["kind"], meta.get("namespace"), meta["name"])


def object_path(kind: str, namespace: str | None, name: str | None = None) -> str:
    """The REST path of an object (or of its collection when ``name`` is None)."""
    info = KINDS[kind]
    base = "/api/v1" if info.api_version == "v1" else f"/apis/{info.api_version}"
    if info.namespaced and namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{info.plural}"
    return f"{base}/{name}" if name else base


def owner_reference(isvc: Mapping[str, Any]) -> dict[str, Any]:
    meta = isvc["metadata"]
    return {
        "apiVersion": isvc.get("apiVersion", "serving.kserve.io/v1beta1"),
        "kind": "InferenceService",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned(obj: Mapping[str, Any], isvc: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` with the InferenceService as its controller owner (a new dict; ``obj`` unchanged)."""
    meta = dict(obj.get("metadata") or {})
    meta["ownerReferences"] = [owner_reference(isvc)]
    return {**obj, "metadata": meta}


def is_owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def apply_request(obj: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER) -> Request:
    """The server-side apply of ``obj`` (see the module docstring)."""
    r = ref(obj)
    return Request(
        "PATCH",
        object_path(r.kind, r.namespace, r.name),
        {"fieldManager": field_manager, "force": "true"},
        APPLY_CONTENT_TYPE,
        orjson.dumps(obj),
    )


def status_request(isvc: Mapping[str, Any], status: Mapping[str, Any]) -> Request:
    """A merge patch of the ``status`` subresource of the InferenceService (or the object of
    another kind, a TrainedModel) ``isvc``."""
    meta = isvc["metadata"]
    kind = isvc.get("kind") or "InferenceService"
    path = object_path(kind, meta.get("namespace"), meta["name"]) + "/status"
    return Request("PATCH", path, {}, MERGE_CONTENT_TYPE, orjson.dumps({"status": dict(status)}))


def delete_request(target: ObjectRef) -> Request:
    return Request(
        "DELETE",
        object_path(target.kind, target.namespace, target.name),
        {"propagationPolicy": "Background"},
        None,
        None,
    )


def prune(desired: Iterable[Mapping[str, Any]], existing: Iterable[ObjectRef]) -> list[ObjectRef]:
    """The objects in ``existing`` (owned by the InferenceService) that ``desired`` lacks, in a
    stable order."""
    wanted = {ref(obj) for obj in desired}
    return sorted({e for e in existing if e not in wanted and e.kind in OWNED_KINDS})


def digest(objects: Iterable[Mapping[str, Any]]) -> str:
    """A fingerprint of a rendering (key order does not matter)."""
    hasher = hashlib.sha256()
    for obj in objects:
        hasher.update(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS))
    return hasher.hexdigest()


def merge_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``current`` into ``desired``: changed keys,
    ``None`` for removed ones, nested mappings recursively; empty when they are equal."""
    patch: dict[str, Any] = {}
    for key in current:
        if key not in desired:
            patch[key] = None
    for key, value in desired.items():
        old = current.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            nested = merge_patch(old, value)
            if nested:
                patch[key] = nested
        elif key not in current or old != value:
            patch[key] = value
    return patch
