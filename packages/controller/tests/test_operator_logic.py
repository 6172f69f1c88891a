"""The operator's pure parts, without an API server: rendering from cluster state, the
dependency index, apply bodies and the prune set, KServe's status, the Lease decision."""

from __future__ import annotations

import datetime
import json
from typing import Any

import orjson
import pytest

from moorage.controller.operator.apply import (
    APPLY_CONTENT_TYPE,
    ObjectRef,
    apply_request,
    digest,
    merge_patch,
    object_path,
    owned,
    prune,
    status_request,
)
from moorage.controller.operator.dependencies import Dep, DependencyIndex, dependencies_of
from moorage.controller.operator.lease import holder_after
from moorage.controller.operator.rendering import ClusterState, Failure, Rendering, render
from moorage.controller.operator.status import compute_status
from moorage.core.config.configmap import InferenceServiceConfig
from moorage.core.resources import builtin_runtimes

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def _isvc(
    name: str = "iris", *, fmt: str = "sklearn", runtime: str | None = None, **spec: Any
) -> dict[str, Any]:
    model: dict[str, Any] = {"modelFormat": {"name": fmt}, "storageUri": "gs://bucket/model"}
    if runtime:
        model["runtime"] = runtime
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": "ns", "uid": "u-1", "generation": 3,
                     "resourceVersion": "7", "managedFields": [{"manager": "kubectl"}]},
        "spec": {"predictor": {"model": model}, **spec},
    }  # fmt: skip


def _sklearn(**spec: Any) -> dict[str, Any]:
    [runtime] = [r for r in builtin_runtimes() if r.name == "kserve-sklearnserver"]
    body = runtime.to_dict()
    body["spec"].update(spec)
    return body


def _state(**kw: Any) -> ClusterState:
    return ClusterState(cluster_runtimes=[_sklearn()], **kw)


# -- rendering ------------------------------------------------------------------------------


def test_render_applies_what_render_prints() -> None:
    rendering = render(_isvc(), _state())
    assert rendering.ok and rendering.runtime == "kserve-sklearnserver"
    kinds = [(o["kind"], o["metadata"]["name"]) for o in rendering.objects]
    assert kinds == [
        ("Deployment", "iris-predictor"),
        ("Service", "iris-predictor"),
        ("HorizontalPodAutoscaler", "iris-predictor"),
        ("Ingress", "iris"),
    ]
    assert all(o["metadata"]["namespace"] == "ns" for o in rendering.objects)


@pytest.mark.parametrize(
    ("isvc", "state", "reason", "field"),
    [
        (_isvc(fmt="caffe"), _state(), "NoSupportingRuntime", "spec.predictor.model.modelFormat"),
        (_isvc(), ClusterState(), "NoSupportingRuntime", "spec.predictor.model.modelFormat"),
        (_isvc(runtime="nope"), _state(), "RuntimeNotRecognized", "spec.predictor.model.runtime"),
        (
            _isvc(runtime="kserve-sklearnserver"),
            ClusterState(cluster_runtimes=[_sklearn(disabled=True)]),
            "RuntimeDisabled",
            "spec.predictor.model.runtime",
        ),
        (
            _isvc(),
            _state(config={"data": {"ingress": "{nope"}}),
            "InvalidConfig",
            "data.ingress",
        ),
    ],
)
def test_render_failures_carry_kserve_reasons(
    isvc: dict[str, Any], state: ClusterState, reason: str, field: str
) -> None:
    rendering = render(isvc, state)
    assert not rendering.ok and rendering.objects == []
    assert rendering.failure is not None
    assert (rendering.failure.reason, rendering.failure.field) == (reason, field)


def test_render_refuses_a_named_storage_secret_that_is_missing() -> None:
    isvc = _isvc()
    isvc["metadata"]["annotations"] = {"serving.kserve.io/storageSecretName": "creds"}
    failure = render(isvc, _state()).failure
    assert failure is not None and failure.reason == "SecretNotFound"
    assert not failure.model_failure
    meta = {"name": "creds", "namespace": "ns"}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": {}}
    assert render(isvc, _state(secrets=[secret])).ok


def test_render_uses_runtimes_of_the_namespace_only() -> None:
    other = _sklearn()
    other.update(kind="ServingRuntime")
    other["metadata"] = {"name": "mine", "namespace": "elsewhere"}
    rendering = render(_isvc(runtime="mine"), ClusterState(runtimes=[other]))
    assert rendering.failure is not None and rendering.failure.reason == "RuntimeNotRecognized"
    other["metadata"]["namespace"] = "ns"
    assert render(_isvc(runtime="mine"), ClusterState(runtimes=[other])).runtime == "mine"


