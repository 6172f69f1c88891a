"""An InferenceService's ``status`` as KServe v0.14 writes it in RawDeployment mode: pure.

:func:`compute_status` reads the rendering and what the cluster reports (each component's
Deployment and the predictor's Pods) and returns the whole ``status``:

* ``conditions``, sorted by type as knative keeps them: ``PredictorReady``
  (``TransformerReady``, ``ExplainerReady`` when those components exist) copied from the
  Deployment's ``Available`` condition (status, reason, message); ``IngressReady`` once every
  component is ready; ``LatestDeploymentReady`` once every Deployment has rolled out its latest
  generation; ``Ready`` when ``PredictorReady`` and ``IngressReady`` are (KServe's living
  condition set), else the first of them that is not, with its reason and message. A rendering
  that failed makes ``PredictorReady`` and ``Ready`` false with the failure's reason.
  ``lastTransitionTime`` is kept from the previous status while a condition's status stays the
  same, so that a second reconcile writes nothing (no flapping).
* ``url`` (the InferenceService's host from ``ingress.domainTemplate``, or its cluster-local
  address when labelled ``networking.kserve.io/visibility: cluster-local``), ``address.url``
  (the front Service inside the cluster: the transformer's when there is one),
  ``components.<name>.url`` once that component's Deployment is available.
* ``modelStatus`` (KServe's ``PropagateModelStatus``): ``Pending``/``InProgress`` without pods,
  ``Loading`` while the storage-initializer runs, ``FailedToLoad``/``BlockedByFailedLoad`` with
  ``lastFailureInfo{reason: ModelLoadFailed, message, exitCode}`` from the container's
  termination when the storage-initializer failed or the model server crash-loops, ``Loaded``/
  ``UpToDate`` with ``copies.totalCopies`` when the InferenceService is ready; a failed
  rendering gives ``InvalidSpec`` with its reason (``NoSupportingRuntime``, ...). Unlike
  KServe, a failure no longer observed is not kept in ``lastFailureInfo``.
* ``observedGeneration``: the InferenceService's ``metadata.generation`` this status describes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from moorage.controller.arguments import (
    explainer_service_name,
    predictor_service_name,
    transformer_service_name,
)
from moorage.controller.operator.rendering import Rendering
from moorage.core.config.configmap import InferenceServiceConfig

__all__ = ["COMPONENTS", "compute_status"]

COMPONENTS = ("predictor", "transformer", "explainer")
_READY = {
    "predictor": "PredictorReady",
    "transformer": "TransformerReady",
    "explainer": "ExplainerReady",
}
_SERVICE = {
    "predictor": predictor_service_name,
    "transformer": transformer_service_name,
    "explainer": explainer_service_name,
}
STORAGE_INITIALIZER = "storage-initializer"
MAIN_CONTAINER = "kserve-container"
VISIBILITY_LABEL = "networking.kserve.io/visibility"
_TEMPLATE_FIELD = re.compile(r"\{\{\s*\.(\w+)(?:\.([\w.\-/]+))?\s*\}\}")


def _condition(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, "status": status}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


def _available(deployment: Mapping[str, Any] | None, type_: str) -> dict[str, Any]:
    if deployment is None:
        return _condition(
            type_, "Unknown", "DeploymentNotFound", "the Deployment is not created yet"
        )
    for cond in (deployment.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Available":
            return _condition(
                type_,
                cond.get("status", "Unknown"),
                cond.get("reason", ""),
                cond.get("message", ""),
            )
    return _condition(
        type_, "Unknown", "Deploying", "the Deployment reports no Available condition yet"
    )


def _rolled_out(deployment: Mapping[str, Any] | None) -> bool:
    if deployment is None:
        return False
    meta = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 1):
        return False
    replicas = status.get("replicas")
    updated = status.get("updatedReplicas")
    return replicas is None or updated is None or int(updated) >= int(replicas)


def _domain(config: InferenceServiceConfig, name: str, body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    values: dict[str, Any] = {
        "Name": name,
        "Namespace": meta.get("namespace") or "default",
        "IngressDomain": config.ingress.ingress_domain,
        "Labels": meta.get("labels") or {},
        "Annotations": meta.get("annotations") or {},
    }

    def value(match: re.Match[str]) -> str:
        found = values.get(match.group(1), "")
        key = match.group(2)
        return str(found.get(key, "") if key and isinstance(found, dict) else found)

    return _TEMPLATE_FIELD.sub(value, config.ingress.domain_template)


def _terminated(status: Mapping[str, Any], *, last: bool) -> Mapping[str, Any]:
    state = status.get("lastState" if last else "state") or {}
    terminated = state.get("terminated")
    return terminated if isinstance(terminated, Mapping) else {}


def _failed_load(status: Mapping[str, Any]) -> dict[str, Any] | None:
    """KServe's check of one container status: the failure info, or None."""
    state = status.get("state") or {}
    terminated = _terminated(status, last=False)
    if terminated and terminated.get("reason") == "Error":
        source = terminated
    elif (state.get("waiting") or {}).get("reason") == "CrashLoopBackOff":
        source = _terminated(status, last=True)
    else:
        return None
    info: dict[str, Any] = {"reason": "ModelLoadFailed"}
    if source.get("message"):
        info["message"] = source["message"]
    if source.get("exitCode") is not None:
        info["exitCode"] = source["exitCode"]
    return info


