"""kopf's part: watch the InferenceServices and their inputs, keep the snapshot, enqueue.

Every watched kind has an indexing handler and an event handler:

* the indexing handler records the object in the :class:`.controller.Snapshot`.
  kopf runs indexing handlers for the initial listing of *every* watched kind before it runs any
  other handler, so the first reconciles already see all runtimes, Secrets and the ConfigMap
  (no InferenceService is reported ``NoSupportingRuntime`` because its runtime was listed later);
* the event handler removes deleted objects from the snapshot and enqueues the
  InferenceServices the change concerns: the InferenceService itself; the owner of a
  Deployment, Service, HPA, Ingress, model-config ConfigMap or Pod labelled
  ``serving.kserve.io/inferenceservice``;
  the dependents (:class:`~moorage.controller.operator.dependencies.DependencyIndex`) of a
  ServingRuntime, ClusterServingRuntime, ConfigMap, ServiceAccount, Secret or LocalModelCache;
  the InferenceService a TrainedModel names (and named, when that changed).

kopf itself writes nothing to the watched objects: there are only event handlers, so no
finalizers and no kopf annotations.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from moorage.controller.operator.apply import ObjectRef
from moorage.controller.operator.controller import COMPONENT_LABEL, ISVC_LABEL, Controller, slim

__all__ = ["CONFIGMAP_NAME", "build_registry"]

logger = logging.getLogger(__name__)

CONFIGMAP_NAME = "inferenceservice-config"
GROUP = "serving.kserve.io"
_OWNED = {
    "Deployment": ("apps", "v1", "deployments"),
    "Service": ("", "v1", "services"),
    "HorizontalPodAutoscaler": ("autoscaling", "v2", "horizontalpodautoscalers"),
    "Ingress": ("networking.k8s.io", "v1", "ingresses"),
    "ConfigMap": ("", "v1", "configmaps"),  # modelconfig-<isvc>-0 of a multi-model one
}


def _raw(body: Mapping[str, Any]) -> dict[str, Any]:
    """A kopf body as a plain dict (shallow: kopf never mutates what it received)."""
    return {k: body[k] for k in body}


def _key(meta: Mapping[str, Any]) -> tuple[str, str]:
    return meta.get("namespace") or "default", meta["name"]


def build_registry(
    controller: Controller,
    *,
    config_namespace: str,
    namespace: str | None = None,
) -> kopf.OperatorRegistry:
    """The handlers of one operator around ``controller`` (see the module docstring).

    ``namespace`` limits the InferenceServices served to one namespace (the ConfigMap's
    namespace is watched as well, for the ConfigMap).
    """
    registry = kopf.OperatorRegistry()
    snap = controller.snapshot

    def served(meta: Mapping[str, Any]) -> bool:
        return namespace is None or meta.get("namespace") == namespace

    def _served(meta: Any, **_: Any) -> bool:
        return served(meta)

    # -- InferenceServices -------------------------------------------------------------------
    @kopf.index(GROUP, "v1beta1", "inferenceservices", registry=registry, when=_served)
    async def isvc_index(body: kopf.Body, meta: kopf.Meta, **_: Any) -> None:
        snap.isvcs[_key(meta)] = _raw(body)

    @kopf.on.event(GROUP, "v1beta1", "inferenceservices", registry=registry, when=_served)
    async def isvc_event(type: str | None, body: kopf.Body, meta: kopf.Meta, **_: Any) -> None:
        key = _key(meta)
        if type == "DELETED":
            snap.isvcs.pop(key, None)
        else:
            snap.isvcs[key] = _raw(body)
        controller.enqueue(key)

    # -- TrainedModels: their InferenceService renders their model config and status ---------
    def _remember_tm(body: Mapping[str, Any], meta: Mapping[str, Any]) -> tuple[str, str | None]:
        namespace = meta.get("namespace") or "default"
        snap.trained_models.setdefault(namespace, {})[meta["name"]] = _raw(body)
        return namespace, (body.get("spec") or {}).get("inferenceService")

    @kopf.index(GROUP, "v1alpha1", "trainedmodels", registry=registry, when=_served)
    async def tm_index(body: kopf.Body, meta: kopf.Meta, **_: Any) -> None:
        _remember_tm(body, meta)

    @kopf.on.event(GROUP, "v1alpha1", "trainedmodels", registry=registry, when=_served)
    async def tm_event(type: str | None, body: kopf.Body, meta: kopf.Meta, **_: Any) -> None:
        namespace = meta.get("namespace") or "default"
        previous = snap.trained_models.get(namespace, {}).get(meta["name"])
        if type == "DELETED":
            snap.trained_models.get(namespace, {}).pop(meta["name"], None)
            target = (body.get("spec") or {}).get("inferenceService")
        else:
            target = _remember_tm(body, meta)[1]
        before = ((previous or {}).get("spec") or {}).get("inferenceService")
        for parent in {target, before}:
            if isinstance(parent, str) and parent:
                controller.enqueue((namespace, parent))

    # -- the objects they own, and their Pods ------------------------------------------------
    def _owned(kind: str, group: str, version: str, plural: str) -> None:
        labels = {ISVC_LABEL: kopf.PRESENT}

        def remember(body: Mapping[str, Any], meta: Mapping[str, Any]) -> tuple[str, str]:
            owner = (meta.get("namespace") or "default", meta["labels"][ISVC_LABEL])
            target = ObjectRef(kind, meta.get("namespace"), meta["name"])
            snap.owned.setdefault(owner, {})[target] = slim(body, status=kind == "Deployment")
            return owner

        @kopf.index(group, version, plural, registry=registry, labels=labels, id=f"{plural}-index")
        async def index(body: kopf.Body, meta: kopf.Meta, **_: Any) -> None:
            remember(body, meta)

        @kopf.on.event(
            group, version, plural, registry=registry, labels=labels, id=f"{plural}-event"
        )
        async def event(type: str | None, body: kopf.Body, meta: kopf.Meta, **_: Any) -> None:
            owner = (meta.get("namespace") or "default", meta["labels"][ISVC_LABEL])
            if type == "DELETED":
                target = ObjectRef(kind, meta.get("namespace"), meta["name"])
                snap.owned.get(owner, {}).pop(target, None)
            else:
                remember(body, meta)
            if owner in snap.isvcs:
                controller.enqueue(owner)

    for kind, (group, version, plural) in _OWNED.items():
        _owned(kind, group, version, plural)

    pod_labels = {ISVC_LABEL: kopf.PRESENT, COMPONENT_LABEL: kopf.PRESENT}

    def _remember_pod(body: Mapping[str, Any], meta: Mapping[str, Any]) -> tuple[str, str]:
        owner = (meta.get("namespace") or "default", meta["labels"][ISVC_LABEL])
        snap.pods.setdefault(owner, {})[meta["name"]] = slim(body, status=True)
        return owner

    @kopf.index("", "v1", "pods", registry=registry, labels=pod_labels)
    async def pod_index(body: kopf.Body, meta: kopf.Meta, **_: Any) -> None:
        _remember_pod(body, meta)

    @kopf.on.event("", "v1", "pods", registry=registry, labels=pod_labels)
    async def pod_event(type: str | None, body: kopf.Body, meta: kopf.Meta, **_: Any) -> None:
        owner = (meta.get("namespace") or "default", meta["labels"][ISVC_LABEL])
        if type == "DELETED":
            snap.pods.get(owner, {}).pop(meta["name"], None)
        else:
            _remember_pod(body, meta)
        if owner in snap.isvcs:
            controller.enqueue(owner)

    # -- inputs: namespaced by name ---------------------------------------------------------
    def _input(kind: str, group: str, version: str, plural: str, store: dict[str, Any]) -> None:
        def remember(body: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
            store.setdefault(meta.get("namespace") or "default", {})[meta["name"]] = _raw(body)

        @kopf.index(group, version, plural, registry=registry, id=f"{plural}-index")
        async def index(body: kopf.Body, meta: kopf.Meta, **_: Any) -> None:
            remember(body, meta)

        @kopf.on.event(group, version, plural, registry=registry, id=f"{plural}-event")
        async def event(type: str | None, body: kopf.Body, meta: kopf.Meta, **_: Any) -> None:
            ns = meta.get("namespace") or "default"
            if type == "DELETED":
                store.get(ns, {}).pop(meta["name"], None)
            else:
                remember(body, meta)
            controller.enqueue_dependents(kind, ns, meta["name"])

    _input("ServingRuntime", GROUP, "v1alpha1", "servingruntimes", snap.runtimes)
    _input("ServiceAccount", "", "v1", "serviceaccounts", snap.service_accounts)
    _input("Secret", "", "v1", "secrets", snap.secrets)

    # -- inputs: cluster-scoped ---------------------------------------------------------------
    def _cluster_input(kind: str, plural: str, store: dict[str, Any]) -> None:
        @kopf.index(GROUP, "v1alpha1", plural, registry=registry, id=f"{plural}-index")
        async def index(body: kopf.Body, meta: kopf.Meta, **_: Any) -> None:
            store[meta["name"]] = _raw(body)

        @kopf.on.event(GROUP, "v1alpha1", plural, registry=registry, id=f"{plural}-event")
        async def event(type: str | None, body: kopf.Body, meta: kopf.Meta, **_: Any) -> None:
            if type == "DELETED":
                store.pop(meta["name"], None)
            else:
                store[meta["name"]] = _raw(body)
            controller.enqueue_dependents(kind, None, meta["name"])

    _cluster_input("ClusterServingRuntime", "clusterservingruntimes", snap.cluster_runtimes)
    _cluster_input("LocalModelCache", "localmodelcaches", snap.local_model_caches)

    # -- the inferenceservice-config ConfigMap ----------------------------------------------
    def _is_config(meta: Any, **_: Any) -> bool:
        return bool(
            meta.get("name") == CONFIGMAP_NAME and meta.get("namespace") == config_namespace
        )

    @kopf.index("", "v1", "configmaps", registry=registry, when=_is_config)
    async def config_index(body: kopf.Body, **_: Any) -> None:
        snap.config = _raw(body)

    @kopf.on.event("", "v1", "configmaps", registry=registry, when=_is_config)
    async def config_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        snap.config = None if type == "DELETED" else _raw(body)
        controller.enqueue_dependents("ConfigMap", config_namespace, CONFIGMAP_NAME)

    return registry