# -- dependencies ---------------------------------------------------------------------------


def test_dependencies_follow_runtimes_config_accounts_and_secrets() -> None:
    isvc = _isvc(transformer={"serviceAccountName": "tsa", "containers": [{"image": "t"}]})
    accounts = {("ns", "default"): {"secrets": [{"name": "s3creds"}]}}
    deps = dependencies_of(isvc, config_namespace="kserve", service_accounts=accounts)
    assert Dep("ServingRuntime", "ns", None) in deps
    assert Dep("ClusterServingRuntime", None, None) in deps
    assert Dep("ConfigMap", "kserve", "inferenceservice-config") in deps
    assert Dep("ServiceAccount", "ns", "default") in deps
    assert Dep("ServiceAccount", "ns", "tsa") in deps
    assert Dep("Secret", "ns", "s3creds") in deps
    assert Dep("Secret", "ns", "storage-config") in deps
    pinned = dependencies_of(_isvc(runtime="rt"), config_namespace="kserve")
    assert Dep("ServingRuntime", "ns", "rt") in pinned
    assert Dep("ClusterServingRuntime", None, "rt") in pinned
    assert Dep("ServingRuntime", "ns", None) not in pinned


def test_dependency_index_finds_dependents_by_name_and_wildcard() -> None:
    index = DependencyIndex()
    index.update(("ns", "auto"), dependencies_of(_isvc("auto"), config_namespace="kserve"))
    index.update(
        ("ns", "pinned"), dependencies_of(_isvc("pinned", runtime="rt"), config_namespace="kserve")
    )
    assert index.dependents("ClusterServingRuntime", None, "anything") == {("ns", "auto")}
    assert index.dependents("ClusterServingRuntime", None, "rt") == {
        ("ns", "auto"),
        ("ns", "pinned"),
    }
    assert index.dependents("ServingRuntime", "other", "rt") == set()
    assert index.dependents("ConfigMap", "kserve", "inferenceservice-config") == {
        ("ns", "auto"), ("ns", "pinned"),
    }  # fmt: skip
    index.remove(("ns", "auto"))
    assert index.dependents("ClusterServingRuntime", None, "anything") == set()
    index.update(("ns", "pinned"), dependencies_of(_isvc("pinned"), config_namespace="kserve"))
    assert index.dependents("ClusterServingRuntime", None, "x") == {("ns", "pinned")}
    assert len(index) == 1


# -- apply ----------------------------------------------------------------------------------


def test_apply_request_is_server_side_apply_with_owner() -> None:
    isvc = _isvc()
    deployment = render(isvc, _state()).objects[0]
    body = owned(deployment, isvc)
    assert "ownerReferences" not in deployment["metadata"]  # the rendering is left alone
    assert body["metadata"]["ownerReferences"] == [{
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": "iris",
        "uid": "u-1", "controller": True, "blockOwnerDeletion": True,
    }]  # fmt: skip
    request = apply_request(body)
    assert request.method == "PATCH"
    assert request.path == "/apis/apps/v1/namespaces/ns/deployments/iris-predictor"
    assert request.params == {"fieldManager": "moorage", "force": "true"}
    assert request.content_type == APPLY_CONTENT_TYPE
    sent = orjson.loads(request.body or b"")
    assert sent["apiVersion"] == "apps/v1" and sent["kind"] == "Deployment"
    assert "replicas" not in sent["spec"]  # never owned: the HPA's


def test_paths_and_status_patch() -> None:
    assert object_path("Service", "ns", "a") == "/api/v1/namespaces/ns/services/a"
    assert object_path("Ingress", "ns") == "/apis/networking.k8s.io/v1/namespaces/ns/ingresses"
    request = status_request(_isvc(), {"url": "http://x"})
    assert request.path.endswith("/inferenceservices/iris/status")
    assert json.loads(request.body or b"") == {"status": {"url": "http://x"}}


def test_prune_deletes_what_the_rendering_no_longer_has() -> None:
    with_transformer = _isvc(
        transformer={"containers": [{"name": "kserve-container", "image": "t"}]}
    )
    existing = [ObjectRef(o["kind"], "ns", o["metadata"]["name"])
                for o in render(with_transformer, _state()).objects]  # fmt: skip
    assert ObjectRef("Deployment", "ns", "iris-transformer") in existing
    now = render(_isvc(), _state()).objects
    assert prune(now, existing) == [
        ObjectRef("Deployment", "ns", "iris-transformer"),
        ObjectRef("HorizontalPodAutoscaler", "ns", "iris-transformer"),
        ObjectRef("Service", "ns", "iris-transformer"),
    ]
    external = _isvc()
    external["metadata"]["annotations"] = {"serving.kserve.io/autoscalerClass": "external"}
    predictor_only = [ObjectRef(o["kind"], "ns", o["metadata"]["name"]) for o in now]
    assert prune(render(external, _state()).objects, predictor_only) == [
        ObjectRef("HorizontalPodAutoscaler", "ns", "iris-predictor")
    ]
    assert prune(now, [ObjectRef("Secret", "ns", "x")]) == []  # only kinds it renders
    # a model config (rendered while the predictor is multi-model) goes when it is not
    stale = ObjectRef("ConfigMap", "ns", "modelconfig-iris-0")
    assert prune(now, [stale]) == [stale]


