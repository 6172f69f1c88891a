"""Storage credentials for the storage-initializer, from a ServiceAccount's Secrets, as KServe
v0.14's webhook builds them (``pkg/credentials``). Pure: the ServiceAccount and Secrets are
passed in (``moorage render`` takes them from the ``-f`` files).

The component's ServiceAccount (``serviceAccountName``, default ``default``) is looked up; with
the annotation ``serving.kserve.io/storageSecretName`` on the InferenceService (the name is
``credentials.storageSecretNameAnnotation`` of the config) that Secret alone is used, else each
Secret the ServiceAccount lists, in order. Per Secret, the first rule whose key it holds wins:

1. the S3 secret key (``credentials.s3.s3SecretAccessKeyName``): ``AWS_ACCESS_KEY_ID`` and
   ``AWS_SECRET_ACCESS_KEY`` from it, and the S3 settings from the Secret's
   ``serving.kserve.io/s3-*`` annotations, else from ``credentials.s3`` of the config;
2. the GCS key file (``credentials.gcs.gcsCredentialFileName``): the Secret mounted at
   ``/var/secrets/`` as volume ``user-gcp-sa`` and ``GOOGLE_APPLICATION_CREDENTIALS`` set;
3. ``AZURE_CLIENT_ID`` (or the legacy ``AZ_CLIENT_ID``): the Azure service principal variables;
4. ``AZURE_STORAGE_ACCESS_KEY``;
5. ``https-host`` with ``headers``: ``<https-host>-headers`` set to the headers;
6. ``HDFS_NAMENODE``: the Secret mounted at ``/var/secrets/kserve-hdfscreds`` (``hdfs-secrets``);
7. ``HF_TOKEN``.

:func:`ca_bundle` adds the storage-initializer's CA bundle. A ServiceAccount annotated
``eks.amazonaws.com/role-arn`` (IRSA) adds the S3 settings of its own
``serving.kserve.io/s3-*`` annotations. Values are referenced (``secretKeyRef``), never copied into
the manifest, except the https headers, which KServe passes as a literal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from moorage.core.config.configmap import InferenceServiceConfig
from moorage.core.resources import Resource, Secret, ServiceAccount

__all__ = [
    "Credentials",
    "StorageSpecSource",
    "ca_bundle",
    "storage_credentials",
    "storage_spec_source",
]

DEFAULT_SERVICE_ACCOUNT = "default"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
GCS_VOLUME = "user-gcp-sa"
GCS_MOUNT = "/var/secrets/"
HDFS_VOLUME = "hdfs-secrets"
HDFS_MOUNT = "/var/secrets/kserve-hdfscreds"

#: Secret/ServiceAccount annotation suffix -> env var, after ``serving.kserve.io/s3-``.
_S3_ANNOTATIONS = (
    ("verifyssl", "S3_VERIFY_SSL"),
    ("useanoncredential", "awsAnonymousCredential"),
    ("region", "AWS_DEFAULT_REGION"),
    ("usevirtualbucket", "S3_USER_VIRTUAL_BUCKET"),
    ("useaccelerate", "S3_USE_ACCELERATE"),
    ("cabundle", "AWS_CA_BUNDLE"),
    ("cabundle-configmap", "AWS_CA_BUNDLE_CONFIGMAP"),
)
_AZURE = ("SUBSCRIPTION_ID", "TENANT_ID", "CLIENT_ID", "CLIENT_SECRET")


@dataclass
class Credentials:
    """What the storage-initializer gets: env entries, and volumes with their mounts."""

    env: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.env or self.volumes)


def _ref(secret: str, key: str, env: str) -> dict[str, Any]:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _s3_settings(annotations: Mapping[str, str], config: InferenceServiceConfig) -> list[dict]:
    s3 = config.credentials.s3
    fallback = {
        "endpoint": s3.s3_endpoint,
        "usehttps": s3.s3_use_https,
        "verifyssl": s3.s3_verify_ssl,
        "useanoncredential": s3.s3_use_anonymous_credential,
        "region": s3.s3_region,
        "usevirtualbucket": s3.s3_use_virtual_bucket,
        "useaccelerate": s3.s3_use_accelerate,
        "cabundle": s3.s3_ca_bundle,
        "cabundle-configmap": s3.s3_ca_bundle_config_map,
    }

    def value(suffix: str) -> str:
        return annotations.get(f"serving.kserve.io/s3-{suffix}") or fallback.get(suffix, "")

    env: list[dict[str, Any]] = []
    endpoint = value("endpoint")
    use_https = value("usehttps")
    if endpoint:
        scheme = "http" if use_https == "0" else "https"
        env.append({"name": "S3_ENDPOINT", "value": endpoint})
        env.append({"name": "AWS_ENDPOINT_URL", "value": f"{scheme}://{endpoint}"})
    if use_https:
        env.append({"name": "S3_USE_HTTPS", "value": use_https})
    for suffix, name in _S3_ANNOTATIONS:
        if value(suffix):
            env.append({"name": name, "value": value(suffix)})
    return env


def _from_secret(secret: Secret, config: InferenceServiceConfig) -> Credentials:
    keys = secret.keys()
    name = secret.name
    creds = config.credentials
    found = Credentials()
    if creds.s3.s3_secret_access_key_name in keys:
        found.env += [
            _ref(name, creds.s3.s3_access_key_id_name, "AWS_ACCESS_KEY_ID"),
            _ref(name, creds.s3.s3_secret_access_key_name, "AWS_SECRET_ACCESS_KEY"),
            *_s3_settings(secret.metadata.annotations or {}, config),
        ]
    elif creds.gcs.gcs_credential_file_name in keys:
        found.volumes.append({"name": GCS_VOLUME, "secret": {"secretName": name}})
        found.mounts.append({"name": GCS_VOLUME, "mountPath": GCS_MOUNT, "readOnly": True})
        path = GCS_MOUNT + creds.gcs.gcs_credential_file_name
        found.env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": path})
    elif "AZURE_CLIENT_ID" in keys or "AZ_CLIENT_ID" in keys:
        prefix = "AZURE_" if "AZURE_CLIENT_ID" in keys else "AZ_"
        found.env += [_ref(name, prefix + k, prefix + k) for k in _AZURE if prefix + k in keys]
    elif "AZURE_STORAGE_ACCESS_KEY" in keys:
        found.env.append(_ref(name, "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_ACCESS_KEY"))
    elif "https-host" in keys and "headers" in keys:
        host, headers = secret.value("https-host"), secret.value("headers")
        if host and headers is not None:
            found.env.append({"name": f"{host}-headers", "value": headers})
    elif "HDFS_NAMENODE" in keys:
        found.volumes.append({"name": HDFS_VOLUME, "secret": {"secretName": name}})
        found.mounts.append({"name": HDFS_VOLUME, "mountPath": HDFS_MOUNT, "readOnly": True})
    elif "HF_TOKEN" in keys:
        found.env.append(_ref(name, "HF_TOKEN", "HF_TOKEN"))
    return found


KSERVE_NAMESPACE = "kserve"
GLOBAL_CA_BUNDLE = "global-ca-bundle"
CA_BUNDLE_VOLUME = "cabundle-cert"


def ca_bundle(
    env: list[dict[str, Any]], *, namespace: str, config: InferenceServiceConfig
) -> Credentials:
    """KServe's CA bundle for the storage-initializer: when ``storageInitializer.
    caBundleConfigMapName`` is set or the env holds ``AWS_CA_BUNDLE_CONFIGMAP``, that ConfigMap
    (outside the ``kserve`` namespace, the ``global-ca-bundle`` copy KServe makes there) mounted
    as ``cabundle-cert`` at ``caBundleVolumeMountPath`` (or the directory of ``AWS_CA_BUNDLE``),
    with ``CA_BUNDLE_CONFIGMAP_NAME`` and ``CA_BUNDLE_VOLUME_MOUNT_POINT`` set."""
    values = {e["name"]: e.get("value") for e in env if "value" in e}
    si = config.storage_initializer
    explicit = values.get("AWS_CA_BUNDLE_CONFIGMAP")
    if not (explicit or si.ca_bundle_config_map_name):
        return Credentials()
    if explicit:
        name = explicit
    elif namespace == KSERVE_NAMESPACE:
        name = si.ca_bundle_config_map_name
    else:
        name = GLOBAL_CA_BUNDLE
    bundle = values.get("AWS_CA_BUNDLE")
    mount_path = bundle.rsplit("/", 1)[0] or "/" if bundle else si.ca_bundle_volume_mount_path
    return Credentials(
        env=[
            {"name": "CA_BUNDLE_CONFIGMAP_NAME", "value": name},
            {"name": "CA_BUNDLE_VOLUME_MOUNT_POINT", "value": mount_path},
        ],
        volumes=[{"name": CA_BUNDLE_VOLUME, "configMap": {"name": name}}],
        mounts=[{"name": CA_BUNDLE_VOLUME, "mountPath": mount_path, "readOnly": True}],
    )


STORAGE_SPEC_PLACEHOLDER = "<scheme-placeholder>"


@dataclass
class StorageSpecSource:
    """A ``storage:`` spec rendered: the URI the storage-initializer fetches, the placeholder
    URI KServe records in the source annotation, pod annotations and the initializer's env."""

    uri: str
    placeholder: str
    annotations: dict[str, str]
    credentials: Credentials


