"""Storage URI grammar: one parser for every scheme the storage initializer handles.

``parse_storage_uri(uri)`` turns a KServe ``storageUri`` into a typed, frozen value; ``str()`` of
that value gives back a URI that parses to the same value. Parsing is pure: it never touches the
network or the file system (whether a local path exists is the storage initializer's business).

=========================================  ===================================================
URI                                        value
=========================================  ===================================================
``s3://bucket/key/prefix``                 :class:`S3URI` ``(bucket, key)``
``gs://bucket/path``                       :class:`GCSURI` ``(bucket, path)``
``https://acct.blob.core.windows.net/c/p`` :class:`AzureBlobURI` ``(account, container, path)``
``https://acct.file.core.windows.net/s/p`` :class:`AzureFileURI` ``(account, share, path)``
``http(s)://host/path/file.ext``           :class:`HTTPURI` ``(url, host, filename)``
``pvc://claim/path``                       :class:`PVCURI` ``(claim, path)``
``file:///abs``, ``/abs``, ``rel/path``    :class:`LocalURI` ``(path)``
``hf://org/repo[:revision]``               :class:`HFURI` ``(repo_id, revision)``
``oci://registry/repo[:tag][@digest]``     :class:`OCIURI` ``(registry, repository, tag, digest)``
``hdfs://...``, ``webhdfs://...``          :class:`HDFSURI` ``(scheme, host, path)``
=========================================  ===================================================

Dispatch follows KServe v0.14's storage initializer: Azure's host patterns win over the generic
``http(s)`` form, a string without ``<word>://`` is a local path, and an unknown scheme raises
:class:`~moorage.core.errors.UnsupportedScheme` with KServe's message. A malformed URI of a known
scheme raises :class:`~moorage.core.errors.InvalidStorageURI`.

:func:`check_controller_storage_uri` applies the controller's (webhook's) narrower rule, with the
Go error message, for code that validates InferenceServices.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import unquote, urlsplit

from moorage.core.errors import InvalidStorageURI, UnsupportedScheme

__all__ = [
    "CONTROLLER_STORAGE_URI_PREFIXES",
    "GCSURI",
    "HDFSURI",
    "HFURI",
    "HTTPURI",
    "OCIURI",
    "PVCURI",
    "S3URI",
    "AzureBlobURI",
    "AzureFileURI",
    "LocalURI",
    "StorageURI",
    "check_controller_storage_uri",
    "parse_storage_uri",
]

#: Prefixes the KServe controller accepts without a ClusterStorageContainer (utils.go).
CONTROLLER_STORAGE_URI_PREFIXES: tuple[str, ...] = (
    "gs://",
    "s3://",
    "pvc://",
    "file://",
    "https://",
    "http://",
    "hdfs://",
    "webhdfs://",
    "oci://",
)

_UNRECOGNISED = (
    "Cannot recognize storage type for {uri}\n"
    "'gs://', 's3://', 'file://', and 'http(s)://' are the current available storage type."
)
_CONTROLLER_UNSUPPORTED = (
    "storageUri, must be one of: [{prefixes}] or match "
    "https://{{}}.blob.core.windows.net/{{}}/{{}} or be an absolute or relative local path. "
    "StorageUri [{uri}] is not supported."
)

_SCHEME = re.compile(r"^(\w+?)://")
_ANY_SCHEME = re.compile(r"\w+?://")
_AZURE_BLOB = (
    re.compile(r"^https://(.+?)\.blob\.core\.windows\.net/(.+)$"),
    re.compile(r"^https://(.+?)\.(z[0-9]{2})\.blob\.storage\.azure\.net/(.+)$"),
)
_AZURE_FILE = (
    re.compile(r"^https://(.+?)\.file\.core\.windows\.net/(.+)$"),
    re.compile(r"^https://(.+?)\.(z[0-9]{2})\.file\.storage\.azure\.net/(.+)$"),
)
_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_REPO_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HF_PART = re.compile(r"^[\w.-]+$")


@dataclass(frozen=True)
class StorageURI:
    """Base of every parsed storage URI. ``str(value)`` is a canonical URI for it."""

    _scheme: ClassVar[str] = ""

    @property
    def scheme(self) -> str:
        """The URI scheme (``s3``, ``gs``, ``https``, ``file``, ...)."""
        return self._scheme

    @property
    def uri(self) -> str:
        """The canonical URI string."""
        return str(self)


@dataclass(frozen=True)
class S3URI(StorageURI):
    """``s3://<bucket>/<key>``; ``key`` is an object key or a prefix (may be empty)."""

    bucket: str
    key: str = ""
    _scheme: ClassVar[str] = "s3"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"


