"""Golden tests from KServe v0.14's documented samples (``data/kserve-samples/``: written for
these tests from what KServe's docs and samples contain, one file per sample).

Each file's second line is KServe's verdict: ``# expect: valid[; runtime <Kind>/<name>]`` or
``# expect: refused; <field path>: <part of the message>``. Checked for every sample:

* ``moorage validate`` (the library) gives that verdict, and the chosen runtime;
* the ``moorage validate -o json`` process says exactly what the library says, for the samples,
  every example under ``examples/`` and every runtime the chart installs;
* ``moorage validate`` exits non-zero on each refused sample (a real process per file);
* every InferenceService of an accepted sample renders to objects that pass the Kubernetes 1.30
  schemas (``kubernetes-validate``, strict);
* the generated CRDs (as ``kubectl apply`` checks them, strict field validation) accept every
  KServe resource of the accepted samples and refuse the samples refused for their schema.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from moorage.controller.reconcile import desired_objects
from moorage.controller.validation import validate_files
from moorage.controller.workload import load_workload
from moorage.core.resources import parse_documents

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = Path(__file__).parent / "data" / "kserve-samples"
ACCEPTED = sorted(SAMPLES.glob("*.yaml"))
REFUSED = sorted((SAMPLES / "refused").glob("*.yaml"))
REPO_FILES = [
    *sorted((ROOT / "examples/resources").glob("*.yaml")),
    *sorted((ROOT / "examples/invalid").glob("*.yaml")),
    *sorted((ROOT / "charts/moorage/runtimes").glob("*.yaml")),
    ROOT / "examples/sklearn-iris/isvc.yaml",
]
K8S_VERSION = "1.30.0"


def _expectation(path: Path) -> tuple[str, str]:
    line = path.read_text().splitlines()[1]
    assert line.startswith("# expect: "), f"{path.name}: no '# expect:' line"
    verdict, _, rest = line.removeprefix("# expect: ").partition("; ")
    return verdict, rest


def _ids(path: Path) -> str:
    return path.name


def test_enough_samples() -> None:
    assert len(ACCEPTED) >= 20 and len(REFUSED) >= 8
    kinds = {d.kind for p in ACCEPTED for d in parse_documents(p)}
    assert kinds >= {
        "InferenceService",
        "InferenceGraph",
        "TrainedModel",
        "LocalModelCache",
        "LocalModelNodeGroup",
        "ServingRuntime",
        "Secret",
        "ServiceAccount",
    }


@pytest.mark.parametrize("path", ACCEPTED, ids=_ids)
def test_accepted_sample(path: Path) -> None:
    verdict, runtime = _expectation(path)
    assert verdict == "valid"
    findings = validate_files([path])
    assert findings and all(f.ok for f in findings), [line for f in findings for line in f.lines()]
    if runtime:
        notes = [n for f in findings for n in f.notes]
        assert runtime in notes, notes


@pytest.mark.parametrize("path", REFUSED, ids=_ids)
def test_refused_sample(path: Path) -> None:
    verdict, expected = _expectation(path)
    assert verdict == "refused"
    field, _, message = expected.partition(": ")
    findings = validate_files([path])
    errors = [e for f in findings for e in f.errors]
    assert any(e.field == field and message in e.reason for e in errors), [str(e) for e in errors]


def _cli_json(*files: Path) -> tuple[int, dict]:
    args = [a for f in files for a in ("-f", str(f))]
    done = subprocess.run(
        [sys.executable, "-m", "moorage.controller", "validate", "-o", "json", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, json.loads(done.stdout)


@pytest.mark.parametrize(
    "files",
    [ACCEPTED, REFUSED, REPO_FILES],
    ids=["accepted-samples", "refused-samples", "repository-files"],
)
def test_cli_says_what_the_library_says(files: list[Path]) -> None:
    """One process per group: each file is checked with the others of its group as context,
    through the CLI and through the library alike."""
    code, report = _cli_json(*files)
    library = [f.to_json() for f in validate_files(files)]
    assert report["documents"] == library
    assert report["valid"] == all(d["valid"] for d in library)
    assert code == (0 if report["valid"] else 1)


@pytest.mark.parametrize("path", REFUSED, ids=_ids)
def test_validate_exits_non_zero(path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "moorage.controller", "validate", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith(f"moorage: error: {path}, document 0")


def _services(path: Path) -> list[str]:
    return [d.name for d in parse_documents(path) if d.kind == "InferenceService"]


@pytest.mark.parametrize("path", [p for p in ACCEPTED if _services(p)], ids=_ids)
def test_accepted_sample_renders_valid_kubernetes_objects(path: Path) -> None:
    for name in _services(path):
        objects = desired_objects(load_workload([path], name=name))
        assert objects
        for obj in objects:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            assert obj["metadata"]["namespace"]
        deployments = [o for o in objects if o["kind"] == "Deployment"]
        for deployment in deployments:
            assert "replicas" not in deployment["spec"]
            for container in deployment["spec"]["template"]["spec"]["containers"]:
                assert container["imagePullPolicy"]
                assert "readinessProbe" in container or container["name"] == "modelcar"


def test_s3_sample_renders_credentials_on_the_initializer() -> None:
    workload = load_workload([SAMPLES / "s3-credentials.yaml"], name="mnist-s3")
    [deployment] = [o for o in desired_objects(workload) if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "sa"
    [init] = pod["initContainers"]
    env = {e["name"]: e for e in init["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3creds"
    assert env["AWS_ENDPOINT_URL"]["value"] == "https://s3.amazonaws.com"
    assert env["AWS_DEFAULT_REGION"]["value"] == "us-east-2"


# --- the same verdict from the generated CRDs ---------------------------------------------------


def _strict(node: object) -> object:
    """A CRD schema as ``kubectl apply`` (strict field validation) applies it: objects with
    properties and no ``x-kubernetes-preserve-unknown-fields`` refuse unknown fields."""
    if isinstance(node, list):
        return [_strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


@functools.cache
def _crd_validator(kind: str) -> object:
    from moorage.core.resources.crds import crds

    for crd in crds().values():
        if crd["spec"]["names"]["kind"] == kind:
            schema = _strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
            return jsonschema.Draft7Validator(schema)
    raise KeyError(kind)


def _crd_verdict(doc: dict) -> bool:
    validator = _crd_validator(doc["kind"])
    return not list(validator.iter_errors(doc))  # type: ignore[attr-defined]


SCHEMA_REFUSALS = {
    "explainer-alibi.yaml",
    "spec-nodename.yaml",
    "memory-gb.yaml",
    "custom-container-unnamed.yaml",
}


@pytest.mark.parametrize("path", ACCEPTED, ids=_ids)
def test_crds_accept_the_accepted_samples(path: Path) -> None:
    for document in parse_documents(path):
        if document.resource is not None and document.resource.api_version.startswith(
            "serving.kserve.io/"
        ):
            assert _crd_verdict(document.data), (document.kind, document.name)


@pytest.mark.parametrize("name", sorted(SCHEMA_REFUSALS))
def test_crds_refuse_what_the_schema_refuses(name: str) -> None:
    path = SAMPLES / "refused" / name
    [doc] = list(yaml.safe_load_all(path.read_text()))
    assert not _crd_verdict(doc)
