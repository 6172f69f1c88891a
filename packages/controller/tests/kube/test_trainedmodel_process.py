"""TrainedModels with ``moorage operator`` as a real process against the kmock stand-in: the
model config of a multi-model InferenceService follows its TrainedModels, whose status is
written."""

from __future__ import annotations

import json
from typing import Any

import pytest

from moorage.controller.testing import OperatorRunner

from .test_operator_process import operator  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _isvc() -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "mms", "namespace": "default"},
        "spec": {"predictor": {"sklearn": {"resources": {"limits": {"memory": "1Gi"}}}}},
    }


def _tm(name: str, memory: str = "256Mi") -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "TrainedModel",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "inferenceService": "mms",
            "model": {
                "storageUri": f"gs://bucket/{name}",
                "framework": "sklearn",
                "memory": memory,
            },
        },
    }


def _listed(kube: Any) -> list[str] | None:
    configmap = kube.get("ConfigMap", "modelconfig-mms-0")
    if configmap is None:
        return None
    return [e["modelName"] for e in json.loads(configmap["data"]["models.json"])]


def test_model_config_follows_trained_models(kube: Any, operator: OperatorRunner) -> None:  # noqa: F811
    created = kube.create(_isvc())
    assert kube.wait(lambda: _listed(kube) == [], message="empty model config")
    configmap = kube.get("ConfigMap", "modelconfig-mms-0")
    [owner] = configmap["metadata"]["ownerReferences"]
    assert owner["uid"] == created["metadata"]["uid"] and owner["kind"] == "InferenceService"
    pod = kube.get("Deployment", "mms-predictor")["spec"]["template"]["spec"]
    assert {"name": "model-config", "configMap": {"name": "modelconfig-mms-0"}} in pod["volumes"]
    assert "--model_config_file=/mnt/configs/models.json" in pod["containers"][0]["args"]

    kube.create(_tm("a"))
    kube.create(_tm("b"))
    kube.create(_tm("huge", memory="2Gi"))
    kube.wait(lambda: _listed(kube) == ["a", "b"], message="a and b listed")
    status = kube.wait(lambda: (kube.get("TrainedModel", "a") or {}).get("status"))
    assert status["url"] == "http://mms-default.example.com/v1/models/a:predict"
    assert kube.condition({"status": status}, "IsMMSPredictor")["status"] == "True"
    assert kube.condition({"status": status}, "MemoryResourceAvailable")["status"] == "True"
    assert kube.condition({"status": status}, "InferenceServiceReady")["status"] == "False"
    huge = kube.wait(
        lambda: kube.condition(kube.get("TrainedModel", "huge"), "MemoryResourceAvailable")
    )
    assert huge["status"] == "False" and huge["reason"] == "MemoryResourceNotAvailable"

    def labels(name: str) -> dict[str, str]:
        return dict(kube.get("TrainedModel", name)["metadata"].get("labels") or {})

    kube.wait(lambda: len(labels("b")) == 2, message="b labelled")
    assert labels("b") == {
        "serving.kserve.io/inferenceservice": "mms",
        "serving.kserve.io/trainedmodel-allocated": "mms",
    }
    assert labels("huge") == {"serving.kserve.io/inferenceservice": "mms"}

    kube.delete("TrainedModel", "a")
    kube.wait(lambda: _listed(kube) == ["b"], message="a removed")
