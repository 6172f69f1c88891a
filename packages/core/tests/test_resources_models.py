"""Resource models: parsing, unknown fields, round trips, loader errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from moorage.core.errors import ValidationError
from moorage.core.resources import (
    ClusterServingRuntime,
    InferenceService,
    LocalModelCache,
    LocalModelNode,
    ModelFormat,
    ModelSpec,
    PredictorSpec,
    load_resources,
    matching_cache,
    parse_resource,
)
from moorage.core.resources._meta import ObjectMeta

ISVC = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: sklearn-iris
  creationTimestamp: 2024-12-01T10:00:00Z
spec:
  predictor:
    sklearn:
      storageUri: gs://kfserving-examples/models/sklearn/1.0/model
      resources:
        limits: {cpu: 1, memory: 2Gi}
"""


def test_parse_and_access_in_python() -> None:
    (isvc,) = load_resources(ISVC)
    assert isinstance(isvc, InferenceService)
    assert isvc.name == "sklearn-iris"
    sklearn = isvc.spec.predictor.sklearn
    assert sklearn is not None
    assert sklearn.storage_uri == "gs://kfserving-examples/models/sklearn/1.0/model"
    assert sklearn.resources is not None and sklearn.resources.limits == {"cpu": 1, "memory": "2Gi"}
    # timestamps stay strings, as Kubernetes' YAML-to-JSON step keeps them
    assert isvc.metadata.creation_timestamp == "2024-12-01T10:00:00Z"
    assert isvc.spec.predictor.implementations()[0][0] == "sklearn"


def test_quantities_keep_their_json_type() -> None:
    (isvc,) = load_resources(ISVC)
    limits = isvc.to_dict()["spec"]["predictor"]["sklearn"]["resources"]["limits"]
    assert limits == {"cpu": 1, "memory": "2Gi"}
    assert type(limits["cpu"]) is int


def test_build_in_python_with_snake_case() -> None:
    isvc = InferenceService(
        metadata=ObjectMeta(name="m"),
        spec={
            "predictor": PredictorSpec(
                model=ModelSpec(model_format=ModelFormat(name="sklearn"), storage_uri="s3://b/m"),
                min_replicas=1,
            )
        },
    )
    assert isvc.to_dict() == {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "m"},
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://b/m"},
            }
        },
    }


def test_unknown_spec_field_is_rejected_with_its_path() -> None:
    text = ISVC.replace("storageUri:", "storageURI:")
    with pytest.raises(ValidationError) as info:
        load_resources(text)
    assert info.value.field == "spec.predictor.sklearn.storageURI"
    assert info.value.reason == "unknown field"
    assert info.value.details["document"] == 0


def test_unknown_status_field_is_pruned() -> None:
    doc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "x"},
        "spec": {"predictor": {"sklearn": {"storageUri": "gs://b/m"}}},
        "status": {"url": "http://x", "futureField": {"a": 1}},
    }
    isvc = parse_resource(doc)
    assert isvc.to_dict()["status"] == {"url": "http://x"}


def test_hostipc_alias_and_pod_fields() -> None:
    (runtime,) = load_resources(
        """
apiVersion: serving.kserve.io/v1alpha1
kind: ClusterServingRuntime
metadata: {name: r}
spec:
  hostIPC: true
  containers: [{name: kserve-container, image: x}]
"""
    )
    assert isinstance(runtime, ClusterServingRuntime)
    assert runtime.spec.host_ipc is True
    assert runtime.to_dict()["spec"]["hostIPC"] is True


def test_multi_document_order_and_errors_name_the_document(tmp_path: Path) -> None:
    good = ISVC.strip()
    bad = good.replace("name: sklearn-iris", "name: other").replace(
        "sklearn:", "sklearn:\n      bogus: 1"
    )
    path = tmp_path / "two.yaml"
    path.write_text(f"---\n{good}\n---\n---\n{bad}\n")
    with pytest.raises(ValidationError) as info:
        load_resources(path)
    assert info.value.details["document"] == 2  # the empty document still counts
    assert info.value.details["path"] == str(path)
    assert info.value.field == "spec.predictor.sklearn.bogus"
    assert [r.name for r in load_resources(f"{good}\n---\n{good}")] == ["sklearn-iris"] * 2