def test_digest_ignores_key_order_and_merge_patch_is_minimal() -> None:
    assert digest([{"a": 1, "b": {"c": 2, "d": 3}}]) == digest([{"b": {"d": 3, "c": 2}, "a": 1}])
    assert digest([{"a": 1}]) != digest([{"a": 2}])
    old = {"url": "u", "modelStatus": {"lastFailureInfo": {"reason": "X"}, "transitionStatus": "A"}}
    new = {"url": "u", "modelStatus": {"transitionStatus": "B"}, "components": {"predictor": {}}}
    assert merge_patch(old, new) == {
        "modelStatus": {"lastFailureInfo": None, "transitionStatus": "B"},
        "components": {"predictor": {}},
    }
    assert merge_patch(new, new) == {}


# -- status ---------------------------------------------------------------------------------


def _deployment(available: str | None, *, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    status: dict[str, Any] = {"observedGeneration": observed, "replicas": 1, "updatedReplicas": 1}
    if available:
        reason = "MinimumReplicasAvailable"
        status["conditions"] = [
            {"type": "Available", "status": available, "reason": reason, "message": "ok"}
        ]
    return {"metadata": {"name": "iris-predictor", "generation": generation}, "status": status}


def _status(isvc: dict[str, Any], rendering: Rendering | None = None, **kw: Any) -> dict[str, Any]:
    kw.setdefault("deployments", {})
    kw.setdefault("pods", [])
    return compute_status(
        isvc, rendering or Rendering(objects=[{}]), config=InferenceServiceConfig.default(),
        now=kw.pop("now", NOW), **kw,
    )  # fmt: skip


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c.get("reason", "")) for c in status["conditions"]}


def test_status_before_the_deployment_exists() -> None:
    status = _status(_isvc())
    assert [c["type"] for c in status["conditions"]] == [
        "IngressReady", "LatestDeploymentReady", "PredictorReady", "Ready",
    ]  # fmt: skip
    assert _conditions(status)["PredictorReady"] == ("Unknown", "DeploymentNotFound")
    assert _conditions(status)["Ready"] == ("Unknown", "DeploymentNotFound")
    assert status["url"] == "http://iris-ns.example.com"
    assert status["address"] == {"url": "http://iris-predictor.ns.svc.cluster.local"}
    assert status["components"] == {"predictor": {}}
    assert status["observedGeneration"] == 3
    assert status["modelStatus"] == {
        "states": {"activeModelState": "", "targetModelState": "Pending"},
        "transitionStatus": "InProgress",
    }


def test_status_ready_with_pods() -> None:
    pods = [{"metadata": {"name": "p"}, "status": {"phase": "Running"}}] * 2
    status = _status(_isvc(), deployments={"predictor": _deployment("True")}, pods=pods)
    assert set(_conditions(status).values()) == {("True", ""), ("True", "MinimumReplicasAvailable")}
    assert status["components"]["predictor"] == {"url": "http://iris-predictor-ns.example.com"}
    assert status["modelStatus"] == {
        "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
        "transitionStatus": "UpToDate",
        "copies": {"totalCopies": 2},
    }


def test_status_rollout_in_progress_and_unavailable() -> None:
    status = _status(_isvc(), deployments={"predictor": _deployment("False", generation=2)})
    conditions = _conditions(status)
    assert conditions["PredictorReady"] == ("False", "MinimumReplicasAvailable")
    assert conditions["IngressReady"][0] == "False"
    assert conditions["LatestDeploymentReady"] == ("Unknown", "RolloutInProgress")
    assert conditions["Ready"][0] == "False"


def test_status_with_a_transformer_fronts_it() -> None:
    isvc = _isvc(transformer={"containers": [{"image": "t"}]})
    status = _status(
        isvc, deployments={"predictor": _deployment("True"), "transformer": _deployment(None)}
    )
    conditions = _conditions(status)
    assert conditions["TransformerReady"][0] == "Unknown"
    assert conditions["PredictorReady"][0] == "True"
    assert conditions["IngressReady"][0] == "Unknown"
    assert status["address"] == {"url": "http://iris-transformer.ns.svc.cluster.local"}


