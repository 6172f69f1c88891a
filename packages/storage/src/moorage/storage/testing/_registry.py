"""A real OCI registry (Debian's ``docker-registry``) and helpers that push to it over HTTP.

The pushes speak the distribution API directly (monolithic blob upload, manifest PUT), so no
daemon, umoci or skopeo is needed; :func:`push_with_skopeo` is there for a second, independent
client when ``umoci`` and ``skopeo`` are installed.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moorage.core.retry import Backoff, retry
from moorage.storage.testing._process import (
    ComponentUnavailable,
    ServerProcess,
    find_binary,
    free_port,
    http_answers,
    wait_until,
)

__all__ = ["Layer", "Registry", "oci_registry", "push_with_skopeo"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

#: One image layer: path inside the image -> bytes (a file), ``None`` (a whiteout) or ``"/dir"``
#: style strings starting with ``->`` for symlinks (``"->target"``).
Layer = Mapping[str, "bytes | str | None"]


def _tar_layer(files: Layer) -> tuple[bytes, bytes]:
    """(gzip-compressed layer, uncompressed tar) for ``files``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs: set[str] = set()
        for path in sorted(files):
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tf.addfile(info)
            value = files[path]
            name = path.strip("/")
            if value is None:
                head, _, base = name.rpartition("/")
                info = tarfile.TarInfo(f"{head}/.wh.{base}" if head else f".wh.{base}")
                tf.addfile(info, io.BytesIO(b""))
            elif isinstance(value, str) and value.startswith("->"):
                info = tarfile.TarInfo(name)
                info.type = tarfile.SYMTYPE
                info.linkname = value[2:]
                tf.addfile(info)
            else:
                data = value.encode() if isinstance(value, str) else value
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(data))
    tar = raw.getvalue()
    return gzip.compress(tar, compresslevel=1, mtime=0), tar


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Registry:
    """A running registry at ``host`` (``127.0.0.1:<port>``); ``oci://{host}/<repo>:<tag>``."""

    host: str
    root: Path
    process: ServerProcess

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def ref(self, repository: str, tag: str = "latest") -> str:
        return f"oci://{self.host}/{repository}:{tag}"

    # -- raw API --------------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        url: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()

    def push_blob(self, repository: str, data: bytes) -> str:
        digest = _digest(data)
        base = f"{self.url}/v2/{repository}/blobs"
        _, headers, _ = self._call("POST", f"{base}/uploads/")
        location = headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        sep = "&" if "?" in location else "?"
        self._call(
            "PUT",
            f"{location}{sep}digest={digest}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return digest

    def push_manifest(self, repository: str, reference: str, manifest: dict[str, Any]) -> str:
        body = json.dumps(manifest, separators=(",", ":")).encode()
        self._call(
            "PUT",
            f"{self.url}/v2/{repository}/manifests/{reference}",
            data=body,
            headers={"Content-Type": manifest["mediaType"]},
        )
        return _digest(body)

    # -- images and artifacts -------------------------------------------------------------------
    def push_image(
        self,
        repository: str,
        tag: str,
        layers: list[Layer],
        *,
        docker: bool = False,
        index: bool = False,
    ) -> str:
        """Push an image whose layers hold ``files`` (e.g. ``{"models/model.bin": b"..."}``).

        ``docker=True`` uses Docker media types; ``index=True`` wraps the image in an index with
        a decoy ``linux/arm64`` entry first. Returns the digest of what the tag points at.
        """
        blobs: list[dict[str, Any]] = []
        diff_ids = []
        for files in layers:
            compressed, tar = _tar_layer(files)
            digest = self.push_blob(repository, compressed)
            blobs.append(
                {
                    "mediaType": DOCKER_LAYER if docker else OCI_LAYER_GZIP,
                    "digest": digest,
                    "size": len(compressed),
                }
            )
            diff_ids.append(_digest(tar))
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": ["sh"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }
        ).encode()
        config_digest = self.push_blob(repository, config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
            "config": {
                "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                "digest": config_digest,
                "size": len(config),
            },
            "layers": blobs,
        }
        if not index:
            return self.push_manifest(repository, tag, manifest)
        body = json.dumps(manifest, separators=(",", ":")).encode()
        digest = self.push_manifest(repository, _digest(body), manifest)
        decoy = dict(manifest, layers=[])
        decoy_body = json.dumps(decoy, separators=(",", ":")).encode()
        decoy_digest = self.push_manifest(repository, _digest(decoy_body), decoy)
        image_index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": manifest["mediaType"],
                    "digest": decoy_digest,
                    "size": len(decoy_body),
                    "platform": {"os": "linux", "architecture": "arm64"},
                },
                {
                    "mediaType": manifest["mediaType"],
                    "digest": digest,
                    "size": len(body),
                    "platform": {"os": "linux", "architecture": "amd64"},
                },
            ],
        }
        return self.push_manifest(repository, tag, image_index)

    def push_artifact(
        self,
        repository: str,
        tag: str,
        files: Mapping[str, bytes],
        *,
        artifact_type: str = "application/vnd.moorage.model.v1",
    ) -> str:
        """Push an OCI artifact: one layer per file, titled with its name (as ORAS does)."""
        empty = b"{}"
        config_digest = self.push_blob(repository, empty)
        layers = []
        for name, data in files.items():
            layers.append(
                {
                    "mediaType": "application/octet-stream",
                    "digest": self.push_blob(repository, data),
                    "size": len(data),
                    "annotations": {"org.opencontainers.image.title": name},
                }
            )
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": OCI_EMPTY, "digest": config_digest, "size": len(empty)},
            "layers": layers,
        }
        return self.push_manifest(repository, tag, manifest)

    def kill(self) -> None:
        self.process.kill()

    def restart(self) -> None:
        self.process.stop()
        self.process.start()
        wait_until(
            lambda: http_answers(self.url + "/v2/", statuses=(200,)),
            timeout=30,
            what="docker-registry",
        )


