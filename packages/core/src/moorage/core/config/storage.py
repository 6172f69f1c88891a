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
environment before anything else reads it. Secrets are :class:`SecretStr` so that a ``repr`` or
log line of the settings never shows them.

The class is plain Python with its own reader and checks, not a pydantic model: the storage
initializer runs in every pod before the model server, and importing pydantic and building the
model cost it ~110 ms of its start-up (a 200 x 1 MiB download takes ~0.5 s in all). A bad value
raises :class:`SettingsError` (a ``ValueError``) naming the variable, or the keyword, and the field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, cast

from moorage.core.config._values import (
    SettingsError,
    check_bounds,
    read_bool,
    read_number,
    read_text,
)

__all__ = ["SecretStr", "SettingsError", "StorageSettings"]

_ENVIRON: ContextVar[dict[str, str] | None] = ContextVar("moorage_storage_environ", default=None)
_FALSE = {"0", "false", "no", "off", ""}
_HEADERS_SUFFIX = "-headers"
_ENV_PREFIX = "MOORAGE_STORAGE_"
_PROGRESS = ("auto", "bar", "log", "off")

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


class SecretStr:
    """A string that ``repr``, ``str`` and f-strings show as stars; read it with
    :meth:`get_secret_value` (the name and method of pydantic's ``SecretStr``)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"SecretStr({str(self)!r})"

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# -- value readers: (value, where) -> typed value; ``where`` names the source in messages ---------

_Reader = Callable[[Any, str], Any]


def _fail(where: str, problem: str) -> SettingsError:
    return SettingsError(f"{where}: {problem}")


_text = read_text


def _optional_text(value: Any, where: str) -> str | None:
    return None if value is None else _text(value, where)


def _secret(value: Any, where: str) -> SecretStr | None:
    if value is None or isinstance(value, SecretStr):
        return value
    if hasattr(value, "get_secret_value"):  # pydantic's SecretStr, from older callers
        return SecretStr(_text(value.get_secret_value(), where))
    return SecretStr(_text(value, where))


_bool = read_bool


def _kserve_bool(value: Any, where: str) -> bool | None:
    """KServe's reading of ``S3_USE_HTTPS``, ``S3_VERIFY_SSL``, ``awsAnonymousCredential``:
    anything but 0/false/no/off/empty is on."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE
    return _bool(value, where)