def test_status_cluster_local_url() -> None:
    isvc = _isvc()
    isvc["metadata"]["labels"] = {"networking.kserve.io/visibility": "cluster-local"}
    assert _status(isvc)["url"] == "http://iris-predictor.ns.svc.cluster.local"


_INIT = "storage-initializer"
_MAIN = "kserve-container"
_FAILED = ("FailedToLoad", "BlockedByFailedLoad")


def _failed(message: str, code: int) -> dict[str, Any]:
    return {"reason": "ModelLoadFailed", "message": message, "exitCode": code}


def _error(message: str, code: int) -> dict[str, Any]:
    return {"terminated": {"reason": "Error", "exitCode": code, "message": message}}


@pytest.mark.parametrize(
    ("container", "init", "expected"),
    [
        (None, {"name": _INIT, "state": {"running": {}}}, ("Loading", "InProgress", None)),
        (None, {"name": _INIT, "state": _error("no model", 1)}, (*_FAILED, _failed("no model", 1))),
        (
            {"name": _MAIN, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": _error("boom", 2)},
            None,
            (*_FAILED, _failed("boom", 2)),
        ),
        ({"name": _MAIN, "state": {"running": {}}}, None, ("Pending", "InProgress", None)),
    ],
)  # fmt: skip
def test_model_status_from_pods(
    container: dict[str, Any] | None, init: dict[str, Any] | None, expected: tuple[Any, ...]
) -> None:
    pod_status: dict[str, Any] = {}
    if container:
        pod_status["containerStatuses"] = [container]
    if init:
        pod_status["initContainerStatuses"] = [init]
    model = _status(
        _isvc(),
        deployments={"predictor": _deployment("False")},
        pods=[{"metadata": {"name": "p"}, "status": pod_status}],
    )["modelStatus"]
    assert (
        model["states"]["targetModelState"],
        model["transitionStatus"],
        model.get("lastFailureInfo"),
    ) == expected


def test_status_of_a_failed_rendering() -> None:
    failure = Failure("NoSupportingRuntime", "no runtime found", "spec.predictor.model.modelFormat")
    status = _status(
        _isvc(), Rendering(failure=failure), deployments={"predictor": _deployment("True")}
    )
    assert _conditions(status)["PredictorReady"] == ("False", "NoSupportingRuntime")
    assert _conditions(status)["Ready"] == ("False", "NoSupportingRuntime")
    assert _conditions(status)["LatestDeploymentReady"][0] == "Unknown"
    assert status["modelStatus"] == {
        "states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
        "transitionStatus": "InvalidSpec",
        "lastFailureInfo": {
            "reason": "NoSupportingRuntime",
            "message": "spec.predictor.model.modelFormat: no runtime found",
        },
    }
    config = Failure("InvalidConfig", "bad", "data.ingress", model_failure=False)
    status = _status(_isvc(), Rendering(failure=config))
    assert status["modelStatus"]["transitionStatus"] == "InProgress"


def test_status_is_stable_and_keeps_transition_times() -> None:
    ready = {"predictor": _deployment("True")}
    first = _status(_isvc(), deployments=ready, now=NOW)
    isvc = {**_isvc(), "status": first}
    second = _status(isvc, deployments=ready, now=LATER)
    assert second == first and merge_patch(first, second) == {}
    third = _status(isvc, deployments={"predictor": _deployment("False")}, now=LATER)
    times = {c["type"]: c["lastTransitionTime"] for c in third["conditions"]}
    assert times["PredictorReady"] == LATER and times["LatestDeploymentReady"] == NOW


# -- leader election --------------------------------------------------------------------------


def test_lease_holder() -> None:
    now = datetime.datetime(2026, 1, 1, 0, 0, 30, tzinfo=datetime.UTC)

    def lease(holder: str, renewed: str) -> dict[str, Any]:
        return {
            "spec": {"holderIdentity": holder, "renewTime": renewed, "leaseDurationSeconds": 15}
        }

    assert holder_after(None, "me", now) == "me"
    assert holder_after(lease("", "2026-01-01T00:00:29.000000Z"), "me", now) == "me"
    assert holder_after(lease("me", "2026-01-01T00:00:29.000000Z"), "me", now) == "me"
    assert holder_after(lease("you", "2026-01-01T00:00:29.000000Z"), "me", now) == "you"
    assert holder_after(lease("you", "2026-01-01T00:00:10.000000Z"), "me", now) == "me"