@dataclass(frozen=True)
class GCSURI(StorageURI):
    """``gs://<bucket>/<path>``; ``path`` is an object name or a prefix (may be empty)."""

    bucket: str
    path: str = ""
    _scheme: ClassVar[str] = "gs"

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.path}" if self.path else f"gs://{self.bucket}"


@dataclass(frozen=True)
class AzureBlobURI(StorageURI):
    """An Azure Blob URL: account, container and blob name or prefix.

    ``endpoint`` is the account's blob service URL (``https://acct.blob.core.windows.net``, or a
    path-style emulator URL such as ``http://127.0.0.1:10000/devstoreaccount1``).
    """

    account: str
    container: str
    path: str
    endpoint: str

    @property
    def scheme(self) -> str:
        return self.endpoint.split("://", 1)[0]

    def __str__(self) -> str:
        tail = f"{self.container}/{self.path}" if self.path else self.container
        return f"{self.endpoint}/{tail}"


@dataclass(frozen=True)
class AzureFileURI(StorageURI):
    """An Azure Files URL: account, share and file or directory path."""

    account: str
    share: str
    path: str
    endpoint: str

    @property
    def scheme(self) -> str:
        return self.endpoint.split("://", 1)[0]

    def __str__(self) -> str:
        tail = f"{self.share}/{self.path}" if self.path else self.share
        return f"{self.endpoint}/{tail}"


@dataclass(frozen=True)
class HTTPURI(StorageURI):
    """A plain ``http(s)`` URL of one file (which may be a zip/tar archive)."""

    url: str
    host: str
    filename: str

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0]

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class PVCURI(StorageURI):
    """``pvc://<claim>[/<path>]``; ``path`` is relative to the claim's root (may be empty)."""

    claim: str
    path: str = ""
    _scheme: ClassVar[str] = "pvc"

    def __str__(self) -> str:
        return f"pvc://{self.claim}/{self.path}" if self.path else f"pvc://{self.claim}"


@dataclass(frozen=True)
class LocalURI(StorageURI):
    """A local path, given plainly or as ``file://<path>``."""

    path: str
    _scheme: ClassVar[str] = "file"

    def __str__(self) -> str:
        return f"file://{self.path}"


@dataclass(frozen=True)
class HFURI(StorageURI):
    """``hf://<org>/<repo>[:<revision>]``; ``revision`` is a branch, tag or commit, or None."""

    repo_id: str
    revision: str | None = None
    _scheme: ClassVar[str] = "hf"

    @property
    def org(self) -> str:
        return self.repo_id.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.repo_id.split("/", 1)[1]

    def __str__(self) -> str:
        return f"hf://{self.repo_id}:{self.revision}" if self.revision else f"hf://{self.repo_id}"


@dataclass(frozen=True)
class OCIURI(StorageURI):
    """``oci://<registry>/<repository>[:<tag>][@<digest>]`` (an image or artifact reference).

    A reference without a registry host is normalised like Docker does (``docker.io``, with
    ``library/`` for single-component names); without tag and digest the tag is ``latest``.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None
    _scheme: ClassVar[str] = "oci"

    @property
    def reference(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def image(self) -> str:
        """The image reference without the ``oci://`` prefix, as a modelcar container uses it."""
        ref = f"{self.registry}/{self.repository}"
        if self.tag:
            ref += f":{self.tag}"
        if self.digest:
            ref += f"@{self.digest}"
        return ref

    def __str__(self) -> str:
        return f"oci://{self.image}"


