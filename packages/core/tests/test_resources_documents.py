"""parse_documents: one verdict per document (a broken one hides nothing), ``kind: List``
unpacked, Kubernetes core kinds beside KServe's, located errors for text that is not YAML."""

from __future__ import annotations

import base64

import pytest

from moorage.core.errors import ValidationError
from moorage.core.resources import (
    InferenceService,
    Secret,
    ServiceAccount,
    load_resources,
    parse_documents,
)

ISVC = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {name}
spec:
  predictor:
    sklearn:
      storageUri: {uri}
"""


def test_each_document_stands_alone() -> None:
    text = "\n---\n".join(
        [
            ISVC.format(name="a", uri="gs://b/a"),
            ISVC.format(name="b", uri="{{ .Values.uri }}"),
            "# only a comment",
            ISVC.format(name="c", uri="gs://b/c"),
        ]
    )
    documents = parse_documents(text)
    assert [(d.index, d.name, bool(d.errors)) for d in documents] == [
        (0, "a", False),
        (1, "b", True),
        (3, "c", False),
    ]
    [error] = documents[1].errors
    assert error.field == "spec.predictor.sklearn.storageUri"
    assert error.reason.startswith("invalid YAML (line 18, column")
    assert error.details["document"] == 1
    with pytest.raises(ValidationError) as info:
        load_resources(text)
    assert info.value.field == "spec.predictor.sklearn.storageUri"


def test_leading_separator_and_comments_do_not_count() -> None:
    text = "# header\n---\n" + ISVC.format(name="a", uri="gs://b/a") + "---\n"
    [document] = parse_documents(text)
    assert document.index == 0 and isinstance(document.resource, InferenceService)


def test_list_is_unpacked() -> None:
    secret = base64.b64encode(b"key-id").decode()
    text = f"""\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Secret
  metadata: {{name: creds}}
  data: {{AWS_ACCESS_KEY_ID: {secret}}}
  stringData: {{HF_TOKEN: hf_x}}
- apiVersion: v1
  kind: ServiceAccount
  metadata: {{name: sa}}
  secrets: [{{name: creds}}]
- apiVersion: v1
  kind: Pod
  metadata: {{name: bad}}
  spec: {{containerz: []}}
"""
    documents = parse_documents(text)
    assert [(d.index, d.item) for d in documents] == [(0, 0), (0, 1), (0, 2)]
    creds, sa, pod = documents
    assert isinstance(creds.resource, Secret) and isinstance(sa.resource, ServiceAccount)
    assert creds.resource.value("AWS_ACCESS_KEY_ID") == "key-id"
    assert creds.resource.value("HF_TOKEN") == "hf_x"
    assert creds.resource.keys() == {"AWS_ACCESS_KEY_ID", "HF_TOKEN"}
    assert [s.name for s in sa.resource.secrets or []] == ["creds"]
    assert {(e.field, e.reason) for e in pod.errors} == {
        ("spec.containers", "Required value"),
        ("spec.containerz", "unknown field"),
    }
    assert pod.errors[0].details["item"] == 2


@pytest.mark.parametrize(
    ("api_version", "kind", "field", "hint"),
    [
        ("serving.kserve.io/v1alpha2", "InferenceService", "apiVersion", "serves InferenceService"),
        ("serving.kubeflow.org/v1alpha2", "InferenceService", "apiVersion", "KFServing's group"),
        ("serving.kserve.io/v1beta1", "ServingRuntime", "apiVersion", "serving.kserve.io/v1alpha1"),
        ("serving.kserve.io/v1alpha1", "ClusterLocalModel", "kind", "LocalModelCache"),
        ("serving.kserve.io/v1alpha1", "Explainer", "kind", "has the kinds"),
        ("batch/v1", "Job", "kind", "core kinds"),
    ],
)  # fmt: skip
def test_unknown_kinds_say_what_is_served(
    api_version: str, kind: str, field: str, hint: str
) -> None:
    [document] = parse_documents(
        f"apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: x}}\n"
    )
    [error] = document.errors
    assert error.field == field and hint in error.reason
    assert error.reason.startswith(f'no matches for kind "{kind}" in version "{api_version}"')
