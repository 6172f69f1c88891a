"""``StorageSettings``: everything the storage initializer reads from its environment.

KServe's variable names are kept exactly (``AWS_*``, ``S3_ENDPOINT``, ``S3_USE_HTTPS``,
``S3_VERIFY_SSL``, ``AWS_CA_BUNDLE``, ``awsAnonymousCredential``, ``S3_USER_VIRTUAL_BUCKET`` (sic),
``S3_USE_ACCELERATE``, ``AWS_DEFAULT_REGION``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_*`` and
the legacy ``AZ_*``, ``AZURE_STORAGE_ACCESS_KEY``, ``HF_TOKEN``, ``HF_ENDPOINT``,
``STORAGE_CONFIG`` / ``STORAGE_OVERRIDE_CONFIG``, ``CA_BUNDLE_CONFIGMAP_NAME``,
``CA_BUNDLE_VOLUME_MOUNT_POINT``, ``HDFS_SECRET_DIR``) and per-host HTTP headers come from every
variable named ``<host>-headers`` (a JSON object). Moorage's own knobs use the prefix
``MOORAGE_STORAGE_`` (``MOORAGE_STORAGE_CONCURRENCY=16``).

The storage-spec JSON (``STORAGE_CONFIG``, overlaid key by key with ``STORAGE_OVERRIDE_CONFIG``)
wins over the plain variables for the keys it sets, as in KServe, where it is copied into the
environment before anything else reads it. Secrets are :class:`~pydantic.SecretStr` so that a
``repr`` or log line of the settings never shows them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, get_origin

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

__all__ = ["StorageSettings"]

_ENVIRON: ContextVar[dict[str, str] | None] = ContextVar("moorage_storage_environ", default=None)
_FALSE = {"0", "false", "no", "off", ""}
_HEADERS_SUFFIX = "-headers"

#: storage-spec key -> settings field, for ``type: s3`` (KServe's _update_with_storage_spec).
_S3_SPEC_KEYS = {
    "endpoint_url": "aws_endpoint_url",
    "access_key_id": "aws_access_key_id",
    "secret_access_key": "aws_secret_access_key",
    "region": "aws_default_region",
    "ca_bundle": "aws_ca_bundle",
    "verify_ssl": "s3_verify_ssl",
    "anonymous": "aws_anonymous_credential",
}


def _env(*names: str, repr: bool = True) -> Any:
    return Field(default=None, validation_alias=AliasChoices(*names), repr=repr)


def _flag(*names: str, default: bool = False) -> Any:
    return Field(default=default, validation_alias=AliasChoices(*names))


def _host_headers(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``{host: headers}`` from the ``<host>-headers`` variables (JSON objects)."""
    headers: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.endswith(_HEADERS_SUFFIX) or name == _HEADERS_SUFFIX:
            continue
        host = name[: -len(_HEADERS_SUFFIX)]
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"environment variable {name} is not a JSON object") from exc
        if not isinstance(parsed, dict):
            raise ValueError(f"environment variable {name} is not a JSON object")
        headers[host] = {str(k): str(v) for k, v in parsed.items()}
    return headers


