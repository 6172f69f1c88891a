"""The ``inferenceservice-config`` ConfigMap (namespace ``kserve``), typed.

Each data key of the ConfigMap holds a JSON document; :meth:`InferenceServiceConfig.from_configmap`
decodes them into the sections below. Keys and defaults are KServe v0.14's (v0.14.1 for
``localModel``): :meth:`InferenceServiceConfig.default` is the ConfigMap KServe ships.

A ConfigMap read with :meth:`~InferenceServiceConfig.from_configmap` means what it means to
KServe's controller, which decodes it into Go structs: where KServe's behaviour depends on a
*missing* value, it takes Go's zero value, not the shipped one. ``security`` (or its
``autoMountServiceAccountToken``) absent: service account tokens are not automounted;
``storageInitializer.enableDirectPvcVolumeMount`` absent: false (PVCs go through the
storage-initializer). An ``ingress`` without ``ingressGateway`` and a ``deploy`` without
``defaultDeploymentMode`` (``{}`` included) are errors, as KServe's are. Other absent fields
keep the shipped values (KServe's controller falls back to them or would render broken
objects). A ConfigMap that spells every key out reads the same either way.

Like Go's ``encoding/json``, key matching is case-insensitive (the shipped file spells
``localModel.FSGroup``) and unknown fields are kept but unused. ``_example`` is ignored.

One moorage extension: ``inferenceService.resource`` (the shape KServe adopted in v0.15) sets the
default container resources the defaulting webhook applies; absent, it is KServe v0.14's fixed
``cpu: 1, memory: 2Gi`` for both requests and limits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic.alias_generators import to_camel

from moorage.core.errors import ValidationError

__all__ = [
    "AgentConfig",
    "ArtExplainerConfig",
    "BatcherConfig",
    "CredentialsConfig",
    "DeployConfig",
    "ExplainersConfig",
    "GCSCredentialsConfig",
    "InferenceServiceConfig",
    "InferenceServiceDefaults",
    "IngressConfig",
    "LocalModelConfig",
    "LoggerConfig",
    "MetricsAggregatorConfig",
    "ResourceDefaults",
    "RouterConfig",
    "RouterHeaders",
    "S3CredentialsConfig",
    "SecurityConfig",
    "StorageInitializerConfig",
]

CONFIGMAP_NAME = "inferenceservice-config"
CONFIGMAP_NAMESPACE = "kserve"


class _Section(BaseModel):
    """A JSON section: camelCase keys matched case-insensitively, unknown keys kept."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", protected_namespaces=()
    )

    @model_validator(mode="before")
    @classmethod
    def _case_insensitive(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        known: dict[str, str] = {}
        for name, field in cls.model_fields.items():
            alias = field.alias or name
            known[alias.lower()] = alias
            known[name.lower()] = alias
        return {known.get(str(k).lower(), k): v for k, v in data.items()}


class _Resources(_Section):
    memory_request: str = "100Mi"
    memory_limit: str = "1Gi"
    cpu_request: str = "100m"
    cpu_limit: str = "1"


class ArtExplainerConfig(_Section):
    image: str = "kserve/art-explainer"
    default_image_version: str = "latest"


class ExplainersConfig(_Section):
    art: ArtExplainerConfig = Field(default_factory=ArtExplainerConfig)


class StorageInitializerConfig(_Resources):
    image: str = "kserve/storage-initializer:latest"
    ca_bundle_config_map_name: str = ""
    ca_bundle_volume_mount_path: str = "/etc/ssl/custom-certs"
    enable_direct_pvc_volume_mount: bool = True
    enable_modelcar: bool = False
    cpu_modelcar: str = "10m"
    memory_modelcar: str = "15Mi"
    uid_modelcar: int | None = None


class GCSCredentialsConfig(_Section):
    gcs_credential_file_name: str = Field(
        "gcloud-application-credentials.json", alias="gcsCredentialFileName"
    )


class S3CredentialsConfig(_Section):
    s3_access_key_id_name: str = Field("AWS_ACCESS_KEY_ID", alias="s3AccessKeyIDName")
    s3_secret_access_key_name: str = Field("AWS_SECRET_ACCESS_KEY", alias="s3SecretAccessKeyName")
    s3_endpoint: str = Field("", alias="s3Endpoint")
    s3_use_https: str = Field("", alias="s3UseHttps")
    s3_region: str = Field("", alias="s3Region")
    s3_verify_ssl: str = Field("", alias="s3VerifySSL")
    s3_use_virtual_bucket: str = Field("", alias="s3UseVirtualBucket")
    s3_use_accelerate: str = Field("", alias="s3UseAccelerate")
    s3_use_anonymous_credential: str = Field("", alias="s3UseAnonymousCredential")
    s3_ca_bundle: str = Field("", alias="s3CABundle")
    #: ConfigMap with the S3 CA bundle (annotation ``serving.kserve.io/s3-cabundle-configmap``).
    s3_ca_bundle_config_map: str = Field("", alias="s3CABundleConfigMap")


class CredentialsConfig(_Section):
    storage_spec_secret_name: str = "storage-config"
    storage_secret_name_annotation: str = "serving.kserve.io/storageSecretName"
    gcs: GCSCredentialsConfig = Field(default_factory=GCSCredentialsConfig)
    s3: S3CredentialsConfig = Field(default_factory=S3CredentialsConfig)


class IngressConfig(_Section):
    ingress_gateway: str = "knative-serving/knative-ingress-gateway"
    local_gateway: str = "knative-serving/knative-local-gateway"
    local_gateway_service: str = "knative-local-gateway.istio-system.svc.cluster.local"
    knative_local_gateway_service: str = ""
    ingress_domain: str = "example.com"
    ingress_class_name: str = "istio"
    additional_ingress_domains: list[str] = Field(default_factory=list)
    domain_template: str = "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}"
    url_scheme: str = "http"
    disable_istio_virtual_host: bool = False
    path_template: str = ""
    disable_ingress_creation: bool = False


class LoggerConfig(_Resources):
    image: str = "kserve/agent:latest"
    default_url: str = "http://default-broker"
    #: TLS (KServe PR #3863): ConfigMap in the ISVC's namespace with the CA bundle for https sinks.
    ca_bundle: str = ""
    #: File inside ``caBundle``; the agent's default is ``service-ca.crt``.
    ca_cert_file: str = ""
    tls_skip_verify: bool = False


class BatcherConfig(_Resources):
    image: str = "kserve/agent:latest"
    memory_request: str = "1Gi"
    memory_limit: str = "1Gi"
    cpu_request: str = "1"
    cpu_limit: str = "1"
    max_batch_size: str = "32"
    max_latency: str = "5000"


class AgentConfig(_Resources):
    image: str = "kserve/agent:latest"


class RouterHeaders(_Section):
    propagate: list[str] = Field(default_factory=list)


class RouterConfig(_Resources):
    image: str = "kserve/router:latest"
    headers: RouterHeaders | None = None


class DeployConfig(_Section):
    default_deployment_mode: Literal["Serverless", "RawDeployment", "ModelMesh"] = "Serverless"


class MetricsAggregatorConfig(_Section):
    # KServe keeps these as strings ("true"/"false").
    enable_metric_aggregation: str = "false"
    enable_prometheus_scraping: str = "false"


class LocalModelConfig(_Section):
    enabled: bool = False
    job_namespace: str = "kserve-localmodel-jobs"
    default_job_image: str = "kserve/storage-initializer:latest"
    fs_group: int | None = Field(1000, alias="fsGroup")
    job_ttl_seconds_after_finished: int = Field(3600, alias="jobTTLSecondsAfterFinished")
    reconcilation_frequency_in_secs: int = 60


class SecurityConfig(_Section):
    auto_mount_service_account_token: bool = True


class ResourceDefaults(_Section):
    cpu_request: str = "1"
    memory_request: str = "2Gi"
    cpu_limit: str = "1"
    memory_limit: str = "2Gi"


class InferenceServiceDefaults(_Section):
    """moorage extension (KServe v0.15 shape): default container resources of components."""

    resource: ResourceDefaults = Field(default_factory=ResourceDefaults)


def _has(section: Any, key: str) -> bool:
    """Whether a decoded section sets ``key`` (matched case-insensitively, as Go does)."""
    return isinstance(section, Mapping) and any(
        str(k).lower() == key.lower() and v not in (None, "") for k, v in section.items()
    )


def _go_zero_values(sections: dict[str, Any]) -> None:
    """Apply what a missing value means to KServe's controller (see the module docstring)."""
    for key, field in (
        ("security", "autoMountServiceAccountToken"),
        ("storageInitializer", "enableDirectPvcVolumeMount"),
    ):
        section = sections.get(key)
        if not _has(section, field):
            sections[key] = {**(section if isinstance(section, Mapping) else {}), field: False}
    if "ingress" in sections and not _has(sections["ingress"], "ingressGateway"):
        raise ValidationError(
            "invalid ingress config - ingressGateway is required", field="data.ingress"
        )
    if "deploy" in sections and not _has(sections["deploy"], "defaultDeploymentMode"):
        raise ValidationError(
            "invalid deploy config, defaultDeploymentMode is required", field="data.deploy"
        )


class InferenceServiceConfig(BaseModel):
    """All sections of ``inferenceservice-config``. Build with :meth:`from_configmap` or
    :meth:`default`."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    #: ConfigMap data keys, in KServe's order.
    KEYS: ClassVar[tuple[str, ...]] = (
        "explainers",
        "storageInitializer",
        "credentials",
        "ingress",
        "logger",
        "batcher",
        "agent",
        "router",
        "deploy",
        "metricsAggregator",
        "localModel",
        "security",
        "inferenceService",
    )

    explainers: ExplainersConfig = Field(default_factory=ExplainersConfig)
    storage_initializer: StorageInitializerConfig = Field(default_factory=StorageInitializerConfig)
    credentials: CredentialsConfig = Field(default_factory=CredentialsConfig)
    ingress: IngressConfig = Field(default_factory=IngressConfig)
    logger: LoggerConfig = Field(default_factory=LoggerConfig)
    batcher: BatcherConfig = Field(default_factory=BatcherConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    metrics_aggregator: MetricsAggregatorConfig = Field(default_factory=MetricsAggregatorConfig)
    local_model: LocalModelConfig = Field(default_factory=LocalModelConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    inference_service: InferenceServiceDefaults = Field(default_factory=InferenceServiceDefaults)

    @classmethod
    def default(cls) -> InferenceServiceConfig:
        """The configuration of KServe's shipped ConfigMap."""
        return cls()

    @classmethod
    def from_configmap(cls, configmap: Mapping[str, Any]) -> InferenceServiceConfig:
        """Decode a ConfigMap object (with ``data``) or its ``data`` mapping alone.

        Raises :class:`~moorage.core.errors.ValidationError` with ``field="data.<key>"`` for a
        value that is not JSON or does not fit the section.
        """
        data = configmap.get("data", configmap) if "data" in configmap else configmap
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ValidationError("must be a mapping of strings", field="data")
        sections: dict[str, Any] = {}
        for key in cls.KEYS:
            raw = data.get(key)
            if raw is None:
                continue
            try:
                sections[key] = json.loads(raw) if isinstance(raw, str | bytes) else raw
            except json.JSONDecodeError as exc:
                raise ValidationError(f"invalid JSON: {exc.msg}", field=f"data.{key}") from None
        _go_zero_values(sections)
        try:
            return cls.model_validate(sections)
        except PydanticValidationError as exc:
            first = exc.errors()[0]
            loc = [str(p) for p in first["loc"]]
            raise ValidationError(str(first["msg"]), field="data." + ".".join(loc)) from None

    def to_configmap(
        self, *, name: str = CONFIGMAP_NAME, namespace: str = CONFIGMAP_NAMESPACE
    ) -> dict[str, Any]:
        """A ConfigMap object whose ``data`` holds each section as a JSON string."""
        dumped = self.model_dump(by_alias=True, exclude_none=True)
        data = {key: json.dumps(dumped[key], indent=2) for key in self.KEYS if key in dumped}
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": data,
        }
