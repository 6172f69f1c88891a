"""download() on local sources: layout, manifest, no-op reruns, atomic commit, errors, CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from moorage.core.config.storage import StorageSettings
from moorage.core.errors import StorageError, StorageNotFound, UnsupportedScheme
from moorage.storage import MANIFEST_NAME, download, last_download_stats, read_manifest
from moorage.storage.__main__ import main
from moorage.storage._errors import translate
from moorage.storage._redact import redact_url, register_secret, scrub
from moorage.storage.providers import base


def model_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.joblib").write_bytes(b"m" * 10)
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "c.json").write_text("{}")
    return root


def listing(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


def test_local_dir_is_linked_with_manifest(tmp_path: Path) -> None:
    src = model_dir(tmp_path / "src")
    out = download(str(src), tmp_path / "dest")
    assert out == tmp_path / "dest"
    assert (out / "model.joblib").is_symlink()
    assert listing(out) == [MANIFEST_NAME, "model.joblib", "sub"]
    assert (out / "sub" / "c.json").read_text() == "{}"
    manifest = read_manifest(out)
    assert manifest is not None and manifest["source"] == str(src)
    assert {f["path"] for f in manifest["files"]} == {"model.joblib", "sub"}
    assert not list(tmp_path.glob(".dest.moorage-*")), "staging directory left behind"


def test_rerun_is_a_noop_and_force_refetches(tmp_path: Path) -> None:
    src = model_dir(tmp_path / "src")
    uri = f"file://{src}"
    download(uri, tmp_path / "dest")
    assert not last_download_stats().skipped
    download(uri, tmp_path / "dest")
    assert last_download_stats().skipped
    download(uri, tmp_path / "dest", force=True)
    assert not last_download_stats().skipped


def test_missing_file_invalidates_manifest(tmp_path: Path) -> None:
    src = model_dir(tmp_path / "src")
    download(str(src), tmp_path / "dest")
    (tmp_path / "dest" / "model.joblib").unlink()
    download(str(src), tmp_path / "dest")
    assert not last_download_stats().skipped
    assert (tmp_path / "dest" / "model.joblib").exists()


def test_single_local_archive_is_unpacked(tmp_path: Path) -> None:
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("weights.bin")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    out = download(str(archive), tmp_path / "dest")
    assert (out / "weights.bin").read_bytes() == b"abc"
    assert not (out / "weights.bin").is_symlink()


def test_existing_mount_point_dest_gets_files_directly(tmp_path: Path) -> None:
    dest = tmp_path / "mnt" / "models"
    dest.mkdir(parents=True)
    (dest / "stale.txt").write_text("old")
    src = model_dir(tmp_path / "src")
    download(str(src), dest)
    assert (dest / "model.joblib").exists() and (dest / MANIFEST_NAME).exists()
    assert (dest / "stale.txt").exists(), "KServe writes into an existing directory"


def test_pod_volume_stages_inside_the_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KServe's pod layout: ``/mnt`` belongs to root, ``/mnt/models`` is a volume that the
    initializer's non-root user may write (on another file system). Nothing may be created
    beside an existing destination: staging goes inside it, and is gone afterwards.
    (tests/ship/test_images.py runs the real image as user 1000 on this layout.)"""
    mnt = tmp_path / "mnt"
    dest = mnt / "models"
    dest.mkdir(parents=True)
    src = model_dir(tmp_path / "src")
    made: list[Path] = []
    real_mkdir = os.mkdir

    def recording_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        real_mkdir(path, *args, **kwargs)
        made.append(Path(path))  # what was created, not what existed already

    monkeypatch.setattr(os, "mkdir", recording_mkdir)
    download(str(src), dest)
    assert made and all(dest in p.parents for p in made), made
    assert sorted(p.name for p in mnt.iterdir()) == ["models"]
    assert listing(dest) == [MANIFEST_NAME, "model.joblib", "sub"]


