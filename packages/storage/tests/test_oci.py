"""oci:// against docker-registry: images with /models (OCI, Docker, index) and artifacts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moorage.core.errors import StorageNotFound
from moorage.storage import download, read_manifest
from moorage.storage.testing import Registry, push_with_skopeo

pytestmark = pytest.mark.integration


def listing(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.name[0] != ".")


def test_image_layers_and_whiteouts(oci_registry_server: Registry, tmp_path: Path) -> None:
    reg = oci_registry_server
    weights = os.urandom(300_000)
    digest = reg.push_image(
        "models/iris",
        "v1",
        [
            {"bin/sh": b"#!", "models/model.bin": weights, "models/old.txt": b"old"},
            {
                "models/old.txt": None,
                "models/sub/c.json": b"{}",
                "models/ln": "->/models/model.bin",
            },
        ],
        index=True,
    )
    out = download(reg.ref("models/iris", "v1"), tmp_path / "m")
    assert listing(out) == ["ln", "model.bin", "sub", "sub/c.json"]
    assert (out / "model.bin").read_bytes() == weights
    manifest = read_manifest(out)
    assert manifest is not None and manifest["kind"] == "image"
    pinned = download(f"oci://{reg.host}/models/iris@{digest}", tmp_path / "p")
    assert (pinned / "model.bin").read_bytes() == weights


def test_docker_media_types(oci_registry_server: Registry, tmp_path: Path) -> None:
    reg = oci_registry_server
    reg.push_image("models/docker", "1", [{"models/m.pt": b"pt"}], docker=True)
    out = download(reg.ref("models/docker", "1"), tmp_path / "m")
    assert (out / "m.pt").read_bytes() == b"pt"


def test_artifact(oci_registry_server: Registry, tmp_path: Path) -> None:
    reg = oci_registry_server
    reg.push_artifact("models/art", "1", {"model.joblib": b"J" * 50, "config.json": b"{}"})
    out = download(reg.ref("models/art", "1"), tmp_path / "m")
    assert listing(out) == ["config.json", "model.joblib"]
    manifest = read_manifest(out)
    assert manifest is not None and manifest["kind"] == "artifact"


def test_oras_artifact_with_directory(
    oci_registry_server: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    oras_client = pytest.importorskip("oras.client")
    (tmp_path / "model" / "sub").mkdir(parents=True)
    (tmp_path / "model" / "sub" / "w.bin").write_bytes(b"w" * 100)
    (tmp_path / "README.md").write_text("hi")
    monkeypatch.chdir(tmp_path)
    client = oras_client.OrasClient(hostname=oci_registry_server.host, insecure=True)
    client.push(
        target=f"{oci_registry_server.host}/models/oras:1",
        files=["README.md", "model"],
        disable_path_validation=True,
    )
    out = download(oci_registry_server.ref("models/oras", "1"), tmp_path / "m")
    assert listing(out) == ["README.md", "model", "model/sub", "model/sub/w.bin"]


def test_image_built_with_umoci_and_skopeo(oci_registry_server: Registry, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "1").mkdir(parents=True)
    (src / "1" / "model.onnx").write_bytes(b"onnx" * 10)
    try:
        push_with_skopeo(oci_registry_server, "models/skopeo", "v1", src)
    except Exception as exc:  # missing tools on this machine
        pytest.skip(f"umoci/skopeo unavailable: {exc}")
    out = download(oci_registry_server.ref("models/skopeo", "v1"), tmp_path / "m")
    assert (out / "1" / "model.onnx").read_bytes() == b"onnx" * 10


def test_missing_and_empty(oci_registry_server: Registry, tmp_path: Path) -> None:
    reg = oci_registry_server
    with pytest.raises(StorageNotFound, match="not found"):
        download(reg.ref("models/none", "x"), tmp_path / "a")
    reg.push_image("models/nomodels", "1", [{"etc/hostname": b"h"}])
    with pytest.raises(StorageNotFound, match="no /models"):
        download(reg.ref("models/nomodels", "1"), tmp_path / "b")
    assert not (tmp_path / "b").exists()
