"""Defaulting and validation: KServe's webhook rules and messages, with field paths."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from moorage.core.config.configmap import InferenceServiceConfig
from moorage.core.errors import ValidationError
from moorage.core.resources import (
    InferenceService,
    LocalModelCache,
    Resource,
    ServingRuntime,
    default,
    ensure_valid,
    parse_resource,
    validate,
    validate_update,
)
from moorage.core.resources._validation import validate_storage_uri


def isvc(predictor: dict[str, Any], **meta: Any) -> InferenceService:
    doc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "m", **meta},
        "spec": {"predictor": predictor},
    }
    resource = parse_resource(doc)
    assert isinstance(resource, InferenceService)
    return resource


def cache(name: str, uri: str, groups: list[str] | None = None) -> LocalModelCache:
    resource = parse_resource(
        {
            "apiVersion": "serving.kserve.io/v1alpha1",
            "kind": "LocalModelCache",
            "metadata": {"name": name},
            "spec": {
                "sourceModelUri": uri,
                "modelSize": "1Gi",
                "nodeGroups": groups or ["workers"],
            },
        }
    )
    assert isinstance(resource, LocalModelCache)
    return resource


def fields(resource: Resource, **kwargs: Any) -> dict[str, str]:
    return {e.field: e.reason for e in validate(resource, **kwargs)}


# --- defaulting ---------------------------------------------------------------------------------


def test_shorthand_becomes_model_with_defaults() -> None:
    original = isvc({"sklearn": {"storageUri": "gs://b/m"}})
    before = copy.deepcopy(original.to_dict())
    out = default(original)
    assert original.to_dict() == before  # the input is left alone
    assert out.to_dict()["spec"]["predictor"] == {
        "model": {
            "modelFormat": {"name": "sklearn"},
            "name": "kserve-container",
            "storageUri": "gs://b/m",
            "resources": {
                "requests": {"cpu": "1", "memory": "2Gi"},
                "limits": {"cpu": "1", "memory": "2Gi"},
            },
        }
    }
    assert "annotations" not in out.to_dict()["metadata"]  # Serverless needs no annotation


@pytest.mark.parametrize(
    ("shorthand", "protocol"),
    [("triton", "v2"), ("onnx", "v2"), ("huggingface", "v2"), ("xgboost", None), ("pytorch", None)],
)
def test_protocol_defaults(shorthand: str, protocol: str | None) -> None:
    out = default(isvc({shorthand: {"storageUri": "gs://b/m"}}))
    model = out.spec.predictor.model
    assert model is not None
    assert model.model_format.name == shorthand
    assert model.protocol_version == protocol


def test_explicit_values_win() -> None:
    out = default(
        isvc(
            {
                "triton": {
                    "protocolVersion": "grpc-v2",
                    "name": "main",
                    "resources": {"limits": {"cpu": "4"}},
                }
            }
        )
    )
    model = out.spec.predictor.model
    assert model is not None and model.resources is not None
    assert model.protocol_version == "grpc-v2"
    assert model.name == "main"
    assert model.resources.limits == {"cpu": "4", "memory": "2Gi"}


def test_model_format_triton_gets_v2() -> None:
    out = default(isvc({"model": {"modelFormat": {"name": "triton"}}}))
    assert out.spec.predictor.model is not None
    assert out.spec.predictor.model.protocol_version == "v2"


def test_deployment_mode_from_config() -> None:
    config = InferenceServiceConfig.from_configmap(
        {"deploy": '{"defaultDeploymentMode": "RawDeployment"}'}
    )
    out = default(isvc({"sklearn": {}}), config=config)
    assert out.metadata.annotations == {"serving.kserve.io/deploymentMode": "RawDeployment"}
    kept = default(
        isvc({"sklearn": {}}, annotations={"serving.kserve.io/deploymentMode": "Serverless"}),
        config=config,
    )
    assert kept.metadata.annotations == {"serving.kserve.io/deploymentMode": "Serverless"}


def test_modelmesh_keeps_shorthand() -> None:
    out = default(
        isvc({"sklearn": {}}, annotations={"serving.kserve.io/deploymentMode": "ModelMesh"})
    )
    assert out.spec.predictor.sklearn is not None
    assert out.spec.predictor.model is None


def test_custom_container_and_logger_and_art_defaults() -> None:
    doc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "m"},
        "spec": {
            "predictor": {
                "containers": [{"name": "kserve-container", "image": "x"}],
                "logger": {"url": "http://sink"},
            },
            "explainer": {"art": {"type": "SquareAttack"}},
        },
    }
    out = default(parse_resource(doc))
    assert isinstance(out, InferenceService)
    predictor = out.spec.predictor
    assert predictor.containers is not None and predictor.containers[0].name == "kserve-container"
    assert predictor.logger is not None and predictor.logger.mode == "all"
    assert out.spec.explainer is not None and out.spec.explainer.art is not None
    assert out.spec.explainer.art.runtime_version == "latest"


def test_resource_defaults_come_from_config() -> None:
    config = InferenceServiceConfig.from_configmap(
        {
            "inferenceService": json.dumps(
                {"resource": {"cpuLimit": "2", "memoryLimit": "4Gi", "cpuRequest": ""}}
            )
        }
    )
    out = default(isvc({"xgboost": {}}), config=config)
    model = out.spec.predictor.model
    assert model is not None and model.resources is not None
    assert model.resources.requests == {"memory": "2Gi"}
    assert model.resources.limits == {"cpu": "2", "memory": "4Gi"}


def test_automount_service_account_token() -> None:
    config = InferenceServiceConfig.from_configmap(
        {"security": '{"autoMountServiceAccountToken": false}'}
    )
    out = default(isvc({"sklearn": {}}), config=config)
    assert out.spec.predictor.automount_service_account_token is False
    explicit = default(isvc({"sklearn": {}, "automountServiceAccountToken": True}), config=config)
    assert explicit.spec.predictor.automount_service_account_token is True
    assert default(isvc({"sklearn": {}})).spec.predictor.automount_service_account_token is None


def test_local_model_label() -> None:
    enabled = InferenceServiceConfig.from_configmap({"localModel": '{"enabled": true}'})
    caches = [cache("other", "hf://org/other"), cache("llama", "hf://meta-llama/llama")]
    target = isvc({"huggingface": {"storageUri": "hf://meta-llama/llama"}})
    out = default(target, config=enabled, local_model_caches=caches)
    assert out.metadata.labels == {"internal.serving.kserve.io/localmodel": "llama"}
    assert out.metadata.annotations == {
        "internal.serving.kserve.io/localmodel-sourceuri": "hf://meta-llama/llama",
        "internal.serving.kserve.io/localmodel-pvc-name": "llama-workers",
    }
    assert default(target, local_model_caches=caches).metadata.labels is None  # disabled
    opted_out = isvc(
        {"huggingface": {"storageUri": "hf://meta-llama/llama"}},
        annotations={"serving.kserve.io/disable-localmodel": "true"},
    )
    assert default(opted_out, config=enabled, local_model_caches=caches).metadata.labels is None


def test_local_model_label_takes_the_first_cache_by_name() -> None:
    """KServe lists caches sorted by name; the order they are passed in does not matter."""
    enabled = InferenceServiceConfig.from_configmap({"localModel": '{"enabled": true}'})
    caches = [cache("b-wide", "s3://bucket/models"), cache("a-narrow", "s3://bucket/models/x")]
    target = isvc({"sklearn": {"storageUri": "s3://bucket/models/x/v1"}})
    for ordered in (caches, caches[::-1]):
        out = default(target, config=enabled, local_model_caches=ordered)
        assert out.metadata.labels == {"internal.serving.kserve.io/localmodel": "a-narrow"}


def test_default_leaves_other_kinds_alone() -> None:
    c = cache("a", "gs://a")
    assert default(c) == c
    assert default(c) is not c


# --- validation ---------------------------------------------------------------------------------


def test_valid_isvc_has_no_errors() -> None:
    assert validate(isvc({"sklearn": {"storageUri": "gs://b/m"}})) == []


@pytest.mark.parametrize("name", ["a", "abc-123", "my-name"])
def test_good_names(name: str) -> None:
    assert "metadata.name" not in fields(isvc({"sklearn": {}}, name=name))


@pytest.mark.parametrize("name", ["1abc", "-abc", "abc-", "ABC", "a.b", "a_b", "a" * 64])
def test_bad_names(name: str) -> None:
    assert "metadata.name" in fields(isvc({"sklearn": {}}, name=name))


def test_replica_rules() -> None:
    assert fields(isvc({"sklearn": {}, "minReplicas": 3, "maxReplicas": 2})) == {
        "spec.predictor.minReplicas": "'MinReplicas' cannot be greater than MaxReplicas"
    }
    assert fields(isvc({"sklearn": {}, "minReplicas": 3, "maxReplicas": 0})) == {}
    assert fields(isvc({"sklearn": {}, "maxReplicas": -1})) == {
        "spec.predictor.maxReplicas": "'MaxReplicas' cannot be less than 0"
    }
    assert fields(isvc({"sklearn": {}, "canaryTrafficPercent": 101})) == {
        "spec.predictor.canaryTrafficPercent": "must be between 0 and 100"
    }


@pytest.mark.parametrize(
    ("annotations", "metric", "target", "error"),
    [
        ({}, "concurrency", 10, None),
        ({}, "rps", 0, "the target for rps should be greater than 1"),
        ({}, "memory", None, "[memory] is not a supported metric"),
        ({"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev"}, "cpu", 50, None),
        (
            {"serving.kserve.io/autoscalerClass": "hpa"},
            "memory",
            0,
            "the target memory should be greater than 1 MiB",
        ),
        (
            {"serving.kserve.io/deploymentMode": "RawDeployment"},
            "cpu",
            0,
            "the target utilization percentage should be a [1-100] integer",
        ),
        (
            {
                "serving.kserve.io/deploymentMode": "RawDeployment",
                "serving.kserve.io/autoscalerClass": "external",
            },
            "rps",
            0,
            None,
        ),
    ],
)
def test_scaling_rules(
    annotations: dict[str, str], metric: str, target: int | None, error: str | None
) -> None:
    predictor: dict[str, Any] = {"sklearn": {}, "scaleMetric": metric}
    if target is not None:
        predictor["scaleTarget"] = target
    reasons = set(fields(isvc(predictor, annotations=annotations)).values())
    assert reasons == ({error} if error else set())


def test_storage_uri_schemes() -> None:
    for uri in [
        "gs://b/m",
        "s3://b/m",
        "pvc://claim/m",
        "file:///m",
        "https://h/m.tgz",
        "http://h/m",
        "hdfs://h/m",
        "webhdfs://h/m",
        "oci://r/m:1",
        "/mnt/models",
        "relative/path",
        "hf://org/model",
        "https://acct.blob.core.windows.net/c/m",
    ]:
        assert validate_storage_uri(uri) is None, uri
    assert validate_storage_uri("ftp://h/m") is not None
    # hf:// passes only through a ClusterStorageContainer (KServe's "default" one by default)
    assert validate_storage_uri("hf://org/model", storage_containers=[]) is not None
    assert validate_storage_uri("gs://b/m", storage_containers=[]) is None


def test_errors_are_all_reported_and_ensure_valid_raises_the_first() -> None:
    bad = isvc({"sklearn": {"storageUri": "ftp://x/y"}, "minReplicas": -1}, name="Bad")
    errors = validate(bad)
    assert [e.field for e in errors] == [
        "metadata.name",
        "spec.predictor.sklearn.storageUri",
        "spec.predictor.minReplicas",
    ]
    with pytest.raises(ValidationError) as info:
        ensure_valid(bad)
    assert info.value.field == "metadata.name"
    assert [str(e) for e in info.value.details["errors"]] == [str(e) for e in errors]
    assert str(info.value).startswith('metadata.name: the InferenceService "Bad" is invalid')


def test_custom_container_storage_uri_env_is_checked() -> None:
    resource = isvc(
        {
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "x",
                    "env": [{"name": "STORAGE_URI", "value": "ftp://x"}],
                }
            ]
        }
    )
    assert set(fields(resource)) == {"spec.predictor.containers[0].env[0].value"}


def test_local_model_cache_rules() -> None:
    first = cache("a", "hf://org/model")
    assert validate(first) == []
    twin = cache("b", "hf://org/model")
    assert fields(twin, existing=[first]) == {
        "spec.sourceModelUri": "LocalModelCache a has the same StorageURI hf://org/model"
    }
    grown = first.model_copy(deep=True)
    grown.spec.node_groups.append("more")  # not re-validated by pydantic; validate() catches it
    assert fields(grown) == {"spec.nodeGroups": "Too many: 2: must have at most 1 items"}


def test_local_model_cache_source_uri_is_immutable() -> None:
    old = cache("a", "hf://org/model")
    new = cache("a", "hf://org/other")
    errors = validate_update(old, new, existing=[old])
    assert [(e.field, e.reason) for e in errors] == [
        ("spec.sourceModelUri", "StorageUri is immutable")
    ]
    assert validate_update(old, cache("a", "hf://org/model"), existing=[old]) == []


def test_deployment_mode_cannot_change() -> None:
    old = isvc({"sklearn": {}}, annotations={"serving.kserve.io/deploymentMode": "Serverless"})
    new = isvc({"sklearn": {}}, annotations={"serving.kserve.io/deploymentMode": "RawDeployment"})
    assert [e.reason for e in validate_update(old, new)] == [
        "update rejected: deploymentMode cannot be changed from 'Serverless' to 'RawDeployment'"
    ]


def test_runtime_priority_clash() -> None:
    def runtime(name: str, priority: int) -> Resource:
        return parse_resource(
            {
                "apiVersion": "serving.kserve.io/v1alpha1",
                "kind": "ServingRuntime",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {
                    "supportedModelFormats": [
                        {
                            "name": "sklearn",
                            "version": "1",
                            "autoSelect": True,
                            "priority": priority,
                        }
                    ],
                    "protocolVersions": ["v1", "v2"],
                    "containers": [{"name": "kserve-container", "image": "x"}],
                },
            }
        )

    a, b, c = runtime("a", 1), runtime("b", 1), runtime("c", 2)
    assert isinstance(b, ServingRuntime)
    assert set(fields(b, existing=[a])) == {"spec.supportedModelFormats[0].priority"}
    assert fields(c, existing=[a]) == {}


# -- integers must fit the Go types KServe decodes them into ------------------------------------


def test_out_of_range_integers_are_refused_with_their_paths() -> None:
    predictor = {
        "containerConcurrency": 2**63,  # int64
        "minReplicas": 2**40,  # Go int: fits
        "model": {
            "modelFormat": {"name": "sklearn"},
            "storageUri": "gs://bucket/model",
            "ports": [{"containerPort": 2**31}],  # int32, from the generated core types
        },
    }
    with pytest.raises(ValidationError) as info:
        isvc(predictor)
    found = {e.field: e.reason for e in info.value.details["errors"]}
    assert found == {
        "spec.predictor.containerConcurrency": f"Invalid value: {2**63}: must fit in int64",
        "spec.predictor.model.ports[0].containerPort": f"Invalid value: {2**31}: must fit in int32",
    }


def test_integers_at_the_edges_of_their_types_are_accepted() -> None:
    resource = isvc(
        {
            "containerConcurrency": 2**63 - 1,
            "model": {
                "modelFormat": {"name": "sklearn"},
                "storageUri": "gs://bucket/model",
                "ports": [{"containerPort": 2**31 - 1}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": -(2**31)},
            },
        }
    )
    assert resource.spec.predictor.container_concurrency == 2**63 - 1