def _model_status(
    pods: Sequence[Mapping[str, Any]], ready: bool, previous: Mapping[str, Any]
) -> dict[str, Any]:
    active = (previous.get("states") or {}).get("activeModelState") or ""
    copies = len(pods)

    def out(
        target: str, transition: str, failure: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        states = {"activeModelState": active, "targetModelState": target}
        result: dict[str, Any] = {"states": states, "transitionStatus": transition}
        if failure:
            result["lastFailureInfo"] = dict(failure)
        return result

    if copies == 0:
        return out("Pending", "InProgress")
    if ready:
        active = "Loaded"
        result = out("Loaded", "UpToDate")
        result["copies"] = {"totalCopies": copies}
        return result
    pod_status = pods[0].get("status") or {}
    for cs in pod_status.get("initContainerStatuses") or ():
        if cs.get("name") != STORAGE_INITIALIZER:
            continue
        if (cs.get("state") or {}).get("running") is not None:
            return out("Loading", "InProgress")
        failure = _failed_load(cs)
        if failure is not None:
            return out("FailedToLoad", "BlockedByFailedLoad", failure)
    for cs in pod_status.get("containerStatuses") or ():
        if cs.get("name") != MAIN_CONTAINER:
            continue
        failure = _failed_load(cs)
        if failure is not None:
            return out("FailedToLoad", "BlockedByFailedLoad", failure)
    return out("Pending", "InProgress")


def _keep_transition_times(
    conditions: list[dict[str, Any]], previous: Sequence[Mapping[str, Any]], now: str
) -> None:
    before = {c.get("type"): c for c in previous}
    for cond in conditions:
        old = before.get(cond["type"])
        if (
            old is not None
            and old.get("status") == cond["status"]
            and old.get("lastTransitionTime")
        ):
            cond["lastTransitionTime"] = old["lastTransitionTime"]
        else:
            cond["lastTransitionTime"] = now


def compute_status(
    body: Mapping[str, Any],
    rendering: Rendering,
    *,
    deployments: Mapping[str, Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    config: InferenceServiceConfig,
    now: str,
) -> dict[str, Any]:
    """The InferenceService's status (see the module docstring).

    ``deployments`` maps a component name to its observed Deployment; ``pods`` are the
    predictor's Pods; ``now`` stamps conditions whose status changes.
    """
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    previous = body.get("status") or {}
    name, namespace = meta["name"], meta.get("namespace") or "default"
    present = [c for c in COMPONENTS if c == "predictor" or spec.get(c) is not None]
    conditions: list[dict[str, Any]] = []
    components: dict[str, Any] = {}
    ready_components = True
    for component in present:
        cond = _available(deployments.get(component), _READY[component])
        if component == "predictor" and rendering.failure is not None:
            failure = rendering.failure
            cond = _condition(_READY[component], "False", failure.reason, failure.describe())
        conditions.append(cond)
        ready_components = ready_components and cond["status"] == "True"
        entry: dict[str, Any] = {}
        if cond["status"] == "True":
            entry["url"] = "http://" + _domain(config, _SERVICE[component](name), body)
        components[component] = entry
    if ready_components:
        conditions.append(_condition("IngressReady", "True"))
    else:
        waiting = next(c for c in conditions if c["status"] != "True")
        conditions.append(
            _condition(
                "IngressReady",
                "False" if waiting["status"] == "False" else "Unknown",
                "ComponentNotReady",
                f"{waiting['type']} is {waiting['status']}",
            )
        )
    rolled = all(_rolled_out(deployments.get(c)) for c in present) and rendering.failure is None
    conditions.append(
        _condition("LatestDeploymentReady", "True")
        if rolled
        else _condition(
            "LatestDeploymentReady", "Unknown", "RolloutInProgress",
            "the latest Deployments have not all rolled out",
        )
    )  # fmt: skip
    by_type = {c["type"]: c for c in conditions}
    living = [by_type["PredictorReady"], by_type["IngressReady"]]
    blocking = next((c for c in living if c["status"] != "True"), None)
    if blocking is None:
        conditions.append(_condition("Ready", "True"))
    else:
        conditions.append(
            _condition(
                "Ready", blocking["status"], blocking.get("reason", ""), blocking.get("message", "")
            )
        )
    conditions.sort(key=lambda c: c["type"])
    _keep_transition_times(conditions, previous.get("conditions") or (), now)
    ready = blocking is None
    status: dict[str, Any] = {
        "observedGeneration": int(meta.get("generation") or 1),
        "conditions": conditions,
        "components": components,
    }
    front = "transformer" if "transformer" in present else "predictor"
    internal = f"{_SERVICE[front](name)}.{namespace}.svc.cluster.local"
    if (meta.get("labels") or {}).get(VISIBILITY_LABEL) == "cluster-local":
        status["url"] = f"http://{internal}"
    else:
        status["url"] = f"{config.ingress.url_scheme or 'http'}://" + _domain(config, name, body)
    status["address"] = {"url": f"http://{internal}"}
    if rendering.failure is not None and rendering.failure.model_failure:
        failure = rendering.failure
        active = ((previous.get("modelStatus") or {}).get("states") or {}).get("activeModelState")
        status["modelStatus"] = {
            "states": {"activeModelState": active or "", "targetModelState": "FailedToLoad"},
            "transitionStatus": "InvalidSpec",
            "lastFailureInfo": {"reason": failure.reason, "message": failure.describe()},
        }
    else:
        status["modelStatus"] = _model_status(pods, ready, previous.get("modelStatus") or {})
    return status
