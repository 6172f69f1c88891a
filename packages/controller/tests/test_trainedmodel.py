"""TrainedModels: KServe's model-config ConfigMap and TrainedModel statuses (pure), the
multi-model predictor's pod (moorage-server watching the file, or KServe's puller), and the
admission rules that need the cluster."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from moorage.controller.reconcile import desired_objects
from moorage.controller.trainedmodel import (
    admission_errors,
    is_multi_model,
    parse_quantity,
    plan_model_config,
)
from moorage.controller.workload import load_workload
from moorage.core.resources import InferenceService, TrainedModel, parse_resource

NOW = "2026-12-07T12:00:00Z"
LATER = "2026-12-07T13:00:00Z"


def isvc(predictor: dict[str, Any] | None = None, **meta: Any) -> InferenceService:
    predictor = predictor or {"sklearn": {"resources": {"limits": {"memory": "1Gi"}}}}
    found = parse_resource(
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": "mms", "namespace": "ml", **meta},
            "spec": {"predictor": predictor},
        }
    )
    assert isinstance(found, InferenceService)
    return found


def tm(
    name: str,
    *,
    memory: str = "256Mi",
    framework: str = "sklearn",
    parent: str = "mms",
    created: str = "2026-12-07T10:00:00Z",
    status: dict[str, Any] | None = None,
) -> TrainedModel:
    doc: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "TrainedModel",
        "metadata": {"name": name, "namespace": "ml", "creationTimestamp": created},
        "spec": {
            "inferenceService": parent,
            "model": {
                "storageUri": f"s3://bucket/{name}",
                "framework": framework,
                "memory": memory,
            },
        },
    }
    if status is not None:
        doc["status"] = status
    found = parse_resource(doc)
    assert isinstance(found, TrainedModel)
    return found


READY_STATUS = {
    "url": "http://mms-ml.example.com",
    "address": {"url": "http://mms-predictor.ml.svc.cluster.local"},
    "conditions": [{"type": "Ready", "status": "True"}],
}


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


# -- quantities and multi-model detection ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1Gi", 2**30),
        ("256Mi", 256 * 2**20),
        ("1G", 10**9),
        ("500M", 5 * 10**8),
        ("1e3", 1000),
        ("100m", Decimal("0.1")),
        ("0.5Ki", 512),
        ("12", 12),
    ],
)
def test_parse_quantity(text: str, value: Any) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "1Xi", "abc", "1.2.3Mi"])
def test_parse_quantity_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_is_multi_model() -> None:
    assert is_multi_model(isvc())
    assert is_multi_model(isvc({"model": {"modelFormat": {"name": "xgboost"}}}))
    assert not is_multi_model(isvc({"sklearn": {"storageUri": "s3://b/m"}}))
    assert not is_multi_model(isvc({"huggingface": {"args": ["--model_id=x"]}}))
    custom = {"containers": [{"name": "kserve-container", "image": "me/server"}]}
    assert not is_multi_model(isvc(custom))
    custom["containers"][0]["env"] = [{"name": "MULTI_MODEL_SERVER", "value": "true"}]
    assert is_multi_model(isvc(custom))


# -- the ConfigMap and the statuses ------------------------------------------------------------


def test_model_config_lists_the_models_that_fit() -> None:
    models = [
        tm("b", memory="512Mi", created="2026-12-07T10:00:01Z"),
        tm("a", memory="256Mi"),
        tm("c", memory="512Mi", created="2026-12-07T10:00:02Z"),  # 256+512+512 > 1Gi
        tm("other", parent="elsewhere"),
    ]
    plan = plan_model_config(
        isvc(labels={"team": "x"}), models, isvc_name="mms", namespace="ml",
        isvc_status=READY_STATUS, now=NOW,
    )  # fmt: skip
    assert plan.configmap is not None
    assert plan.configmap["metadata"] == {
        "name": "modelconfig-mms-0",
        "namespace": "ml",
        "labels": {"team": "x", "serving.kserve.io/inferenceservice": "mms"},
    }
    assert json.loads(plan.configmap["data"]["models.json"]) == [
        {
            "modelName": "a",
            "modelSpec": {"storageUri": "s3://bucket/a", "framework": "sklearn", "memory": "256Mi"},
        },
        {
            "modelName": "b",
            "modelSpec": {"storageUri": "s3://bucket/b", "framework": "sklearn", "memory": "512Mi"},
        },
    ]
    states = {s.name: s for s in plan.models}
    assert set(states) == {"a", "b", "c"}
    assert states["a"].allocated and not states["c"].allocated
    a = states["a"].status
    assert a["url"] == "http://mms-ml.example.com/v1/models/a:predict"
    assert a["address"] == {"url": "http://mms-predictor.ml.svc.cluster.local/v1/models/a:predict"}
    assert conditions(a) == {
        kind: {"type": kind, "status": "True", "lastTransitionTime": NOW}
        for kind in ("InferenceServiceReady", "IsMMSPredictor", "MemoryResourceAvailable", "Ready")
    }
    c = conditions(states["c"].status)
    assert c["MemoryResourceAvailable"]["reason"] == "MemoryResourceNotAvailable"
    assert c["Ready"] == {
        "type": "Ready",
        "status": "False",
        "reason": "MemoryResourceNotAvailable",
        "message": "Inference Service does not have enough memory resources for Trained Model",
        "lastTransitionTime": NOW,
    }


def test_allocated_models_keep_their_place() -> None:
    first = tm("late", memory="1Gi", created="2026-12-07T11:00:00Z")
    first.metadata.labels = {"serving.kserve.io/trainedmodel-allocated": "mms"}
    plan = plan_model_config(isvc(), [tm("early", memory="1Gi"), first], isvc_name="mms",
                             namespace="ml")  # fmt: skip
    assert [s.name for s in plan.models if s.allocated] == ["late"]


def test_status_transitions_keep_their_time() -> None:
    before = plan_model_config(isvc(), [tm("a")], isvc_name="mms", namespace="ml", now=NOW)
    [state] = before.models
    assert conditions(state.status)["Ready"]["reason"] == "InferenceServiceNotReady"
    again = plan_model_config(
        isvc(), [tm("a", status=state.status)], isvc_name="mms", namespace="ml", now=LATER
    )
    assert again.models[0].status == state.status  # nothing changed: no new times
    ready = plan_model_config(
        isvc(), [tm("a", status=state.status)], isvc_name="mms", namespace="ml",
        isvc_status=READY_STATUS, now=LATER,
    )  # fmt: skip
    found = conditions(ready.models[0].status)
    assert found["Ready"]["lastTransitionTime"] == LATER
    assert found["IsMMSPredictor"]["lastTransitionTime"] == NOW


def test_v2_protocol_url_and_framework_mismatch() -> None:
    predictor = {
        "model": {
            "modelFormat": {"name": "xgboost"},
            "protocolVersion": "v2",
            "resources": {"limits": {"memory": "2Gi"}},
        }
    }
    plan = plan_model_config(
        isvc(predictor), [tm("x", framework="xgboost"), tm("s", framework="sklearn")],
        isvc_name="mms", namespace="ml", isvc_status=READY_STATUS,
    )  # fmt: skip
    states = {s.name: s for s in plan.models}
    assert states["x"].status["url"] == "http://mms-ml.example.com/v2/models/x/infer"
    assert not states["s"].allocated
    assert conditions(states["s"].status)["Ready"]["reason"] == "FrameworkNotSupported"
    assert plan.configmap is not None
    assert [e["modelName"] for e in json.loads(plan.configmap["data"]["models.json"])] == ["x"]


def test_single_model_and_missing_inference_service() -> None:
    single = plan_model_config(
        isvc({"sklearn": {"storageUri": "s3://b/m"}}), [tm("a")], isvc_name="mms", namespace="ml"
    )
    assert single.configmap is None
    [state] = single.models
    assert not state.allocated
    assert conditions(state.status)["IsMMSPredictor"]["reason"] == "IsNotMMSPredictor"
    gone = plan_model_config(None, [tm("a")], isvc_name="mms", namespace="ml")
    assert gone.configmap is None
    ready = conditions(gone.models[0].status)["Ready"]
    assert ready["reason"] == "InferenceServiceNotFound"
    assert ready["message"] == 'InferenceService "mms" not found'


def test_no_memory_limit_uses_the_default() -> None:
    plan = plan_model_config(
        isvc({"sklearn": {}}), [tm("a", memory="2Gi"), tm("b", memory="1")],
        isvc_name="mms", namespace="ml",
    )  # fmt: skip
    assert [s.allocated for s in plan.models] == [True, False]


# -- admission ---------------------------------------------------------------------------------


def test_admission_errors_carry_field_paths() -> None:
    assert admission_errors(tm("a"), isvc(), [tm("b", memory="512Mi")]) == []
    [missing] = admission_errors(tm("a"), None)
    assert missing.field == "spec.inferenceService"
    assert 'InferenceService "mms" not found' in missing.reason
    errors = admission_errors(
        tm("a", framework="xgboost", memory="1Gi"),
        isvc({"sklearn": {"storageUri": "s3://b/m", "resources": {"limits": {"memory": "1Gi"}}}}),
        [tm("b", memory="1Mi"), tm("a", memory="1Gi")],  # itself (an update) is not counted twice
    )
    assert [e.field for e in errors] == [
        "spec.inferenceService",
        "spec.model.framework",
        "spec.model.memory",
    ]
    assert errors[0].reason == (
        'Inference Service "mms" predictor is not configured for multi-model serving. '
        'Trained Model "a" cannot deploy'
    )
    assert errors[1].reason == (
        'Inference Service "mms" does not support the Trained Model "a" framework "xgboost"'
    )


# -- the predictor pod -------------------------------------------------------------------------


def render(
    tmp_path: Path, predictor: dict[str, Any], *extra: dict[str, Any]
) -> list[dict[str, Any]]:
    doc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "mms", "namespace": "ml"},
        "spec": {"predictor": predictor},
    }
    path = tmp_path / "isvc.yaml"
    path.write_text(yaml.safe_dump_all([doc, *extra]))
    objects = desired_objects(load_workload([path]))
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    return objects


def _pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def test_moorage_server_watches_the_model_config(tmp_path: Path) -> None:
    trained = tm("a").to_dict()
    objects = render(tmp_path, {"sklearn": {}}, trained)
    [configmap] = [o for o in objects if o["kind"] == "ConfigMap"]
    assert configmap["metadata"]["name"] == "modelconfig-mms-0"
    assert [e["modelName"] for e in json.loads(configmap["data"]["models.json"])] == ["a"]
    pod = _pod(objects)
    [main] = pod["containers"]
    assert "--model_config_file=/mnt/configs/models.json" in main["args"]
    assert {"name": "model-dir", "mountPath": "/mnt/models"} in main["volumeMounts"]
    assert {"name": "model-config", "mountPath": "/mnt/configs", "readOnly": True} in main[
        "volumeMounts"
    ]
    assert {"name": "model-config", "configMap": {"name": "modelconfig-mms-0"}} in pod["volumes"]
    assert {"name": "model-dir", "emptyDir": {}} in pod["volumes"]
    assert "initContainers" not in pod


def test_other_servers_get_kserves_puller(tmp_path: Path) -> None:
    predictor = {
        "model": {"modelFormat": {"name": "sklearn"}, "protocolVersion": "v2"},  # MLServer
        "logger": {"mode": "all", "url": "http://sink"},
    }
    objects = render(tmp_path, predictor)
    [configmap] = [o for o in objects if o["kind"] == "ConfigMap"]
    assert configmap["data"] == {"models.json": "[]"}
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["internal.serving.kserve.io/agent"] == "true"
    assert annotations["internal.serving.kserve.io/configVolumeName"] == "modelconfig-mms-0"
    assert annotations["internal.serving.kserve.io/configMountPath"] == "/mnt/configs"
    assert annotations["internal.serving.kserve.io/modelDir"] == "/mnt/models"
    pod = _pod(objects)
    main, agent = pod["containers"]
    assert agent["name"] == "agent"
    assert agent["args"][:5] == [
        "--enable-puller", "--config-dir", "/mnt/configs", "--model-dir", "/mnt/models",
    ]  # fmt: skip
    assert "--enable-logger" in agent["args"]
    assert agent["args"].count("--component-port") == 1
    assert {"name": "model-dir", "mountPath": "/mnt/models"} in agent["volumeMounts"]
    assert {"name": "model-config", "mountPath": "/mnt/configs"} in agent["volumeMounts"]
    assert {"name": "model-dir", "mountPath": "/mnt/models"} in main["volumeMounts"]
    assert not any("model_config_file" in a for a in main.get("args", []))


def test_single_model_predictor_has_no_model_config(tmp_path: Path) -> None:
    objects = render(tmp_path, {"sklearn": {"storageUri": "s3://b/m"}}, tm("a").to_dict())
    assert not [o for o in objects if o["kind"] == "ConfigMap"]
    assert not any(v["name"] == "model-config" for v in _pod(objects).get("volumes", []))


def test_webhook_refuses_with_the_cluster() -> None:
    pytest.importorskip("kopf")
    from moorage.controller.operator.admission import refusals

    body = tm("a", memory="2Gi").to_dict()
    parents = {"mms": isvc().to_dict()}
    assert refusals(body) == []  # without the cluster: the stateless rules only
    assert refusals(body, inference_services=parents) == [
        'spec.model.memory: Inference Service "mms" memory resources are not available. '
        'Trained Model "a" cannot deploy'
    ]
    [missing] = refusals(body, inference_services={})
    assert missing.startswith("spec.inferenceService: ")
    fits = tm("a").to_dict()
    assert refusals(fits, inference_services=parents, existing=[tm("b").to_dict()]) == []
    # an update that leaves the spec alone is not checked against the cluster again
    assert refusals(body, old=body, inference_services={}) == []
