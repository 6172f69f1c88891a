"""The admission webhooks' answers, pure: core's defaulting as a merge patch, core's validation
as refusals with field paths, for each kind the operator serves; the webhook certificate."""

from __future__ import annotations

from typing import Any

import pytest

from moorage.controller.operator.admission import WEBHOOK_KINDS, defaults, refusals
from moorage.controller.operator.webhooks import self_signed


def _isvc(predictor: dict[str, Any], name: str = "iris", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": "ns", "uid": "u", "resourceVersion": "3", **meta},
        "spec": {"predictor": predictor},
    }


def test_the_six_kinds() -> None:
    assert [k.kind for k in WEBHOOK_KINDS] == [
        "InferenceService", "ServingRuntime", "ClusterServingRuntime", "TrainedModel",
        "InferenceGraph", "LocalModelCache",
    ]  # fmt: skip


def test_defaulting_is_a_merge_patch_of_what_core_defaults() -> None:
    patch = defaults(_isvc({"sklearn": {"storageUri": "gs://b/m"}}))
    predictor = patch["spec"]["predictor"]
    assert predictor["sklearn"] is None  # the shorthand becomes `model`
    assert predictor["model"]["modelFormat"] == {"name": "sklearn"}
    assert predictor["model"]["storageUri"] == "gs://b/m"
    assert "status" not in patch
    defaulted = _isvc({"model": predictor["model"]})
    assert defaults(defaulted) == {}  # defaulting twice changes nothing


def test_defaulting_leaves_what_it_cannot_parse_to_validation() -> None:
    assert defaults(_isvc({"bogus": 1})) == {}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_isvc({"sklearn": {"storageUri": "gs://b/m"}}), []),
        (
            _isvc({"minReplicas": 5, "maxReplicas": 2, "sklearn": {"storageUri": "gs://b/m"}}),
            ["spec.predictor.minReplicas: 'MinReplicas' cannot be greater than MaxReplicas"],
        ),
        (_isvc({"bogus": 1}), ["spec.predictor.bogus: unknown field"]),
        (
            {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime",
             "metadata": {"name": "r", "namespace": "ns"},
             "spec": {"supportedModelFormats": [{"name": "sklearn", "priority": -1}],
                      "containers": [{"name": "kserve-container", "image": "x"}]}},
            ["spec.supportedModelFormats[0].priority: Invalid value: -1: should be greater than "
             "or equal to 1"],
        ),
        (
            {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ClusterServingRuntime",
             "metadata": {"name": "r"},
             "spec": {"supportedModelFormats": [{"name": "sklearn"}], "containers": []}},
            ["spec.containers: Required value"],
        ),
        (
            {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "InferenceGraph",
             "metadata": {"name": "g", "namespace": "ns"},
             "spec": {"nodes": {"other": {"routerType": "Sequence",
                                          "steps": [{"serviceName": "a"}]}}}},
            ["spec.nodes: root node not found, InferenceGraph needs a node with name 'root' as "
             "the root node of the graph"],
        ),
    ],
)  # fmt: skip
def test_refusals_carry_field_paths(body: dict[str, Any], expected: list[str]) -> None:
    assert refusals(body) == expected


def test_trained_model_storage_uri_is_checked() -> None:
    body = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "TrainedModel",
        "metadata": {"name": "t", "namespace": "ns"},
        "spec": {"inferenceService": "i",
                 "model": {"storageUri": "foo://x", "framework": "sklearn", "memory": "1Gi"}},
    }  # fmt: skip
    [problem] = refusals(body)
    assert problem.startswith("spec.model.storageUri: ")


def test_updates_follow_the_update_rules() -> None:
    cache = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LocalModelCache",
        "metadata": {"name": "c"},
        "spec": {"sourceModelUri": "gs://a/b", "modelSize": "1Gi", "nodeGroups": ["g"]},
    }
    moved = {**cache, "spec": {**cache["spec"], "sourceModelUri": "gs://a/c"}}
    assert refusals(moved) == []
    assert refusals(moved, old=cache) == ["spec.sourceModelUri: StorageUri is immutable"]


def test_self_signed_certificate_names_the_host() -> None:
    from cryptography import x509

    cert_pem, key_pem = self_signed(["moorage-operator.kserve.svc", "127.0.0.1"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["moorage-operator.kserve.svc"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert b"PRIVATE KEY" in key_pem
