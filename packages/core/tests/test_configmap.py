"""The inferenceservice-config ConfigMap: every KServe v0.14 key, JSON values, KServe's defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from moorage.core.config.configmap import InferenceServiceConfig
from moorage.core.errors import ValidationError

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "examples/resources/inferenceservice-config.yaml"


def test_default_matches_shipped_configmap() -> None:
    configmap = yaml.safe_load(SHIPPED.read_text())
    assert InferenceServiceConfig.from_configmap(configmap) == InferenceServiceConfig.default()
    assert set(configmap["data"]) <= set(InferenceServiceConfig.KEYS)


def test_defaults() -> None:
    c = InferenceServiceConfig.default()
    si = c.storage_initializer
    assert si.image == "kserve/storage-initializer:latest"
    assert (si.memory_request, si.memory_limit, si.cpu_request, si.cpu_limit) == (
        "100Mi",
        "1Gi",
        "100m",
        "1",
    )
    assert si.enable_direct_pvc_volume_mount is True
    assert (si.enable_modelcar, si.cpu_modelcar, si.memory_modelcar, si.uid_modelcar) == (
        False,
        "10m",
        "15Mi",
        None,
    )
    assert si.ca_bundle_volume_mount_path == "/etc/ssl/custom-certs"
    assert c.credentials.storage_spec_secret_name == "storage-config"
    assert c.credentials.gcs.gcs_credential_file_name == "gcloud-application-credentials.json"
    assert c.credentials.s3.s3_access_key_id_name == "AWS_ACCESS_KEY_ID"
    assert c.ingress.domain_template == "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}"
    assert c.ingress.ingress_class_name == "istio"
    assert c.ingress.url_scheme == "http"
    assert c.logger.default_url == "http://default-broker"
    assert (c.logger.ca_bundle, c.logger.ca_cert_file, c.logger.tls_skip_verify) == ("", "", False)
    assert (c.batcher.max_batch_size, c.batcher.max_latency) == ("32", "5000")
    assert c.batcher.memory_request == "1Gi"
    assert c.agent.image == "kserve/agent:latest"
    assert c.router.image == "kserve/router:latest"
    assert c.deploy.default_deployment_mode == "Serverless"
    assert c.metrics_aggregator.enable_metric_aggregation == "false"
    lm = c.local_model
    assert (lm.enabled, lm.job_namespace, lm.default_job_image, lm.fs_group) == (
        False,
        "kserve-localmodel-jobs",
        "kserve/storage-initializer:latest",
        1000,
    )
    assert (lm.job_ttl_seconds_after_finished, lm.reconcilation_frequency_in_secs) == (3600, 60)
    assert c.security.auto_mount_service_account_token is True
    assert c.explainers.art.image == "kserve/art-explainer"
    assert c.explainers.art.default_image_version == "latest"
    assert c.inference_service.resource.memory_limit == "2Gi"


def test_parses_json_strings_case_insensitively() -> None:
    data = {
        "storageInitializer": json.dumps({"enableModelcar": True, "uidModelcar": 10}),
        "localModel": json.dumps({"enabled": True, "FSGroup": 2000}),
        "logger": json.dumps(
            {"caBundle": "example-com-ca", "caCertFile": "service-ca.crt", "tlsSkipVerify": True}
        ),
        "security": '{"autoMountServiceAccountToken": false}',
        "deploy": '{"defaultDeploymentMode": "RawDeployment"}',
        "router": '{"headers": {"propagate": ["Custom-Header1", "Custom-Header2"]}}',
        "ingress": json.dumps(
            {
                "ingressGateway": "knative-serving/knative-ingress-gateway",
                "additionalIngressDomains": ["a.example.com"],
                "pathTemplate": "/serving/{{ .Namespace }}/{{ .Name }}",
            }
        ),
        "_example": "################ docs",
    }
    c = InferenceServiceConfig.from_configmap({"data": data})
    assert c.storage_initializer.enable_modelcar is True
    assert c.storage_initializer.uid_modelcar == 10
    assert c.storage_initializer.cpu_modelcar == "10m"  # unset fields keep the shipped default
    assert c.local_model.enabled is True
    assert c.local_model.fs_group == 2000
    assert c.logger.ca_bundle == "example-com-ca"
    assert c.logger.tls_skip_verify is True
    assert c.security.auto_mount_service_account_token is False
    assert c.deploy.default_deployment_mode == "RawDeployment"
    assert c.router.headers is not None
    assert c.router.headers.propagate == ["Custom-Header1", "Custom-Header2"]
    assert c.ingress.additional_ingress_domains == ["a.example.com"]
    # data alone (without the ConfigMap envelope) reads the same
    assert InferenceServiceConfig.from_configmap(data) == c


def test_round_trip_through_configmap() -> None:
    c = InferenceServiceConfig.from_configmap(
        {
            "data": {
                "localModel": '{"enabled": true}',
                "security": '{"autoMountServiceAccountToken": false}',
            }
        }
    )
    cm = c.to_configmap()
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"] == {"name": "inferenceservice-config", "namespace": "kserve"}
    assert all(isinstance(v, str) for v in cm["data"].values())
    assert InferenceServiceConfig.from_configmap(cm) == c


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"ingress": "{not json"}, "data.ingress"),
        ({"deploy": '{"defaultDeploymentMode": "Sideways"}'}, "data.deploy.defaultDeploymentMode"),
        ({"localModel": '{"enabled": "maybe"}'}, "data.localModel.enabled"),
    ],
)
def test_bad_values_name_the_key(data: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        InferenceServiceConfig.from_configmap({"data": data})
    assert info.value.field == field


def test_absent_keys_mean_what_they_mean_to_kserve() -> None:
    """Go zero values where KServe's behaviour depends on a missing value."""
    shipped = InferenceServiceConfig.default()
    assert shipped.security.auto_mount_service_account_token is True
    assert shipped.storage_initializer.enable_direct_pvc_volume_mount is True
    partial = InferenceServiceConfig.from_configmap({"data": {"localModel": '{"enabled": true}'}})
    assert partial.security.auto_mount_service_account_token is False
    assert partial.storage_initializer.enable_direct_pvc_volume_mount is False
    assert partial.storage_initializer.image == shipped.storage_initializer.image
    partial = InferenceServiceConfig.from_configmap(
        {"storageInitializer": '{"image": "me/si:1"}', "security": "{}"}
    )
    assert partial.storage_initializer.image == "me/si:1"
    assert partial.storage_initializer.enable_direct_pvc_volume_mount is False
    assert partial.security.auto_mount_service_account_token is False  # Go's zero value


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ingress", "{}", "ingressGateway is required"),
        ("ingress", '{"ingressDomain": "example.com"}', "ingressGateway is required"),
        ("deploy", "{}", "defaultDeploymentMode is required"),
    ],
)
def test_empty_ingress_or_deploy_is_an_error(key: str, value: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        InferenceServiceConfig.from_configmap({"data": {key: value}})
    assert info.value.field == f"data.{key}" and message in info.value.reason
