"""gs:// against fake-gcs-server and Azure Blob URLs against Azurite."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from moorage.core.errors import StorageAuthError, StorageNotFound
from moorage.storage import download, read_manifest
from moorage.storage.testing import Azurite, FakeGCS

pytestmark = pytest.mark.integration


def test_gcs_prefix(fake_gcs_server: FakeGCS, tmp_path: Path) -> None:
    gcs = fake_gcs_server
    gcs.create_bucket("models")
    gcs.put("models", "iris/model.joblib", b"J" * 100)
    gcs.put("models", "iris/a/b.txt", b"B")
    out = download("gs://models/iris", tmp_path / "m", env=gcs.env())
    assert (out / "model.joblib").read_bytes() == b"J" * 100
    assert (out / "a" / "b.txt").read_bytes() == b"B"
    manifest = read_manifest(out)
    assert manifest is not None
    assert {f["path"]: f.get("md5") for f in manifest["files"]}["model.joblib"] == hashlib.md5(
        b"J" * 100
    ).hexdigest()
    with pytest.raises(StorageNotFound, match="No model found"):
        download("gs://models/absent", tmp_path / "x", env=gcs.env())


def test_azure_key_public_and_denied(azurite_server: Azurite, tmp_path: Path) -> None:
    az = azurite_server
    az.create_container("models")
    data = os.urandom(3 * 1024 * 1024)
    az.put("models", "iris/model.bin", data)
    az.put("models", "iris/sub/c.json", b"{}")
    env = {
        **az.env(),
        "MOORAGE_STORAGE_MULTIPART_THRESHOLD": str(1 << 20),
        "MOORAGE_STORAGE_PART_SIZE": str(1 << 20),
    }
    out = download(az.url("models", "iris"), tmp_path / "m", env=env)
    assert (out / "model.bin").read_bytes() == data
    assert (out / "sub" / "c.json").read_bytes() == b"{}"
    az.create_container("public", public=True)
    az.put("public", "m/x.bin", b"X")
    out = download(az.url("public", "m"), tmp_path / "p", env=az.env(key=False))
    assert (out / "x.bin").read_bytes() == b"X"
    with pytest.raises(StorageAuthError):
        download(az.url("models", "iris"), tmp_path / "d", env=az.env(key=False))