@contextlib.contextmanager
def oci_registry(root: Path | None = None) -> Iterator[Registry]:
    """Start ``docker-registry`` with its own config on a free loopback port."""
    binary = find_binary(
        "docker-registry", hint="apt-get install docker-registry (scripts/system-deps.sh)"
    )
    with contextlib.ExitStack() as stack:
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="registry-")))
        port = free_port()
        config = root / "config.yml"
        (root / "data").mkdir(parents=True, exist_ok=True)
        settings = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {
                "filesystem": {"rootdirectory": str(root / "data")},
                "delete": {"enabled": True},
            },
            "http": {"addr": f"127.0.0.1:{port}"},
        }
        config.write_text(json.dumps(settings))  # JSON is YAML
        process = ServerProcess([binary, "serve", str(config)], log=root / "registry.log").start()
        stack.callback(process.stop)
        registry = Registry(host=f"127.0.0.1:{port}", root=root, process=process)

        def ready() -> bool:
            if not process.alive():
                raise RuntimeError(f"docker-registry exited:\n{process.log_tail()}")
            return http_answers(registry.url + "/v2/", statuses=(200,))

        wait_until(ready, timeout=30, what="docker-registry")
        yield registry


def push_with_skopeo(registry: Registry, repository: str, tag: str, models: Path) -> None:
    """Build an image holding ``models`` as ``/models`` with umoci and push it with skopeo."""
    umoci = find_binary("umoci", hint="apt-get install umoci")
    skopeo = find_binary("skopeo", hint="apt-get install skopeo")
    with tempfile.TemporaryDirectory(prefix="umoci-") as tmp:
        layout = Path(tmp) / "layout"
        bundle = Path(tmp) / "bundle"

        def run(*argv: str) -> None:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            if result.returncode:
                raise ComponentUnavailable(f"{argv[0]} failed: {result.stderr.strip()[-500:]}")

        run(umoci, "init", "--layout", str(layout))
        run(umoci, "new", "--image", f"{layout}:{tag}")
        run(umoci, "unpack", "--rootless", "--image", f"{layout}:{tag}", str(bundle))
        target = bundle / "rootfs" / "models"
        target.mkdir(parents=True, exist_ok=True)
        for item in models.rglob("*"):
            dest = target / item.relative_to(models)
            if item.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(item.read_bytes())
        run(umoci, "repack", "--image", f"{layout}:{tag}", str(bundle))
        retry(
            lambda: run(
                skopeo,
                "copy",
                "--dest-tls-verify=false",
                f"oci:{layout}:{tag}",
                f"docker://{registry.host}/{repository}:{tag}",
            ),
            Backoff(attempts=3, initial=0.5, multiplier=1),
            retry_on=ComponentUnavailable,
        )