class StorageSettings(BaseModel):
    """Settings of the storage initializer (``moorage-storage``) and ``moorage.storage``.

    ``StorageSettings(**overrides)`` reads the environment (``os.environ``, or the mapping given to
    :meth:`from_environ`); keyword arguments win over it. Variable names match case-insensitively:
    a field's KServe names where it has them, else ``MOORAGE_STORAGE_<FIELD>``; lists and maps are
    JSON. (A plain model with its own reader: pydantic-settings cost the storage initializer
    ~70 ms of imports at every start.)
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def __init__(self, /, **overrides: Any) -> None:
        environ = _ENVIRON.get()
        super().__init__(
            **{**_from_environ(environ if environ is not None else os.environ), **overrides}
        )

    # -- S3 -------------------------------------------------------------------------------------
    aws_access_key_id: SecretStr | None = _env("AWS_ACCESS_KEY_ID", "aws_access_key_id")
    aws_secret_access_key: SecretStr | None = _env("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key")
    aws_session_token: SecretStr | None = _env("AWS_SESSION_TOKEN", "aws_session_token")
    aws_endpoint_url: str | None = _env("AWS_ENDPOINT_URL", "aws_endpoint_url")
    s3_endpoint: str | None = _env("S3_ENDPOINT", "s3_endpoint")
    s3_use_https: bool | None = _env("S3_USE_HTTPS", "s3_use_https")
    s3_verify_ssl: bool | None = _env("S3_VERIFY_SSL", "s3_verify_ssl")
    aws_ca_bundle: str | None = _env("AWS_CA_BUNDLE", "aws_ca_bundle")
    ca_bundle_configmap_name: str | None = _env("CA_BUNDLE_CONFIGMAP_NAME")
    ca_bundle_volume_mount_point: str = Field(
        default="/etc/ssl/custom-certs",
        validation_alias=AliasChoices("CA_BUNDLE_VOLUME_MOUNT_POINT"),
    )
    aws_anonymous_credential: bool = _flag("awsAnonymousCredential", "aws_anonymous_credential")
    s3_user_virtual_bucket: bool = _flag("S3_USER_VIRTUAL_BUCKET", "s3_user_virtual_bucket")
    s3_use_accelerate: bool = _flag("S3_USE_ACCELERATE", "s3_use_accelerate")
    aws_default_region: str | None = _env("AWS_DEFAULT_REGION", "AWS_REGION", "aws_default_region")

    # -- GCS ------------------------------------------------------------------------------------
    google_application_credentials: str | None = _env("GOOGLE_APPLICATION_CREDENTIALS")
    storage_emulator_host: str | None = _env("STORAGE_EMULATOR_HOST")

    # -- Azure ----------------------------------------------------------------------------------
    azure_tenant_id: str | None = _env("AZURE_TENANT_ID", "AZ_TENANT_ID")
    azure_client_id: str | None = _env("AZURE_CLIENT_ID", "AZ_CLIENT_ID")
    azure_client_secret: SecretStr | None = _env("AZURE_CLIENT_SECRET", "AZ_CLIENT_SECRET")
    azure_subscription_id: str | None = _env("AZURE_SUBSCRIPTION_ID", "AZ_SUBSCRIPTION_ID")
    azure_storage_access_key: SecretStr | None = _env("AZURE_STORAGE_ACCESS_KEY")
    azure_storage_sas_token: SecretStr | None = _env("AZURE_STORAGE_SAS_TOKEN")
    #: ``host[:port]`` values serving path-style Azure Blob URLs (an Azurite emulator, a proxy).
    azure_blob_hosts: list[str] = Field(default_factory=list)

    # -- Hugging Face ---------------------------------------------------------------------------
    hf_token: SecretStr | None = _env("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
    hf_endpoint: str = Field(
        default="https://huggingface.co", validation_alias=AliasChoices("HF_ENDPOINT")
    )

    # -- OCI registries -------------------------------------------------------------------------
    #: Docker/podman auth file (``~/.docker/config.json`` style) for private registries.
    registry_auth_file: str | None = _env(
        "REGISTRY_AUTH_FILE", "MOORAGE_STORAGE_REGISTRY_AUTH_FILE"
    )
    docker_config: str | None = _env("DOCKER_CONFIG")
    #: registries reached over plain http (loopback registries always are).
    insecure_registries: list[str] = Field(default_factory=list)
    oci_platform: str = "linux/amd64"

    # -- HTTP, storage spec, HDFS ---------------------------------------------------------------
    #: ``{host: {header: value}}`` from the ``<host>-headers`` variables.
    http_headers: dict[str, dict[str, str]] = Field(default_factory=dict, repr=False)
    storage_config: dict[str, Any] | None = _env("STORAGE_CONFIG", repr=False)
    storage_override_config: dict[str, Any] | None = _env("STORAGE_OVERRIDE_CONFIG", repr=False)
    hdfs_secret_dir: str | None = _env("HDFS_SECRET_DIR")

    # -- local sources --------------------------------------------------------------------------
    #: where the pod mounts a ``pvc://`` source (the webhook rewrites pvc://c/p to /mnt/pvc/p).
    pvc_mount_root: str = "/mnt/pvc"
    #: claim name -> directory, for running outside a pod (``moorage run``).
    pvc_claim_roots: dict[str, str] = Field(default_factory=dict)

    # -- moorage's own knobs (MOORAGE_STORAGE_*) ------------------------------------------------
    concurrency: int = Field(default=8, ge=1, le=256)
    part_size: int = Field(default=16 * 1024 * 1024, ge=1024 * 1024)
    multipart_threshold: int = Field(default=32 * 1024 * 1024, ge=1024 * 1024)
    retries: int = Field(default=5, ge=0)
    retry_backoff_s: float = Field(default=0.5, ge=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0)
    verify_hashes: bool = True
    #: also check S3 multipart ETags (MD5 of part MD5s); costs a full MD5 pass of the bytes.
    verify_multipart_etag: bool = False
    #: largest total size an archive may expand to, and largest expansion ratio.
    max_archive_bytes: int = Field(default=64 * 1024**3, ge=0)
    max_archive_ratio: float = Field(default=250.0, ge=1)
    progress: Literal["auto", "bar", "log", "off"] = "auto"
    progress_interval_s: float = Field(default=5.0, gt=0)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], /, **overrides: Any) -> StorageSettings:
        """Settings read from ``environ`` instead of ``os.environ`` (a model's own env, tests)."""
        token = _ENVIRON.set(dict(environ))
        try:
            return cls(**overrides)
        finally:
            _ENVIRON.reset(token)

    @field_validator("s3_use_https", "s3_verify_ssl", "aws_anonymous_credential", mode="before")
    @classmethod
    def _kserve_bool(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().lower() not in _FALSE
        return value

    @field_validator("s3_user_virtual_bucket", "s3_use_accelerate", mode="before")
    @classmethod
    def _kserve_true(cls, value: Any) -> Any:
        # KServe compares these with == "true".
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1")
        return value

    @field_validator("storage_config", "storage_override_config", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return None
            value = json.loads(value)
        if value is not None and not isinstance(value, dict):
            raise ValueError("storage spec must be a JSON object")
        return value

    @model_validator(mode="after")
    def _apply_storage_spec(self) -> StorageSettings:
        spec = self.storage_spec
        if spec.get("type") == "s3":
            for key, field in _S3_SPEC_KEYS.items():
                if key in spec and spec[key] is not None:
                    value = spec[key]
                    if field == "s3_verify_ssl":
                        value = str(value).strip().lower() not in _FALSE
                    elif field == "aws_anonymous_credential":
                        value = str(value).strip().lower() == "true"
                    elif field in ("aws_access_key_id", "aws_secret_access_key"):
                        value = SecretStr(str(value))
                    else:
                        value = str(value)
                    object.__setattr__(self, field, value)
        return self

    # -- derived values -------------------------------------------------------------------------
    @property
    def storage_spec(self) -> dict[str, Any]:
        """``STORAGE_CONFIG`` overlaid with ``STORAGE_OVERRIDE_CONFIG`` (empty when unset)."""
        merged: dict[str, Any] = dict(self.storage_config or {})
        merged.update(self.storage_override_config or {})
        return merged

    @property
    def s3_endpoint_url(self) -> str | None:
        """The S3 endpoint: ``AWS_ENDPOINT_URL``, else ``S3_ENDPOINT`` with ``S3_USE_HTTPS``."""
        if self.aws_endpoint_url:
            return self.aws_endpoint_url
        if self.s3_endpoint:
            if "://" in self.s3_endpoint:
                return self.s3_endpoint
            scheme = "http" if self.s3_use_https is False else "https"
            return f"{scheme}://{self.s3_endpoint}"
        return None

    @property
    def s3_verify(self) -> bool | str:
        """``False`` (S3_VERIFY_SSL off), a CA bundle path, or ``True``."""
        if self.s3_verify_ssl is False:
            return False
        if self.aws_ca_bundle:
            return self.aws_ca_bundle
        if self.ca_bundle_configmap_name:
            return str(Path(self.ca_bundle_volume_mount_point) / "cabundle.crt")
        return True

    def headers_for(self, host: str) -> dict[str, str]:
        """Extra request headers configured for ``host`` (``<host>-headers``)."""
        return dict(self.http_headers.get(host, {}))


_ENV_PREFIX = "moorage_storage_"


def _env_names(name: str, info: Any) -> tuple[str, ...]:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice).lower() for choice in alias.choices)
    return (_ENV_PREFIX + name,)


def _is_complex(annotation: Any) -> bool:
    """Lists and maps, whose variables hold JSON (as pydantic-settings reads them). The
    optional storage specs are not: their validator parses the JSON and accepts ``""``."""
    return get_origin(annotation) in (list, dict)


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """Field values found in an environment: each field's first variable that is set."""
    lowered = {key.lower(): value for key, value in environ.items()}
    values: dict[str, Any] = {}
    for name, info in StorageSettings.model_fields.items():
        for env_name in _env_names(name, info):
            if env_name not in lowered:
                continue
            raw = lowered[env_name]
            if _is_complex(info.annotation):
                try:
                    values[name] = json.loads(raw)
                except ValueError as exc:
                    raise ValueError(
                        f"environment variable {env_name.upper()} is not JSON"
                    ) from exc
            else:
                values[name] = raw
            break
    if "http_headers" not in values and (headers := _host_headers(environ)):
        values["http_headers"] = headers
    return values