@dataclass(frozen=True)
class HDFSURI(StorageURI):
    """``hdfs://`` or ``webhdfs://`` (recognised; the namenode comes from the HDFS secret)."""

    hdfs_scheme: str
    host: str
    path: str

    @property
    def scheme(self) -> str:
        return self.hdfs_scheme

    def __str__(self) -> str:
        return f"{self.hdfs_scheme}://{self.host}{self.path}"


def parse_storage_uri(uri: str, /, *, azure_blob_hosts: Collection[str] = ()) -> StorageURI:
    """Parse ``uri`` into its typed value.

    ``azure_blob_hosts`` lists ``host[:port]`` values whose ``http(s)`` URLs are path-style Azure
    Blob URLs (``http://host:port/<account>/<container>/<path>``, as Azurite serves them).

    Raises :class:`InvalidStorageURI` for a malformed URI of a known scheme and
    :class:`UnsupportedScheme` for a scheme the storage initializer does not know.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidStorageURI("storage URI must be a non-empty string", uri=uri)
    if uri != uri.strip():
        raise InvalidStorageURI(f"storage URI has leading or trailing whitespace: {uri!r}", uri=uri)
    match = _SCHEME.match(uri)
    if match is None:
        if _ANY_SCHEME.search(uri) and "://" in uri.split("/", 1)[0]:
            raise UnsupportedScheme(_UNRECOGNISED.format(uri=uri), uri=uri)
        return LocalURI(uri)
    scheme = match.group(1)
    rest = uri[match.end() :]
    if scheme == "s3":
        bucket, key = _bucket_and_key(uri, rest, "s3")
        return S3URI(bucket, key)
    if scheme == "gs":
        bucket, key = _bucket_and_key(uri, rest, "gs")
        return GCSURI(bucket, key)
    if scheme == "file":
        if not rest:
            raise InvalidStorageURI(f"file:// URI has no path: {uri}", uri=uri)
        return LocalURI(rest)
    if scheme == "pvc":
        return _parse_pvc(uri, rest)
    if scheme == "hf":
        return _parse_hf(uri, rest)
    if scheme == "oci":
        return _parse_oci(uri, rest)
    if scheme in ("hdfs", "webhdfs"):
        parts = urlsplit(uri)
        return HDFSURI(scheme, parts.netloc, parts.path)
    if scheme in ("http", "https"):
        return _parse_http(uri, azure_blob_hosts)
    raise UnsupportedScheme(_UNRECOGNISED.format(uri=uri), uri=uri)


def check_controller_storage_uri(uri: str, /, *, extra_prefixes: Collection[str] = ()) -> None:
    """Apply the KServe controller's ``ValidateStorageURI`` rule, raising with its message.

    Accepts a local path (no ``<word>://``), an Azure Blob URL, or one of
    :data:`CONTROLLER_STORAGE_URI_PREFIXES` plus ``extra_prefixes`` (from ClusterStorageContainers,
    e.g. ``hf://`` in the default one).
    """
    if not _ANY_SCHEME.search(uri):
        return
    if any(p.match(uri) for p in _AZURE_BLOB[:1]):
        return
    prefixes = (*CONTROLLER_STORAGE_URI_PREFIXES, *extra_prefixes)
    if any(uri.startswith(p) for p in prefixes):
        return
    message = _CONTROLLER_UNSUPPORTED.format(
        prefixes=", ".join(CONTROLLER_STORAGE_URI_PREFIXES), uri=uri
    )
    raise InvalidStorageURI(message, uri=uri)


def _bucket_and_key(uri: str, rest: str, scheme: str) -> tuple[str, str]:
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise InvalidStorageURI(f"{scheme}:// URI has no bucket: {uri}", uri=uri)
    if any(c.isspace() for c in bucket):
        raise InvalidStorageURI(f"{scheme}:// bucket name contains whitespace: {uri}", uri=uri)
    return bucket, key


def _parse_pvc(uri: str, rest: str) -> PVCURI:
    claim, _, path = rest.partition("/")
    if not claim:
        raise InvalidStorageURI(f"pvc:// URI has no claim name: {uri}", uri=uri)
    return PVCURI(claim, path.strip("/"))


def _parse_hf(uri: str, rest: str) -> HFURI:
    parts = rest.split("/")
    if len(parts) != 2:
        raise InvalidStorageURI(
            "URI must contain exactly one '/' separating the repo and model name", uri=uri
        )
    org, model_part = parts
    if not org:
        raise InvalidStorageURI("Repository name cannot be empty", uri=uri)
    model, _, revision = model_part.partition(":")
    if not model:
        raise InvalidStorageURI("Model name cannot be empty", uri=uri)
    for label, value in (("Repository", org), ("Model", model)):
        if not _HF_PART.match(value):
            raise InvalidStorageURI(f"{label} name has invalid characters: {value!r}", uri=uri)
    if revision and (any(c.isspace() for c in revision) or ":" in revision):
        raise InvalidStorageURI(f"hf:// revision is not valid: {revision!r}", uri=uri)
    return HFURI(f"{org}/{model}", revision or None)


def _parse_oci(uri: str, rest: str) -> OCIURI:
    if not rest:
        raise InvalidStorageURI(f"oci:// URI has no image reference: {uri}", uri=uri)
    name, at, digest = rest.partition("@")
    if at and not _DIGEST.match(digest):
        raise InvalidStorageURI(f"oci:// digest is not valid: {digest!r} in {uri}", uri=uri)
    # A tag is a ':' after the last '/', so a registry port is not mistaken for one.
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag: str | None = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidStorageURI(f"oci:// tag is not valid: {tag!r} in {uri}", uri=uri)
    first, _, remainder = name.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, remainder
    else:
        registry, repository = "docker.io", name
        if "/" not in repository:
            repository = f"library/{repository}"
    if not registry or not repository:
        raise InvalidStorageURI(f"oci:// URI has no repository: {uri}", uri=uri)
    for component in repository.split("/"):
        if not _REPO_COMPONENT.match(component):
            raise InvalidStorageURI(
                f"oci:// repository is not valid (lowercase letters, digits, separators): "
                f"{repository!r} in {uri}",
                uri=uri,
            )
    if tag is None and not at:
        tag = "latest"
    return OCIURI(registry, repository, tag, digest or None)


def _azure_match(
    uri: str, patterns: tuple[re.Pattern[str], ...], service: str
) -> tuple[str, str, str, str] | None:
    for pattern in patterns:
        m = pattern.match(uri)
        if m is None:
            continue
        account = m.group(1)
        if m.lastindex == 3:
            endpoint = f"https://{account}.{m.group(2)}.{service}.storage.azure.net"
        else:
            endpoint = f"https://{account}.{service}.core.windows.net"
        top, _, path = m.group(m.lastindex or 2).partition("/")
        return account, top, path, endpoint
    return None


def _parse_http(uri: str, azure_blob_hosts: Collection[str]) -> StorageURI:
    blob = _azure_match(uri, _AZURE_BLOB, "blob")
    if blob:
        return AzureBlobURI(*blob)
    share = _azure_match(uri, _AZURE_FILE, "file")
    if share:
        return AzureFileURI(*share)
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if not host:
        raise InvalidStorageURI(f"URL has no host: {uri}", uri=uri)
    if parts.netloc in azure_blob_hosts or host in azure_blob_hosts:
        segments = parts.path.lstrip("/").split("/", 2)
        if len(segments) < 2 or not segments[0] or not segments[1]:
            raise InvalidStorageURI(
                f"path-style Azure Blob URL needs /<account>/<container>[/<path>]: {uri}", uri=uri
            )
        account, container = segments[0], segments[1]
        path = segments[2] if len(segments) == 3 else ""
        endpoint = f"{parts.scheme}://{parts.netloc}/{account}"
        return AzureBlobURI(account, container, path, endpoint)
    filename = unquote(parts.path.rsplit("/", 1)[-1])
    if not filename:
        raise InvalidStorageURI(f"No filename contained in URI: {uri}", uri=uri)
    return HTTPURI(uri, host, filename)