def _kserve_true(value: Any, where: str) -> bool:
    """KServe compares ``S3_USER_VIRTUAL_BUCKET`` and ``S3_USE_ACCELERATE`` with ``== "true"``."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return _bool(value, where)


def _number(kind: type[int] | type[float], **bounds: float) -> _Reader:
    def read(value: Any, where: str) -> int | float:
        number = read_number(kind, value, where)
        check_bounds(number, value, where, **bounds)
        return cast("int | float", number)

    return read


def _progress(value: Any, where: str) -> str:
    if value not in _PROGRESS:
        raise _fail(where, f"must be one of {', '.join(_PROGRESS)}, got {value!r}")
    return cast(str, value)


def _json(value: Any, where: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise _fail(where, "is not JSON") from None
    return value


def _str_list(value: Any, where: str) -> list[str]:
    value = _json(value, where)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _fail(where, 'expected a list of strings (JSON: ["a", "b"])')
    return list(value)


def _str_map(value: Any, where: str) -> dict[str, str]:
    value = _json(value, where)
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _fail(where, 'expected an object of strings (JSON: {"key": "value"})')
    return dict(value)


def _headers_map(value: Any, where: str) -> dict[str, dict[str, str]]:
    value = _json(value, where)
    if not isinstance(value, Mapping):
        raise _fail(where, 'expected {"host": {"header": "value"}}')
    return {str(host): _str_map(headers, f"{where}[{host!r}]") for host, headers in value.items()}


def _spec(value: Any, where: str) -> dict[str, Any] | None:
    if isinstance(value, str) and not value.strip():
        return None
    value = _json(value, where)
    if value is not None and not isinstance(value, Mapping):
        raise _fail(where, "storage spec must be a JSON object")
    return None if value is None else dict(value)


class _Field:
    __slots__ = ("default", "factory", "names", "read", "repr")

    def __init__(
        self,
        read: _Reader,
        default: Any = None,
        *names: str,
        factory: Callable[[], Any] | None = None,
        repr: bool = True,
    ) -> None:
        self.read = read
        self.default = default
        self.names = names  # variables, first set one wins; none: MOORAGE_STORAGE_<FIELD>
        self.factory = factory
        self.repr = repr


def _env(*names: str, read: _Reader = _optional_text, repr: bool = True) -> _Field:
    return _Field(read, None, *names, repr=repr)


#: Every setting: its reader, default and variable names, in the order ``repr`` shows them.
_FIELDS: dict[str, _Field] = {
    # -- S3 -------------------------------------------------------------------------------------
    "aws_access_key_id": _env("AWS_ACCESS_KEY_ID", read=_secret),
    "aws_secret_access_key": _env("AWS_SECRET_ACCESS_KEY", read=_secret),
    "aws_session_token": _env("AWS_SESSION_TOKEN", read=_secret),
    "aws_endpoint_url": _env("AWS_ENDPOINT_URL"),
    "s3_endpoint": _env("S3_ENDPOINT"),
    "s3_use_https": _env("S3_USE_HTTPS", read=_kserve_bool),
    "s3_verify_ssl": _env("S3_VERIFY_SSL", read=_kserve_bool),
    "aws_ca_bundle": _env("AWS_CA_BUNDLE"),
    "ca_bundle_configmap_name": _env("CA_BUNDLE_CONFIGMAP_NAME"),
    "ca_bundle_volume_mount_point": _Field(
        _text, "/etc/ssl/custom-certs", "CA_BUNDLE_VOLUME_MOUNT_POINT"
    ),
    "aws_anonymous_credential": _Field(_kserve_bool, False, "awsAnonymousCredential"),
    "s3_user_virtual_bucket": _Field(_kserve_true, False, "S3_USER_VIRTUAL_BUCKET"),
    "s3_use_accelerate": _Field(_kserve_true, False, "S3_USE_ACCELERATE"),
    "aws_default_region": _env("AWS_DEFAULT_REGION", "AWS_REGION"),
    # -- GCS ------------------------------------------------------------------------------------
    "google_application_credentials": _env("GOOGLE_APPLICATION_CREDENTIALS"),
    "storage_emulator_host": _env("STORAGE_EMULATOR_HOST"),
    # -- Azure ----------------------------------------------------------------------------------
    "azure_tenant_id": _env("AZURE_TENANT_ID", "AZ_TENANT_ID"),
    "azure_client_id": _env("AZURE_CLIENT_ID", "AZ_CLIENT_ID"),
    "azure_client_secret": _env("AZURE_CLIENT_SECRET", "AZ_CLIENT_SECRET", read=_secret),
    "azure_subscription_id": _env("AZURE_SUBSCRIPTION_ID", "AZ_SUBSCRIPTION_ID"),
    "azure_storage_access_key": _env("AZURE_STORAGE_ACCESS_KEY", read=_secret),
    "azure_storage_sas_token": _env("AZURE_STORAGE_SAS_TOKEN", read=_secret),
    "azure_blob_hosts": _Field(_str_list, factory=list),
    # -- Hugging Face ---------------------------------------------------------------------------
    "hf_token": _env("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", read=_secret),
    "hf_endpoint": _Field(_text, "https://huggingface.co", "HF_ENDPOINT"),
    # -- OCI registries -------------------------------------------------------------------------
    "registry_auth_file": _env("REGISTRY_AUTH_FILE", "MOORAGE_STORAGE_REGISTRY_AUTH_FILE"),
    "docker_config": _env("DOCKER_CONFIG"),
    "insecure_registries": _Field(_str_list, factory=list),
    "oci_platform": _Field(_text, "linux/amd64"),
    # -- HTTP, storage spec, HDFS ---------------------------------------------------------------
    "http_headers": _Field(_headers_map, factory=dict, repr=False),
    "storage_config": _env("STORAGE_CONFIG", read=_spec, repr=False),
    "storage_override_config": _env("STORAGE_OVERRIDE_CONFIG", read=_spec, repr=False),
    "hdfs_secret_dir": _env("HDFS_SECRET_DIR"),
    # -- local sources --------------------------------------------------------------------------
    "pvc_mount_root": _Field(_text, "/mnt/pvc"),
    "pvc_claim_roots": _Field(_str_map, factory=dict),
    # -- moorage's own knobs (MOORAGE_STORAGE_*) ------------------------------------------------
    "concurrency": _Field(_number(int, ge=1, le=256), 8),
    "part_size": _Field(_number(int, ge=1024 * 1024), 16 * 1024 * 1024),
    "multipart_threshold": _Field(_number(int, ge=1024 * 1024), 32 * 1024 * 1024),
    "retries": _Field(_number(int, ge=0), 5),
    "retry_backoff_s": _Field(_number(float, ge=0), 0.5),
    "connect_timeout_s": _Field(_number(float, gt=0), 10.0),
    "read_timeout_s": _Field(_number(float, gt=0), 60.0),
    "verify_hashes": _Field(_bool, True),
    "verify_multipart_etag": _Field(_bool, False),
    "max_archive_bytes": _Field(_number(int, ge=0), 64 * 1024**3),
    "max_archive_ratio": _Field(_number(float, ge=1), 250.0),
    "progress": _Field(_progress, "auto"),
    "progress_interval_s": _Field(_number(float, gt=0), 5.0),
}


class StorageSettings:
    """Settings of the storage initializer (``moorage-storage``) and ``moorage.storage``.

    ``StorageSettings(**overrides)`` reads the environment (``os.environ``, or the mapping given to
    :meth:`from_environ`); keyword arguments win over it and are checked the same way (a string
    is read as the variable would be). Variable names match case-insensitively: a field's KServe
    names where it has them, else ``MOORAGE_STORAGE_<FIELD>``; lists and maps are JSON. Unknown
    keywords are ignored. A bad value raises :class:`SettingsError` naming it.
    """

    # -- S3 -------------------------------------------------------------------------------------
    aws_access_key_id: SecretStr | None
    aws_secret_access_key: SecretStr | None
    aws_session_token: SecretStr | None
    aws_endpoint_url: str | None
    s3_endpoint: str | None
    s3_use_https: bool | None
    s3_verify_ssl: bool | None
    aws_ca_bundle: str | None
    ca_bundle_configmap_name: str | None
    ca_bundle_volume_mount_point: str
    aws_anonymous_credential: bool
    s3_user_virtual_bucket: bool
    s3_use_accelerate: bool
    aws_default_region: str | None

    # -- GCS ------------------------------------------------------------------------------------
    google_application_credentials: str | None
    storage_emulator_host: str | None

    # -- Azure ----------------------------------------------------------------------------------
    azure_tenant_id: str | None
    azure_client_id: str | None
    azure_client_secret: SecretStr | None
    azure_subscription_id: str | None
    azure_storage_access_key: SecretStr | None
    azure_storage_sas_token: SecretStr | None
    #: ``host[:port]`` values serving path-style Azure Blob URLs (an Azurite emulator, a proxy).
    azure_blob_hosts: list[str]

    # -- Hugging Face ---------------------------------------------------------------------------
    hf_token: SecretStr | None
    hf_endpoint: str

    # -- OCI registries -------------------------------------------------------------------------
    #: Docker/podman auth file (``~/.docker/config.json`` style) for private registries.
    registry_auth_file: str | None
    docker_config: str | None
    #: registries reached over plain http (loopback registries always are).
    insecure_registries: list[str]
    oci_platform: str

    # -- HTTP, storage spec, HDFS ---------------------------------------------------------------
    #: ``{host: {header: value}}`` from the ``<host>-headers`` variables.
    http_headers: dict[str, dict[str, str]]
    storage_config: dict[str, Any] | None
    storage_override_config: dict[str, Any] | None
    hdfs_secret_dir: str | None

    # -- local sources --------------------------------------------------------------------------
    #: where the pod mounts a ``pvc://`` source (the webhook rewrites pvc://c/p to /mnt/pvc/p).
    pvc_mount_root: str
    #: claim name -> directory, for running outside a pod (``moorage run``).
    pvc_claim_roots: dict[str, str]

    # -- moorage's own knobs (MOORAGE_STORAGE_*) ------------------------------------------------
    concurrency: int
    part_size: int
    multipart_threshold: int
    retries: int
    retry_backoff_s: float
    connect_timeout_s: float
    read_timeout_s: float
    verify_hashes: bool
    #: also check S3 multipart ETags (MD5 of part MD5s); costs a full MD5 pass of the bytes.
    verify_multipart_etag: bool
    #: largest total size an archive may expand to, and largest expansion ratio.
    max_archive_bytes: int
    max_archive_ratio: float
    progress: Literal["auto", "bar", "log", "off"]
    progress_interval_s: float

    def __init__(self, /, **overrides: Any) -> None:
        environ = _ENVIRON.get()
        raw = _from_environ(environ if environ is not None else os.environ)
        for key, value in overrides.items():
            name = _KEYWORDS.get(key.lower())
            if name is not None:
                raw[name] = (value, f"{key}" if key == name else f"{key} ({name})")
        errors: list[str] = []
        for name, spec in _FIELDS.items():
            if name in raw:
                value, where = raw[name]
                try:
                    value = spec.read(value, where)
                except SettingsError as exc:
                    errors.append(str(exc))
                    continue
            else:
                value = spec.factory() if spec.factory is not None else spec.default
            setattr(self, name, value)
        if errors:
            many = f"{len(errors)} invalid storage settings" if len(errors) > 1 else ""
            raise SettingsError("; ".join([many, *errors] if many else errors))
        self._apply_storage_spec()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], /, **overrides: Any) -> StorageSettings:
        """Settings read from ``environ`` instead of ``os.environ`` (a model's own env, tests)."""
        token = _ENVIRON.set(dict(environ))
        try:
            return cls(**overrides)
        finally:
            _ENVIRON.reset(token)

    def _apply_storage_spec(self) -> None:
        spec = self.storage_spec
        if spec.get("type") != "s3":
            return
        for key, name in _S3_SPEC_KEYS.items():
            if key not in spec or spec[key] is None:
                continue
            value: Any = spec[key]
            if name == "s3_verify_ssl":
                value = _kserve_bool(str(value), f"storage spec {key}")
            elif name == "aws_anonymous_credential":
                value = str(value).strip().lower() == "true"
            elif name in ("aws_access_key_id", "aws_secret_access_key"):
                value = SecretStr(str(value))
            else:
                value = str(value)
            setattr(self, name, value)

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

    # -- plain-object behaviour -----------------------------------------------------------------
    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={getattr(self, name)!r}" for name, spec in _FIELDS.items() if spec.repr
        )
        return f"{type(self).__name__}({shown})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the model it replaces