def test_new_source_replaces_previous_download(tmp_path: Path) -> None:
    a = model_dir(tmp_path / "a")
    b = tmp_path / "b"
    b.mkdir()
    (b / "other.bin").write_bytes(b"o")
    dest = tmp_path / "dest"
    download(str(a), dest)
    download(str(b), dest)
    assert listing(dest) == [MANIFEST_NAME, "other.bin"]


def test_empty_source_dir(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageNotFound, match="No model found"):
        download(str(tmp_path / "empty"), tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_missing_pvc_path_has_kserve_message(tmp_path: Path) -> None:
    with pytest.raises(StorageNotFound, match="Cannot locate source uri /mnt/pvc/nope for PVC"):
        download("/mnt/pvc/nope", tmp_path / "dest")


def test_pvc_uri_with_claim_root(tmp_path: Path) -> None:
    model_dir(tmp_path / "claim" / "models" / "iris")
    settings = StorageSettings(pvc_claim_roots={"my-claim": str(tmp_path / "claim")})
    out = download("pvc://my-claim/models/iris", tmp_path / "dest", settings=settings)
    assert (out / "model.joblib").read_bytes() == b"m" * 10
    with pytest.raises(StorageNotFound, match="for PVC"):
        download("pvc://my-claim/missing", tmp_path / "d2", settings=settings)


def test_mounted_models_is_a_noop(tmp_path: Path) -> None:
    out = download("/mnt/models/by-agent", tmp_path / "dest")
    assert out.is_dir()


def test_unsupported_and_hdfs(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedScheme, match="Cannot recognize storage type"):
        download("ftp://host/model", tmp_path / "d")
    with pytest.raises(UnsupportedScheme, match="HDFS"):
        download("hdfs://namenode/models", tmp_path / "d")


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(name: str) -> None:
        raise ImportError(name)

    monkeypatch.setattr(base.importlib, "import_module", fail)
    with pytest.raises(StorageError, match=r"pip install 'moorage-storage\[s3\]'"):
        base.require("boto3", "s3")


def test_secrets_are_scrubbed() -> None:
    register_secret("sUp3rS3cr3t")
    text = scrub("failed https://h/x?X-Amz-Signature=abc with key sUp3rS3cr3t")
    assert "sUp3rS3cr3t" not in text and "abc" not in text
    assert redact_url("https://user:pw@h/p?sig=1") == "https://h/p?<redacted>"
    err = translate(RuntimeError("token sUp3rS3cr3t leaked"), "s3://b/k")
    assert "sUp3rS3cr3t" not in str(err) and "s3://b/k" in str(err)


def test_cli_usage_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "Usage: moorage-storage" in capsys.readouterr().err
    assert main(["--bogus", "a", "b"]) == 2
    assert main(["ftp://x/y", str(tmp_path / "d")]) == 1
    assert "Cannot recognize storage type" in capsys.readouterr().err
    src = model_dir(tmp_path / "src")
    assert main(["-q", str(src), str(tmp_path / "ok")]) == 0


def test_cli_names_a_bad_setting_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOORAGE_STORAGE_CONCURRENCY", "0")
    src = model_dir(tmp_path / "src")
    assert main(["-q", str(src), str(tmp_path / "dest")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "moorage-storage: error: environment variable MOORAGE_STORAGE_CONCURRENCY"
        " (concurrency): must be >= 1, got '0'\n"
    )
    assert not (tmp_path / "dest").exists()


def test_python_dash_m_entrypoint(tmp_path: Path) -> None:
    src = model_dir(tmp_path / "src")
    result = subprocess.run(
        [sys.executable, "-m", "moorage.storage", str(src), str(tmp_path / "dest")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Successfully copied" in result.stderr
    manifest = json.loads((tmp_path / "dest" / MANIFEST_NAME).read_text())
    assert manifest["version"] == 1


def test_dash_m_exit_status_and_flushed_output(tmp_path: Path) -> None:
    """The command leaves with os._exit: its status and everything it wrote still come out."""
    result = subprocess.run(
        [sys.executable, "-m", "moorage.storage", "ftp://x/y", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "moorage-storage: error:" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "moorage.storage", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: moorage-storage")
