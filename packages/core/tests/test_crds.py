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


# --- integer formats and merge extensions, as Kubernetes' and KServe's schemas have them ----------


def _at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The schema node at a dotted path; ``[]`` steps into a list's items."""
    node = schema
    for part in path.split("."):
        node = node["properties"][part.removesuffix("[]")]
        if part.endswith("[]"):
            node = node["items"]
    return node


def _spec_schema(kind: str) -> dict[str, Any]:
    for crd in GENERATED.values():
        if crd["spec"]["names"]["kind"] == kind:
            schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            return schema["properties"]["spec"]
    raise KeyError(kind)


@pytest.mark.parametrize(
    ("kind", "path", "expected"),
    [
        # Kubernetes' core types, as its OpenAPI definitions declare them.
        ("InferenceService", "predictor.containers[].ports[].containerPort", "int32"),
        ("InferenceService", "predictor.model.ports[].hostPort", "int32"),
        ("InferenceService", "predictor.terminationGracePeriodSeconds", "int64"),
        ("InferenceService", "predictor.model.readinessProbe.periodSeconds", "int32"),
        ("InferenceService", "predictor.volumes[].secret.defaultMode", "int32"),
        ("InferenceService", "predictor.securityContext.runAsUser", "int64"),
        ("InferenceService", "predictor.securityContext.supplementalGroups[]", "int64"),
        ("InferenceService", "predictor.tolerations[].tolerationSeconds", "int64"),
        ("ServingRuntime", "containers[].livenessProbe.grpc.port", "int32"),
        # KServe's Go types: int64 and int32 fields carry a format, Go's int none.
        ("InferenceService", "predictor.containerConcurrency", "int64"),
        ("InferenceService", "predictor.timeout", "int64"),
        ("InferenceService", "transformer.canaryTrafficPercent", "int64"),
        ("InferenceService", "predictor.minReplicas", None),
        ("InferenceService", "predictor.maxReplicas", None),
        ("InferenceService", "predictor.scaleTarget", None),
        ("InferenceService", "predictor.batcher.maxBatchSize", None),
        ("InferenceService", "predictor.workerSpec.size", None),
        ("ServingRuntime", "supportedModelFormats[].priority", "int32"),
        ("ClusterServingRuntime", "replicas", None),  # *uint16
        ("InferenceGraph", "timeout", "int64"),
        ("InferenceGraph", "minReplicas", None),
    ],
)
def test_integer_formats(kind: str, path: str, expected: str | None) -> None:
    node = _at(_spec_schema(kind), path)
    assert node["type"] == "integer"
    assert node.get("format") == expected


def test_integer_formats_keep_other_constraints() -> None:
    priority = _at(_spec_schema("ServingRuntime"), "supportedModelFormats[].priority")
    assert priority == {"type": "integer", "format": "int32", "minimum": 1}
    step = _spec_schema("InferenceGraph")["properties"]["nodes"]["additionalProperties"]
    assert _at(step, "steps[].weight")["format"] == "int64"


def test_status_integer_formats() -> None:
    crd = GENERATED["serving.kserve.io_inferenceservices.yaml"]
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert _at(status, "observedGeneration")["format"] == "int64"
    assert _at(status, "modelStatus.lastFailureInfo.exitCode")["format"] == "int32"
    assert _at(status, "modelStatus.copies.totalCopies").get("format") is None


def _int_checker() -> jsonschema.FormatChecker:
    """The API server's check of integer formats: a value must fit the declared width."""
    checker = jsonschema.FormatChecker()
    for fmt, bits in (("int32", 32), ("int64", 64)):
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        checker.checks(fmt)(
            lambda v, low=low, high=high: not isinstance(v, int) or low <= v <= high
        )
    return checker


def test_crd_refuses_integers_out_of_their_format() -> None:
    schema = _isvc_schema()
    validator = jsonschema.Draft7Validator(schema, format_checker=_int_checker())
    doc = yaml.safe_load(PROBE_ISVC)
    validator.validate(doc)
    doc["spec"]["predictor"]["model"]["ports"][0]["containerPort"] = 2**31
    assert [e.validator for e in validator.iter_errors(doc)] == ["format"]
    doc["spec"]["predictor"]["model"]["ports"][0]["containerPort"] = 8080
    doc["spec"]["predictor"]["containerConcurrency"] = 2**31  # int64: fits
    validator.validate(doc)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_fit_their_integer_formats(path: Path) -> None:
    for doc in yaml.load_all(path.read_text(), Loader=_Loader):
        if doc is None or doc.get("kind") == "ConfigMap":
            continue
        validator = _validator(doc["kind"])
        formats = type(validator)(validator.schema, format_checker=_int_checker())
        formats.validate(doc)


