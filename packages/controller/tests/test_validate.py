"""``moorage validate``: every document of every file, every kind, errors located by file,
document, kind/name and field path; ``-o json``; non-zero exit on any error."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from moorage.controller.cli import main
from moorage.controller.validation import validate_files

ROOT_RUNTIMES = Path(__file__).resolve().parents[3] / "charts/moorage/runtimes"

ISVC = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {name}
spec:
  predictor:
{predictor}
"""
SKLEARN = "    sklearn:\n      storageUri: gs://kfserving-examples/models/sklearn/1.0/model"


def isvc(name: str = "iris", predictor: str = SKLEARN) -> str:
    return ISVC.format(name=name, predictor=predictor)


def cli(*args: str) -> tuple[int, str, str]:
    out = io.StringIO()
    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["validate", *args], out=out)
    return code, out.getvalue(), err.getvalue()


def json_report(*args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = cli(*args, "-o", "json")
    return code, json.loads(out)


@pytest.fixture
def file(tmp_path: Path):
    def _file(text: str, name: str = "f.yaml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return _file


def test_every_document_and_kind(file) -> None:
    text = "---\n".join(
        [
            isvc("one"),
            isvc("two", "    xgboost:\n      storageUri: gs://b/x"),
            "apiVersion: serving.kserve.io/v1alpha1\nkind: TrainedModel\nmetadata: {name: tm}\n"
            "spec:\n  inferenceService: one\n  model:\n    storageUri: gs://b/m\n"
            "    framework: sklearn\n    memory: 1Gi\n",
            "apiVersion: serving.kserve.io/v1alpha1\nkind: LocalModelNodeGroup\n"
            "metadata: {name: workers}\nspec:\n  storageLimit: 10Gi\n"
            "  persistentVolumeSpec: {accessModes: [ReadWriteOnce], capacity: {storage: 10Gi},"
            " hostPath: {path: /models}}\n"
            "  persistentVolumeClaimSpec: {accessModes: [ReadWriteOnce],"
            " resources: {requests: {storage: 10Gi}}}\n",
            "apiVersion: serving.kserve.io/v1alpha1\nkind: LocalModelCache\n"
            "metadata: {name: llama}\nspec:\n  sourceModelUri: gs://b/llama\n  modelSize: 5Gi\n"
            "  nodeGroups: [workers]\n",
        ]
    )
    path = file(text)
    code, out, err = cli("-f", path)
    assert code == 0, err
    assert out.splitlines() == [
        f"{path}, document 0: InferenceService/one: valid "
        "(runtime ClusterServingRuntime/kserve-sklearnserver)",
        f"{path}, document 1: InferenceService/two: valid "
        "(runtime ClusterServingRuntime/kserve-xgbserver)",
        f"{path}, document 2: TrainedModel/tm: valid",
        f"{path}, document 3: LocalModelNodeGroup/workers: valid",
        f"{path}, document 4: LocalModelCache/llama: valid",
    ]


def test_runtimes_alone_and_list_and_core_kinds(file) -> None:
    runtimes = file(
        "apiVersion: serving.kserve.io/v1alpha1\nkind: ServingRuntime\nmetadata: {name: mine}\n"
        "spec:\n  supportedModelFormats: [{name: custom, autoSelect: true}]\n"
        "  containers: [{name: kserve-container, image: me/server:1}]\n",
        "runtimes.yaml",
    )
    listed = file(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": "s3creds"},
                        "stringData": {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
                    },
                    {
                        "apiVersion": "v1",
                        "kind": "ServiceAccount",
                        "metadata": {"name": "sa"},
                        "secrets": [{"name": "s3creds"}],
                    },
                    yaml.safe_load(
                        isvc("custom", "    model:\n      modelFormat: {name: custom}\n"
                             "      storageUri: s3://b/m")
                    ),
                ],
            }
        ),
        "list.yaml",
    )  # fmt: skip
    code, out, err = cli("-f", runtimes, "-f", listed)
    assert code == 0, err
    assert out.splitlines() == [
        f"{runtimes}, document 0: ServingRuntime/mine: valid",
        f"{listed}, document 0, items[0]: Secret/s3creds: valid",
        f"{listed}, document 0, items[1]: ServiceAccount/sa: valid",
        f"{listed}, document 0, items[2]: InferenceService/custom: valid "
        "(runtime ServingRuntime/mine)",
    ]


