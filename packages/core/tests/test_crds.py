"""Generated CRDs: committed copies are fresh, valid against Kubernetes' own schemas, structural,
and accept every example."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from moorage.core.resources import KINDS, builtin_runtimes
from moorage.core.resources._loader import _Loader
from moorage.core.resources.crds import crds, render, write

ROOT = Path(__file__).resolve().parents[3]
CRD_DIR = ROOT / "charts/moorage/crds"
GENERATED = crds()
EXAMPLES = sorted((ROOT / "examples/resources").glob("*.yaml")) + sorted(
    (ROOT / "charts/moorage/runtimes").glob("*.yaml")
)
K8S_VERSION = "1.30.0"


def test_committed_crds_are_fresh() -> None:
    stale = write(CRD_DIR, check=True)
    assert stale == [], (
        f"stale CRDs {stale}: run `python -m moorage.core.resources.crds --out charts/moorage/crds`"
    )
    committed = {p.name for p in CRD_DIR.glob("*.yaml")}
    assert committed == set(GENERATED)


def test_one_crd_per_kind() -> None:
    kinds = {crd["spec"]["names"]["kind"] for crd in GENERATED.values()}
    assert kinds == {kind for _, kind in KINDS}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_crd_is_valid_kubernetes(name: str) -> None:
    kubernetes_validate.validate(GENERATED[name], K8S_VERSION, strict=True)


def _walk(node: dict[str, Any], path: str, problems: list[str]) -> None:
    special = node.get("x-kubernetes-int-or-string") or node.get(
        "x-kubernetes-preserve-unknown-fields"
    )
    if "type" not in node and not special:
        problems.append(f"{path}: no type")
    for key in ("$ref", "oneOf", "allOf", "not", "nullable"):
        if key in node:
            problems.append(f"{path}: {key}")
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        problems.append(f"{path}: anyOf")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties")
    for key, child in node.get("properties", {}).items():
        _walk(child, f"{path}.{key}", problems)
    if isinstance(node.get("items"), dict):
        _walk(node["items"], f"{path}[]", problems)
    if isinstance(node.get("additionalProperties"), dict):
        _walk(node["additionalProperties"], f"{path}{{}}", problems)


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_schema_is_structural(name: str) -> None:
    problems: list[str] = []
    schema = GENERATED[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    _walk(schema, "", problems)
    assert problems == []


def test_inferenceservice_crd_shape() -> None:
    crd = GENERATED["serving.kserve.io_inferenceservices.yaml"]
    assert crd["metadata"]["name"] == "inferenceservices.serving.kserve.io"
    assert crd["spec"]["names"]["shortNames"] == ["isvc"]
    assert crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1beta1"
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:4] == ["URL", "Ready", "Prev", "Latest"]
    assert columns[-1] == "Age"
    predictor = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "predictor"
    ]
    props = predictor["properties"]
    for field in (
        "sklearn",
        "xgboost",
        "lightgbm",
        "huggingface",
        "pytorch",
        "tensorflow",
        "onnx",
        "triton",
        "pmml",
        "paddle",
        "model",
        "containers",
        "hostIPC",
        "minReplicas",
        "scaleMetric",
        "logger",
        "batcher",
        "deploymentStrategy",
    ):
        assert field in props, field
    assert props["scaleMetric"]["enum"] == ["cpu", "memory", "concurrency", "rps"]
    limits = props["sklearn"]["properties"]["resources"]["properties"]["limits"]
    assert limits["additionalProperties"]["x-kubernetes-int-or-string"] is True


def test_short_names_and_scopes() -> None:
    by_kind = {c["spec"]["names"]["kind"]: c["spec"] for c in GENERATED.values()}
    assert by_kind["InferenceGraph"]["names"]["shortNames"] == ["ig"]
    assert by_kind["TrainedModel"]["names"]["shortNames"] == ["tm"]
    for kind in (
        "ClusterServingRuntime",
        "ClusterStorageContainer",
        "LocalModelCache",
        "LocalModelNodeGroup",
        "LocalModelNode",
    ):
        assert by_kind[kind]["scope"] == "Cluster", kind
    assert "subresources" not in by_kind["ClusterStorageContainer"]["versions"][0]
    cache = by_kind["LocalModelCache"]["versions"][0]["schema"]["openAPIV3Schema"]
    uri = cache["properties"]["spec"]["properties"]["sourceModelUri"]
    assert uri["x-kubernetes-validations"][0]["message"] == "StorageUri is immutable"


@functools.cache
def _validator(kind: str) -> Any:
    """A validator of the kind's openAPIV3Schema (built once: the schemas are large)."""
    for crd in GENERATED.values():
        if crd["spec"]["names"]["kind"] == kind:
            schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            return jsonschema.Draft7Validator(schema)
    raise KeyError(kind)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_fit_their_crd(path: Path) -> None:
    for doc in yaml.load_all(path.read_text(), Loader=_Loader):
        if doc is None or doc.get("kind") == "ConfigMap":
            continue
        _validator(doc["kind"]).validate(doc)