def storage_spec_source(
    *,
    path: str,
    parameters: Mapping[str, str],
    key: str | None,
    namespace: str,
    annotations: Mapping[str, str],
    resources: Iterable[Resource],
    config: InferenceServiceConfig,
) -> StorageSpecSource:
    """KServe's storage spec: ``STORAGE_CONFIG`` from the ``storage-config`` Secret (the
    ``serving.kserve.io/storageSecretName`` annotation names another) under ``key``, else
    ``default`` or ``default_<type>``; ``parameters`` as ``STORAGE_OVERRIDE_CONFIG``; the source
    ``<type>://<bucket>/<path>`` with type and bucket from the parameters, else from the Secret's
    JSON when the files hold it. Raises ValueError with KServe's message when a named key is not
    in the Secret, the type cannot be told, or an s3 source has no bucket."""
    import json

    creds = config.credentials
    secret_name = annotations.get(creds.storage_secret_name_annotation) or (
        creds.storage_spec_secret_name
    )
    kind = parameters.get("type")
    entry = key or (f"default_{kind}" if kind else "default")
    secret = _find(Secret, secret_name, namespace, resources)
    stored: dict[str, Any] = {}
    if secret is not None:
        raw = secret.value(entry)
        if raw is None and key:
            raise ValueError(
                f"specified storage key {key} not found in storage secret {secret_name}"
            )
        try:
            loaded = json.loads(raw) if raw else {}
        except ValueError:
            loaded = {}
        stored = loaded if isinstance(loaded, dict) else {}
    kind = kind or stored.get("type")
    if not kind:
        raise ValueError(
            "unable to determine storage type: set storage.parameters.type, or give the "
            f"{secret_name} Secret in the files"
        )
    bucket = parameters.get("bucket") or stored.get("bucket") or ""
    if kind == "s3" and not bucket:
        raise ValueError(
            f"format [{kind}] requires a bucket but one wasn't found in storage data or parameters"
        )
    clean = path.lstrip("/")
    uri = f"{kind}://{bucket}/{clean}" if bucket else f"{kind}://{clean}"
    env = [_ref(secret_name, entry, "STORAGE_CONFIG")]
    if parameters:
        env.append(
            {
                "name": "STORAGE_OVERRIDE_CONFIG",
                "value": json.dumps(dict(parameters), sort_keys=True),
            }
        )
    pod_annotations = {
        "internal.serving.kserve.io/storage-spec": "true",
        "internal.serving.kserve.io/storage-spec-param": json.dumps(
            dict(parameters), sort_keys=True
        ),
        "internal.serving.kserve.io/storage-spec-key": key or "",
    }
    return StorageSpecSource(
        uri=uri,
        placeholder=f"{STORAGE_SPEC_PLACEHOLDER}://{clean}",
        annotations=pod_annotations,
        credentials=Credentials(env=env),
    )