def test_list_index_and_map_key_paths() -> None:
    text = """
apiVersion: serving.kserve.io/v1alpha1
kind: LocalModelNode
metadata: {name: n}
spec:
  localModels:
    - {modelName: a, sourceModelUri: gs://a}
    - {modelName: b}
"""
    with pytest.raises(ValidationError) as info:
        load_resources(text)
    assert info.value.field == "spec.localModels[1].sourceModelUri"
    assert info.value.reason == "Required value"


def test_all_errors_are_reported() -> None:
    text = ISVC.replace("storageUri:", "storageURI:").replace("resources:", "resourcez:")
    with pytest.raises(ValidationError) as info:
        load_resources(text)
    fields = {e.field for e in info.value.details["errors"]}
    assert fields == {"spec.predictor.sklearn.storageURI", "spec.predictor.sklearn.resourcez"}


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("kind: InferenceService\nmetadata: {name: x}\n", "apiVersion"),
        ("apiVersion: apps/v1\nkind: Deployment\n", "kind"),
        ("[1, 2]", ""),
        ("a: [unclosed", "a"),  # the field whose value is not YAML
    ],
)
def test_structural_errors(text: str, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        load_resources(text)
    assert info.value.field == field


def test_local_model_cache_matches_by_prefix() -> None:
    cache = LocalModelCache.model_validate(
        {
            "apiVersion": "serving.kserve.io/v1alpha1",
            "kind": "LocalModelCache",
            "metadata": {"name": "llama"},
            "spec": {
                "sourceModelUri": "hf://meta-llama/llama",
                "modelSize": "10Gi",
                "nodeGroups": ["w"],
            },
        }
    )
    assert cache.matches("hf://meta-llama/llama")
    assert cache.matches("hf://meta-llama/llama/sub")
    assert not cache.matches("hf://meta-llama/other")


def test_matching_cache_is_the_first_by_name_whose_source_prefixes_the_uri() -> None:
    sources = {"zeta": "s3://b/models", "alpha": "s3://b/models/llama", "empty": ""}
    assert matching_cache("s3://b/models/llama/v1", sources) == "alpha"
    assert matching_cache("s3://b/models/other", sources) == "zeta"
    assert matching_cache("s3://elsewhere", sources) is None
    assert matching_cache("s3://b/models", {}) is None


def test_cache_status_extensions_round_trip() -> None:
    """modelDetails and conditions, as moorage-cache's agent and controller write them."""
    node = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LocalModelNode",
        "metadata": {"name": "node-a"},
        "spec": {"localModels": [{"sourceModelUri": "s3://b/m", "modelName": "m"}]},
        "status": {
            "modelStatus": {"m": "ModelDownloading", "n": "ModelDownloadError"},
            "modelDetails": {
                "m": {"message": "downloading", "bytesDownloaded": 10, "bytesTotal": 40,
                      "bytesFetched": 10, "attempts": 1},
                "n": {"message": "access denied"},
            },
        },
    }  # fmt: skip
    parsed = parse_resource(node)
    assert isinstance(parsed, LocalModelNode) and parsed.status is not None
    assert parsed.status.model_details is not None
    assert parsed.status.model_details["m"].bytes_total == 40
    assert parsed.status.model_details["n"].attempts is None
    assert parsed.to_dict() == node
    cache = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LocalModelCache",
        "metadata": {"name": "m"},
        "spec": {"sourceModelUri": "s3://b/m", "modelSize": "1Gi", "nodeGroups": ["w"]},
        "status": {
            "nodeStatus": {"node-a": "NodeDownloading"},
            "copies": {"total": 1, "available": 0, "failed": 0},
            "inferenceServices": [],
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "Downloading",
                 "message": "0 of 1 nodes have the model"},
            ],
        },
    }  # fmt: skip
    parsed_cache = parse_resource(cache)
    assert isinstance(parsed_cache, LocalModelCache) and parsed_cache.status is not None
    assert parsed_cache.status.conditions is not None
    assert parsed_cache.status.conditions[0].reason == "Downloading"
    assert parsed_cache.to_dict() == cache