BAD = {
    "api version v1alpha2": (
        isvc().replace("v1beta1", "v1alpha2"),
        "apiVersion",
        'no matches for kind "InferenceService" in version "serving.kserve.io/v1alpha2"',
    ),
    "kfserving group": (
        isvc().replace("serving.kserve.io", "serving.kubeflow.org"),
        "apiVersion",
        "serving.kubeflow.org is KFServing's group",
    ),
    "unknown kind": (
        "apiVersion: serving.kserve.io/v1alpha1\nkind: Predictor\nmetadata: {name: p}\n",
        "kind",
        'no matches for kind "Predictor"',
    ),
    "v0.14.0 ClusterLocalModel": (
        "apiVersion: serving.kserve.io/v1alpha1\nkind: ClusterLocalModel\nmetadata: {name: m}\n"
        "spec: {sourceModelUri: gs://b/m, modelSize: 1Gi, nodeGroup: workers}\n",
        "kind",
        "renamed it LocalModelCache",
    ),
    "apps kind": (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
        "kind",
        'no matches for kind "Deployment" in version "apps/v1"',
    ),
    "explainer.alibi": (
        isvc() + "  explainer:\n    alibi:\n      type: AnchorTabular\n",
        "spec.explainer.alibi",
        "unknown field",
    ),
    "spec.nodeName": (isvc() + "  nodeName: node-1\n", "spec.nodeName", "unknown field"),
    "template placeholder": (
        isvc(predictor="    sklearn:\n      storageUri: {{ .Values.storageUri }}"),
        "spec.predictor.sklearn.storageUri",
        "invalid YAML (line 17, column 20)",  # of the file,
    ),
    "no runtime": (
        isvc(predictor="    model:\n      modelFormat: {name: caffe}\n      storageUri: gs://b/m"),
        "spec.predictor.model.modelFormat",
        "no runtime found to support predictor with model type: caffe",
    ),
    "secret data not strings": (
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {key: [1]}\n",
        "data.key",
        "",
    ),
    "core kind without a name": (
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {}\n",
        "metadata.name",
        "Required value",
    ),
    "inferenceservice-config not JSON": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: inferenceservice-config}\n"
        "data:\n  ingress: '{not json'\n",
        "data.ingress",
        "invalid JSON",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_with_its_place(file, case: str) -> None:
    text, field, message = BAD[case]
    good = isvc("fine")
    path = file(good + "---\n" + text)
    code, out, err = cli("-f", path)
    assert code == 1
    assert "InferenceService/fine: valid" in out  # the other document is still checked
    [line] = err.splitlines()
    assert line.startswith(f"moorage: error: {path}, document 1")
    assert f": {field}: " in line and message in line
    code, report = json_report("-f", path)
    assert code == 1 and report["valid"] is False
    first, second = report["documents"]
    assert first["valid"] and first["errors"] == []
    assert second["document"] == 1 and not second["valid"]
    assert second["errors"][0]["field"] == field and message in second["errors"][0]["message"]


def test_json_and_library_agree(file) -> None:
    path = file(isvc("a") + "---\n" + isvc("b") + "  nodeName: x\n")
    code, report = json_report("-f", path)
    assert code == 1
    assert report["documents"] == [f.to_json() for f in validate_files([path])]
    assert report["documents"][0] == {
        "file": path,
        "document": 0,
        "item": None,
        "kind": "InferenceService",
        "name": "a",
        "valid": True,
        "errors": [],
        "notes": ["runtime ClusterServingRuntime/kserve-sklearnserver"],
    }


def test_missing_file_and_empty_file(file, tmp_path: Path) -> None:
    code, _, err = cli("-f", str(tmp_path / "nope.yaml"), "-f", file("# nothing\n"))
    assert code == 1
    assert f"{tmp_path / 'nope.yaml'}: no such file" in err
    assert "f.yaml: no documents" in err


def test_runtime_priorities_across_files(file) -> None:
    runtime = (
        "apiVersion: serving.kserve.io/v1alpha1\nkind: ClusterServingRuntime\n"
        "metadata: {{name: {name}}}\nspec:\n  protocolVersions: [v1]\n"
        "  supportedModelFormats:\n"
        "    [{{name: sklearn, version: '1', autoSelect: true, priority: 1}}]\n"
        "  containers: [{{name: kserve-container, image: x}}]\n"
    )
    code, _, err = cli("-f", file(runtime.format(name="a"), "a.yaml"), "-f",
                       file(runtime.format(name="b"), "b.yaml"))  # fmt: skip
    assert code == 1
    assert "spec.supportedModelFormats[0].priority: same priority assigned" in err


def test_one_runtime_in_two_files_is_one_object(file) -> None:
    """Applying the same runtime twice is an update: no priority clash with itself."""
    runtime = (ROOT_RUNTIMES / "kserve-mlserver.yaml").read_text()
    code, _, err = cli("-f", file(runtime, "a.yaml"), "-f", file(runtime, "b.yaml"))
    assert code == 0, err