def test_crd_rejects_what_the_model_rejects() -> None:
    doc: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LocalModelCache",
        "metadata": {"name": "x"},
        "spec": {"sourceModelUri": "hf://a/b", "modelSize": "1Gi", "nodeGroups": ["a", "b"]},
    }
    with pytest.raises(jsonschema.ValidationError):
        _validator("LocalModelCache").validate(doc)
    doc["spec"]["nodeGroups"] = ["a"]
    doc["spec"]["modelSize"] = 1.5  # Quantity is int-or-string in a CRD
    with pytest.raises(jsonschema.ValidationError):
        _validator("LocalModelCache").validate(doc)


def test_builtin_runtimes_fit_the_crd() -> None:
    for runtime in builtin_runtimes():
        _validator("ClusterServingRuntime").validate(runtime.to_dict())


def test_generated_k8s_models_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen-k8s-models.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_render_is_yaml_of_the_crd() -> None:
    crd = GENERATED["serving.kserve.io_localmodelcaches.yaml"]
    text = render(crd)
    assert text.startswith("# Generated by `python -m moorage.core.resources.crds`")
    assert yaml.safe_load(text) == crd


def test_check_reports_stale_files(tmp_path: Path) -> None:
    assert len(write(tmp_path, check=True)) == len(GENERATED)  # nothing there yet
    assert len(write(tmp_path)) == len(GENERATED)
    assert write(tmp_path, check=True) == []
    (tmp_path / "serving.kserve.io_localmodelnodes.yaml").write_text("---\n{}\n")
    assert write(tmp_path, check=True) == ["serving.kserve.io_localmodelnodes.yaml"]


# --- fidelity to KServe's CRDs ------------------------------------------------------------------

PROBE_ISVC = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: probes
spec:
  predictor:
    model:
      modelFormat: {name: sklearn}
      storageUri: gs://b/m
      readinessProbe:
        httpGet: {path: /v2/health/ready}
      livenessProbe:
        tcpSocket: {}
      resources:
        limits: {memory: 2Gi, cpu: 500m}
      ports:
        - containerPort: 8080
"""


def _isvc_schema() -> dict[str, Any]:
    crd = GENERATED["serving.kserve.io_inferenceservices.yaml"]
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_probes_need_no_port_in_model_and_crd() -> None:
    from moorage.core.resources import load_resources

    doc = yaml.safe_load(PROBE_ISVC)
    _validator("InferenceService").validate(doc)
    [isvc] = load_resources(PROBE_ISVC)
    assert isvc.to_dict() == doc
    model = _isvc_schema()["properties"]["spec"]["properties"]["predictor"]["properties"]["model"]
    assert "required" not in model["properties"]["readinessProbe"]["properties"]["httpGet"]


def test_quantities_have_kubernetes_pattern() -> None:
    from moorage.core.errors import ValidationError
    from moorage.core.resources import load_resources

    bad = PROBE_ISVC.replace("memory: 2Gi", "memory: 2GB")
    with pytest.raises(jsonschema.ValidationError):
        _validator("InferenceService").validate(yaml.safe_load(bad))
    with pytest.raises(ValidationError) as info:
        load_resources(bad)
    errors = info.value.details.get("errors") or [info.value]
    assert [e.field for e in errors] == ["spec.predictor.model.resources.limits.memory"]
    assert "quantities must match the regular expression" in errors[0].reason
    for good in ("2Gi", "500m", "1e3", "0.5", "+1", "1.5E2"):
        load_resources(PROBE_ISVC.replace("memory: 2Gi", f"memory: {good!r}"))


def test_custom_containers_need_a_name() -> None:
    from moorage.core.errors import ValidationError
    from moorage.core.resources import load_resources

    doc = yaml.safe_load(PROBE_ISVC)
    doc["spec"]["predictor"] = {"containers": [{"image": "me/server:1"}]}
    with pytest.raises(jsonschema.ValidationError):
        _validator("InferenceService").validate(doc)
    with pytest.raises(ValidationError) as info:
        load_resources(yaml.safe_dump(doc))
    assert info.value.field == "spec.predictor.containers[0].name"
    doc["spec"]["predictor"]["containers"][0]["name"] = "kserve-container"
    _validator("InferenceService").validate(doc)


def test_ports_are_a_map_keyed_by_port_and_protocol() -> None:
    containers = _isvc_schema()["properties"]["spec"]["properties"]["predictor"]["properties"][
        "containers"
    ]
    ports = containers["items"]["properties"]["ports"]
    assert ports["x-kubernetes-list-type"] == "map"
    assert ports["x-kubernetes-list-map-keys"] == ["containerPort", "protocol"]
    assert ports["items"]["properties"]["protocol"]["default"] == "TCP"


def test_status_keeps_unknown_fields_and_no_ephemeral_containers() -> None:
    for crd in GENERATED.values():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        if "status" in schema["properties"]:
            assert schema["properties"]["status"]["x-kubernetes-preserve-unknown-fields"] is True
        assert "ephemeralContainers" not in yaml.safe_dump(crd)