# Kubernetes' own definitions, which the core models are generated from.
_EXTENSIONS = ("x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type")

#: Where KServe's CRDs, and so ours, depart from Kubernetes' extensions: KServe's copy of
#: PodSpec (components, workerSpec) declares no list type on these (they merge as atomic lists).
_MAP_BY_NAME = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}
_KSERVE_PODSPEC = {
    ".containers": _MAP_BY_NAME,
    ".initContainers": _MAP_BY_NAME,
    ".volumes": _MAP_BY_NAME,
    ".imagePullSecrets": _MAP_BY_NAME,
    ".hostAliases": {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["ip"]},
}


@functools.cache
def _kubernetes_definitions() -> dict[str, Any]:
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    text = (base / f"v{K8S_VERSION}-local-strict" / "_definitions.json").read_text()
    definitions: dict[str, Any] = yaml.load(text, Loader=_Loader)["$defs"]
    return definitions


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    """The definition a node refers to; the node's own keys win (``claimRef`` is a granular
    ObjectReference, though ObjectReference is atomic)."""
    while "$ref" in node:
        target = _kubernetes_definitions()[node["$ref"].rsplit("/", 1)[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _compare(
    theirs: dict[str, Any],
    ours: dict[str, Any],
    path: str,
    out: list[str],
    departures: dict[str, dict[str, Any]],
) -> None:
    theirs = _deref(theirs)
    wanted = {k: theirs[k] for k in _EXTENSIONS if k in theirs}
    kinds = theirs.get("type")
    if theirs.get("format") in ("int32", "int64") and "integer" in (kinds or ()):
        wanted["format"] = theirs["format"]
    for key, value in departures.get(path, {}).items():
        assert wanted.pop(key) == value, (path, key)
    got = {k: ours[k] for k in (*_EXTENSIONS, "format") if k in ours}
    if got != wanted:
        out.append(f"{path}: ours {got}, Kubernetes {wanted}")
    for name, child in theirs.get("properties", {}).items():
        if name in ours.get("properties", {}):
            _compare(child, ours["properties"][name], f"{path}.{name}", out, departures)
        elif name != "ephemeralContainers":  # none in KServe's CRDs
            out.append(f"{path}.{name}: missing")
    if isinstance(theirs.get("items"), dict):
        _compare(theirs["items"], ours["items"], f"{path}[]", out, departures)
    extra = theirs.get("additionalProperties")
    if isinstance(extra, dict) and isinstance(ours.get("additionalProperties"), dict):
        _compare(extra, ours["additionalProperties"], f"{path}{{}}", out, departures)


@pytest.mark.parametrize(
    ("definition", "kind", "path"),
    [
        ("io.k8s.api.core.v1.Container", "InferenceService", "predictor.containers[]"),
        ("io.k8s.api.core.v1.Container", "ServingRuntime", "containers[]"),
        ("io.k8s.api.core.v1.Container", "ClusterStorageContainer", "container"),
        ("io.k8s.api.core.v1.PodSpec", "InferenceService", "predictor"),
        ("io.k8s.api.core.v1.PodSpec", "InferenceService", "transformer"),
        ("io.k8s.api.core.v1.PodSpec", "InferenceService", "predictor.workerSpec"),
        ("io.k8s.api.core.v1.Volume", "InferenceService", "predictor.volumes[]"),
        ("io.k8s.api.core.v1.Volume", "ClusterServingRuntime", "volumes[]"),
        ("io.k8s.api.core.v1.PersistentVolumeSpec", "LocalModelNodeGroup", "persistentVolumeSpec"),
    ],
)
def test_extensions_and_formats_match_kubernetes(definition: str, kind: str, path: str) -> None:
    """Server-side apply merges lists and maps by these extensions: ours are Kubernetes'."""
    departures = _KSERVE_PODSPEC if definition.endswith(".PodSpec") else {}
    problems: list[str] = []
    _compare({"$ref": definition}, _at(_spec_schema(kind), path), "", problems, departures)
    assert problems == []