#: keyword -> field: field names, and (case-insensitively) the variable names.
_KEYWORDS: dict[str, str] = {name: name for name in _FIELDS}
for _name, _spec_ in _FIELDS.items():
    for _alias in _spec_.names:
        _KEYWORDS.setdefault(_alias.lower(), _name)


def _env_names(name: str, spec: _Field) -> tuple[str, ...]:
    return spec.names or (_ENV_PREFIX + name.upper(),)


def _host_headers(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``{host: headers}`` from the ``<host>-headers`` variables (JSON objects)."""
    headers: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.endswith(_HEADERS_SUFFIX) or name == _HEADERS_SUFFIX:
            continue
        host = name[: -len(_HEADERS_SUFFIX)]
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise SettingsError(f"environment variable {name} is not a JSON object")
        headers[host] = {str(k): str(v) for k, v in parsed.items()}
    return headers


def _from_environ(environ: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """``{field: (text, where)}`` for each field with a variable set (its first one that is)."""
    lowered = {key.lower(): value for key, value in environ.items()}
    values: dict[str, tuple[Any, str]] = {}
    for name, spec in _FIELDS.items():
        for env_name in _env_names(name, spec):
            if env_name.lower() in lowered:
                values[name] = (
                    lowered[env_name.lower()],
                    f"environment variable {env_name} ({name})",
                )
                break
    if "http_headers" not in values and (headers := _host_headers(environ)):
        values["http_headers"] = (headers, "<host>-headers variables (http_headers)")
    return values
