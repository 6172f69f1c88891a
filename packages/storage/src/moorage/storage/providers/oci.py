"""``oci://<registry>/<repository>[:<tag>][@<digest>]``: model images and OCI artifacts.

A thin client of the OCI distribution API (``/v2/<repo>/manifests/<ref>``,
``/v2/<repo>/blobs/<digest>``) over the engine's HTTP client; no container runtime needed.

* An image index (OCI or Docker manifest list) is resolved to the ``oci_platform`` entry
  (``linux/amd64`` unless ``MOORAGE_STORAGE_OCI_PLATFORM`` says otherwise).
* An **image** (image config media type, Docker or OCI) is assembled like a modelcar sees it:
  its layers (tar, gzip or zstd) are applied in order with whiteouts and ``/models`` becomes the
  destination's content. An image without a non-empty ``/models`` is an error.
* An **artifact** (any other config media type or an ``artifactType``, e.g. pushed with ORAS)
  contributes each layer titled by ``org.opencontainers.image.title`` as a file of that name;
  a layer marked ``io.deis.oras.content.unpack`` is a directory tarball and is unpacked safely.
* Every blob is checked against its SHA-256 digest; a pinned manifest digest is checked too.
* Auth: anonymous, or ``Basic`` credentials from a Docker/podman auth file
  (``REGISTRY_AUTH_FILE``, ``$DOCKER_CONFIG/config.json``), exchanged for a bearer token when the
  registry's ``WWW-Authenticate`` challenge asks for one. Loopback registries and those listed in
  ``MOORAGE_STORAGE_INSECURE_REGISTRIES`` are reached over plain http.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from moorage.core.errors import (
    IntegrityError,
    StorageAuthError,
    StorageNotFound,
    UnsupportedScheme,
)
from moorage.core.storage_uri import OCIURI
from moorage.storage._archive import safe_extract
from moorage.storage._context import Context
from moorage.storage._http import HttpClient, HttpError
from moorage.storage._layers import LayerApplier
from moorage.storage._plan import HttpSource, Plan, RemoteFile
from moorage.storage._redact import register_secret
from moorage.storage._transfer import safe_relpath

__all__ = ["OCIProvider", "RegistryClient", "provider"]

logger = logging.getLogger(__name__)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
IMAGE_CONFIGS = (
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
)
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
TITLE = "org.opencontainers.image.title"
UNPACK = "io.deis.oras.content.unpack"
#: compressed-tar layer media types that, in an artifact, carry a directory (oras-py packs
#: directories so, without the unpack annotation; it labels plain files ``...layer.v1.tar``).
DIR_LAYERS = (
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
)
BLOB_DIR = ".moorage-oci"
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


class RegistryClient:
    """Just enough of the distribution API: manifests, blob URLs and the auth dance."""

    def __init__(
        self,
        http: HttpClient,
        ref: OCIURI,
        *,
        plain_http: bool,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.http = http
        self.ref = ref
        host = "registry-1.docker.io" if ref.registry == "docker.io" else ref.registry
        self.base = f"{'http' if plain_http else 'https'}://{host}/v2/{ref.repository}"
        self.credentials = credentials
        self.auth: dict[str, str] = {}
        if credentials:
            register_secret(credentials[1])

    def _get(self, url: str, headers: dict[str, str]) -> Any:
        for attempt in (0, 1):
            try:
                return self.http.request("GET", url, headers={**headers, **self.auth})
            except HttpError as exc:
                challenge = exc.headers.get("www-authenticate", "")
                if exc.status == 401 and attempt == 0 and self._authenticate(challenge):
                    continue
                raise
        raise AssertionError("unreachable")

    def _basic(self) -> str:
        assert self.credentials is not None
        return "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()

    def _authenticate(self, challenge: str) -> bool:
        """Answer a ``WWW-Authenticate`` challenge; returns whether a retry may succeed."""
        scheme, _, rest = challenge.partition(" ")
        params = dict(_CHALLENGE.findall(rest))
        if scheme.lower() == "basic":
            if not self.credentials or "Authorization" in self.auth:
                return False
            self.auth = {"Authorization": self._basic()}
            return True
        realm = params.get("realm")
        if scheme.lower() != "bearer" or not realm:
            return False
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        query.setdefault("scope", f"repository:{self.ref.repository}:pull")
        headers = {"Authorization": self._basic()} if self.credentials else {}
        try:
            response = self.http.request("GET", f"{realm}?{urlencode(query)}", headers=headers)
        except HttpError as exc:
            raise StorageAuthError(
                f"oci://{self.ref.image}: the registry's token service refused the request "
                f"(HTTP {exc.status})"
            ) from None
        data = json.loads(response.body or b"{}")
        token = data.get("token") or data.get("access_token")
        if not token:
            return False
        register_secret(token)
        self.auth = {"Authorization": f"Bearer {token}"}
        return True

    def manifest(self, reference: str) -> tuple[dict[str, Any], str, str]:
        """The manifest (parsed), its media type and its digest."""
        response = self._get(f"{self.base}/manifests/{reference}", {"Accept": ACCEPT})
        body = response.body
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise IntegrityError(
                f"oci://{self.ref.image}: manifest digest {digest} does not match {reference}"
            )
        data = json.loads(body)
        media = data.get("mediaType") or (response.header("Content-Type") or "").split(";")[0]
        return data, media, digest

    def blob(self, digest: str) -> bytes:
        return bytes(self._get(f"{self.base}/blobs/{digest}", {}).body)

    def blob_url(self, digest: str) -> str:
        return f"{self.base}/blobs/{digest}"


def _credentials(ctx: Context, registry: str) -> tuple[str, str] | None:
    s = ctx.settings
    candidates: list[Path] = []
    if s.registry_auth_file:
        candidates.append(Path(s.registry_auth_file))
    if s.docker_config:
        candidates.append(Path(s.docker_config) / "config.json")
    keys = [registry, f"https://{registry}", f"http://{registry}"]
    if registry == "docker.io":
        keys += ["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"]
    for path in candidates:
        try:
            auths = json.loads(path.read_text()).get("auths", {})
        except (OSError, ValueError):
            continue
        for key in keys:
            entry = auths.get(key) or auths.get(key.rstrip("/"))
            if not entry:
                continue
            if entry.get("auth"):
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                return user, password
            if entry.get("username"):
                return str(entry["username"]), str(entry.get("password", ""))
    return None


class OCIProvider:
    name = "oci"

    def plan(self, uri: OCIURI, ctx: Context, /) -> Plan:
        host = uri.registry.rsplit(":", 1)[0] if not uri.registry.startswith("[") else uri.registry
        plain = host in _LOOPBACK or uri.registry in ctx.settings.insecure_registries
        client = RegistryClient(
            ctx.http, uri, plain_http=plain, credentials=_credentials(ctx, uri.registry)
        )
        try:
            manifest, media, digest = client.manifest(uri.reference)
            if media in (OCI_INDEX, DOCKER_LIST) or "manifests" in manifest:
                manifest, media, digest = self._pick_platform(client, manifest, ctx, uri)
        except HttpError as exc:
            if exc.status in (401, 403):
                raise StorageAuthError(
                    f"{uri}: registry authentication failed (HTTP {exc.status}); "
                    "provide credentials with REGISTRY_AUTH_FILE or DOCKER_CONFIG"
                ) from None
            if exc.status == 404:
                raise StorageNotFound(f"{uri}: manifest {uri.reference!r} not found") from None
            raise
        config = manifest.get("config") or {}
        layers = manifest.get("layers") or []
        is_image = config.get("mediaType") in IMAGE_CONFIGS and not manifest.get("artifactType")
        files: list[RemoteFile] = []
        for layer in layers:
            layer_digest = str(layer["digest"])
            algo, _, hexdigest = layer_digest.partition(":")
            if algo != "sha256":
                raise UnsupportedScheme(f"{uri}: unsupported digest algorithm {algo!r}")
            annotations = layer.get("annotations") or {}
            title = annotations.get(TITLE)
            unpack = _is_dir_layer(layer)
            if is_image or unpack:
                path = f"{BLOB_DIR}/{hexdigest}"
            elif title:
                path = safe_relpath(str(title))
            else:
                continue  # untitled artifact layer: nothing to name it by
            if any(f.path == path for f in files):
                continue  # the same blob used twice in one image
            files.append(
                RemoteFile(
                    path=path,
                    size=int(layer.get("size", 0)) if "size" in layer else None,
                    source=HttpSource(ctx.http, client.blob_url(layer_digest), headers=client.auth),
                    identity=layer_digest,
                    sha256=hexdigest,
                    origin=f"{uri} {layer_digest}",
                )
            )
        if not files:
            raise StorageNotFound(f"Failed to fetch model. No model found in {uri}.")
        layer_list = [(str(layer["digest"]), str(layer.get("mediaType", ""))) for layer in layers]
        unpack_titles = {
            str(layer["digest"]): str((layer.get("annotations") or {}).get(TITLE, ""))
            for layer in layers
            if not is_image and _is_dir_layer(layer)
        }

        def finalize(staging: Path, fctx: Context) -> None:
            if is_image:
                _assemble_image(staging, layer_list, fctx, str(uri))
            else:
                _unpack_artifact_dirs(staging, unpack_titles, fctx)

        return Plan(
            files=files,
            digest=digest,
            finalize=finalize,
            extra={"media_type": media, "kind": "image" if is_image else "artifact"},
        )

    @staticmethod
    def _pick_platform(
        client: RegistryClient, index: dict[str, Any], ctx: Context, uri: OCIURI
    ) -> tuple[dict[str, Any], str, str]:
        want_os, _, rest = ctx.settings.oci_platform.partition("/")
        want_arch, _, want_variant = rest.partition("/")
        for entry in index.get("manifests", []):
            platform = entry.get("platform") or {}
            if platform.get("os") == want_os and platform.get("architecture") == want_arch:
                if want_variant and platform.get("variant") not in (None, want_variant):
                    continue
                return client.manifest(str(entry["digest"]))
        raise StorageNotFound(f"{uri}: the image index has no {ctx.settings.oci_platform} manifest")


def _is_dir_layer(layer: dict[str, Any]) -> bool:
    annotations = layer.get("annotations") or {}
    if str(annotations.get(UNPACK, "")).lower() == "true":
        return True
    return bool(annotations.get(TITLE)) and str(layer.get("mediaType", "")) in DIR_LAYERS


def _assemble_image(staging: Path, layers: list[tuple[str, str]], ctx: Context, uri: str) -> None:
    blobs = staging / BLOB_DIR
    rootfs = staging / f"{BLOB_DIR}-rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    applier = LayerApplier(rootfs, subtree="models", max_bytes=ctx.settings.max_archive_bytes)
    for digest, media in layers:
        applier.apply(blobs / digest.partition(":")[2], media)
    applier.check_links()
    shutil.rmtree(blobs)
    entries = list(rootfs.iterdir())
    if not entries:
        shutil.rmtree(rootfs, ignore_errors=True)
        raise StorageNotFound(f"{uri}: the image has no /models directory or it is empty")
    for entry in entries:
        os.replace(entry, staging / entry.name)
    rootfs.rmdir()


def _unpack_artifact_dirs(staging: Path, titles: dict[str, str], ctx: Context) -> None:
    blobs = staging / BLOB_DIR
    for digest, title in titles.items():
        blob = blobs / digest.partition(":")[2]
        if not blob.exists():
            continue
        target = staging / safe_relpath(title) if title else staging
        safe_extract(
            blob,
            target.parent if title else staging,
            max_bytes=ctx.settings.max_archive_bytes,
            max_ratio=ctx.settings.max_archive_ratio,
            kind="tar",
        )
    shutil.rmtree(blobs, ignore_errors=True)


provider = OCIProvider()
