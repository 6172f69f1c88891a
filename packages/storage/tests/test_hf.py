"""hf:// against the hub stand-in: public, private with token, revision, missing repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moorage.core.errors import InvalidStorageURI, StorageNotFound
from moorage.storage import download, read_manifest
from moorage.storage.testing import HubStandIn

pytestmark = pytest.mark.integration

WEIGHTS = os.urandom(2 * 1024 * 1024 + 7)


@pytest.fixture(scope="module")
def hub(hf_hub_server: HubStandIn) -> HubStandIn:
    hf_hub_server.reset_faults()
    hf_hub_server.add_repo(
        "acme/tiny", {"config.json": b'{"v": 1}', "weights/model.safetensors": WEIGHTS}
    )
    hf_hub_server.add_repo("acme/tiny", {"config.json": b'{"v": 2}'}, revision="v2")
    hf_hub_server.add_repo(
        "acme/secret", {"model.bin": b"private bytes"}, private=True, tokens=("hf_abcdef123",)
    )
    return hf_hub_server


def test_public_repo(hub: HubStandIn, tmp_path: Path) -> None:
    out = download("hf://acme/tiny", tmp_path / "m", env=hub.env())
    assert (out / "config.json").read_bytes() == b'{"v": 1}'
    assert (out / "weights" / "model.safetensors").read_bytes() == WEIGHTS
    manifest = read_manifest(out)
    assert manifest is not None and len(manifest["revision"]) == 40
    files = {f["path"]: f for f in manifest["files"]}
    assert "sha256" in files["weights/model.safetensors"]


def test_revision(hub: HubStandIn, tmp_path: Path) -> None:
    out = download("hf://acme/tiny:v2", tmp_path / "m", env=hub.env())
    assert (out / "config.json").read_bytes() == b'{"v": 2}'
    assert not (out / "weights").exists()


def test_private_repo_needs_token(hub: HubStandIn, tmp_path: Path) -> None:
    with pytest.raises(StorageNotFound, match="set HF_TOKEN"):
        download("hf://acme/secret", tmp_path / "a", env=hub.env())
    out = download("hf://acme/secret", tmp_path / "b", env=hub.env("hf_abcdef123"))
    assert (out / "model.bin").read_bytes() == b"private bytes"
    with pytest.raises(StorageNotFound) as info:
        download("hf://acme/secret", tmp_path / "c", env=hub.env("hf_wrongtoken999"))
    assert "hf_wrongtoken999" not in str(info.value)


def test_missing_repo_and_revision(hub: HubStandIn, tmp_path: Path) -> None:
    with pytest.raises(StorageNotFound, match="repository not found"):
        download("hf://acme/nope", tmp_path / "a", env=hub.env())
    with pytest.raises(StorageNotFound, match="revision 'nope' not found"):
        download("hf://acme/tiny:nope", tmp_path / "b", env=hub.env())


def test_bad_hf_uri(tmp_path: Path) -> None:
    with pytest.raises(InvalidStorageURI, match="exactly one '/'"):
        download("hf://just-a-name", tmp_path / "a")


def test_snapshot_download_agrees(hub: HubStandIn, tmp_path: Path) -> None:
    from huggingface_hub import snapshot_download

    ref = snapshot_download("acme/tiny", local_dir=tmp_path / "ref", endpoint=hub.endpoint)
    ours = download("hf://acme/tiny", tmp_path / "ours", env=hub.env())
    for name in ("config.json", "weights/model.safetensors"):
        assert (Path(ref) / name).read_bytes() == (ours / name).read_bytes()