def _find(kind: type[Resource], name: str, namespace: str, resources: Iterable[Resource]) -> Any:
    for resource in resources:
        if (
            isinstance(resource, kind)
            and resource.name == name
            and resource.namespace in (None, namespace)
        ):
            return resource
    return None


def storage_credentials(
    *,
    service_account: str | None,
    namespace: str,
    annotations: Mapping[str, str],
    resources: Iterable[Resource],
    config: InferenceServiceConfig,
) -> Credentials:
    """The credentials of the component's ServiceAccount (see the module docstring); empty
    when neither it nor the named Secret is among ``resources``."""
    resources = list(resources)
    out = Credentials()
    account = _find(
        ServiceAccount, service_account or DEFAULT_SERVICE_ACCOUNT, namespace, resources
    )
    if account is not None and IRSA_ANNOTATION in (account.metadata.annotations or {}):
        out.env += _s3_settings(account.metadata.annotations or {}, config)
    chosen = annotations.get(config.credentials.storage_secret_name_annotation)
    if chosen:
        names = [chosen]
    elif account is not None:
        names = [ref.name for ref in account.secrets or [] if ref.name]
    else:
        names = []
    for name in names:
        secret = _find(Secret, name, namespace, resources)
        if secret is None:
            continue
        found = _from_secret(secret, config)
        known = {e["name"] for e in out.env}
        out.env += [e for e in found.env if e["name"] not in known]
        out.volumes += [v for v in found.volumes if v not in out.volumes]
        out.mounts += [m for m in found.mounts if m not in out.mounts]
    return out
