"""The agent's pure decisions and its disk checks (no API server, no network)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from moorage.cache import _disk
from moorage.cache.nodeplan import ModelRecord, decide, space_problem, status_patch

URI = "s3://b/m"


def _decide(listed, records=None, running=(), on_disk=(), now=100.0):  # type: ignore[no-untyped-def]
    return decide(listed, records or {}, set(running), set(on_disk), now=now,
                  retry_failed_after=60.0)  # fmt: skip


def test_new_models_start_and_unlisted_ones_go() -> None:
    actions = _decide({"a": URI}, {"b": ModelRecord("b", URI)}, running={"b"}, on_disk={"b", "c"})
    assert actions.start == ["a"]
    assert actions.stop == ["b"]
    assert actions.remove == ["b", "c"]


def test_running_and_done_models_are_left_alone() -> None:
    done = ModelRecord("d", URI, state="ModelDownloaded")
    actions = _decide({"a": URI, "d": URI}, {"a": ModelRecord("a", URI), "d": done},
                      running={"a"}, on_disk={"a", "d"})  # fmt: skip
    assert (actions.start, actions.stop, actions.remove) == ([], [], [])


def test_changed_uri_restarts_from_scratch() -> None:
    old = ModelRecord("a", "s3://b/old", state="ModelDownloaded")
    actions = _decide({"a": URI}, {"a": old}, on_disk={"a"})
    assert (actions.start, actions.remove) == (["a"], ["a"])


def test_failed_models_wait_before_another_try() -> None:
    failed = ModelRecord("a", URI, state="ModelDownloadError", failed_at=90.0)
    assert _decide({"a": URI}, {"a": failed}).start == []
    assert _decide({"a": URI}, {"a": failed}, now=151.0).start == ["a"]


def test_space_problems_name_the_figures() -> None:
    assert space_problem(need=1 << 20, limit=4 << 20, used_by_others=2 << 20) is None
    msg = space_problem(need=3 << 20, limit=4 << 20, used_by_others=2 << 20)
    assert msg == (
        "the model needs 3.0 MiB but the node group's storageLimit is 4.0 MiB and other "
        "models use 2.0 MiB"
    )
    assert "1.0 MiB free" in str(space_problem(need=2 << 20, limit=None, used_by_others=0,
                                               free=1 << 20))  # fmt: skip
    assert space_problem(need=5, limit=None, used_by_others=10**12) is None


def test_status_patch_writes_changes_and_deletes_unlisted() -> None:
    a = ModelRecord("a", URI, state="ModelDownloading", done=5, total=10)
    first = status_patch({"a": a}, {})
    assert first == {"status": {"modelStatus": {"a": "ModelDownloading"},
                                "modelDetails": {"a": a.details()}}}  # fmt: skip
    written = {"a": {"state": a.state, "details": a.details()}}
    assert status_patch({"a": a}, written) is None
    a.done = 7
    assert status_patch({"a": a}, written) == {"status": {"modelDetails": {"a": a.details()}}}
    assert status_patch({}, written) == {"status": {"modelStatus": {"a": None},
                                                    "modelDetails": {"a": None}}}  # fmt: skip


def _model(root: Path, name: str, uri: str, files: dict[str, bytes]) -> Path:
    path = _disk.model_dir(root, name)
    path.mkdir(parents=True)
    entries = []
    for rel, data in files.items():
        (path / rel).write_bytes(data)
        entries.append({"path": rel, "size": len(data), "md5": hashlib.md5(data).hexdigest()})
    manifest = {"source_sha256": hashlib.sha256(uri.encode()).hexdigest(), "source": uri,
                "files": entries}  # fmt: skip
    (path / ".moorage-download.json").write_text(json.dumps(manifest))
    return path


def test_verify_checks_a_crc32_the_download_recorded(tmp_path: Path) -> None:
    import base64
    import zlib

    path = _model(tmp_path, "m", URI, {"w.bin": b"x" * 100})
    manifest = json.loads((path / ".moorage-download.json").read_text())
    crc = base64.b64encode(zlib.crc32(b"x" * 100).to_bytes(4, "big")).decode()
    manifest["files"] = [{"path": "w.bin", "size": 100, "crc32": crc}]  # as an S3 download
    (path / ".moorage-download.json").write_text(json.dumps(manifest))
    assert _disk.verify(path, URI, deep=True) is None
    (path / "w.bin").write_bytes(b"y" * 100)
    assert _disk.verify(path, URI, deep=True) == "w.bin does not match its CRC32"


def test_verify_checks_source_sizes_and_hashes(tmp_path: Path) -> None:
    path = _model(tmp_path, "m", URI, {"w.bin": b"x" * 100})
    assert _disk.verify(path, URI, deep=True) is None
    assert "another source" in str(_disk.verify(path, "s3://b/other", deep=False))
    (path / "w.bin").write_bytes(b"y" * 100)
    assert _disk.verify(path, URI, deep=False) is None  # same size: only a hash sees it
    assert _disk.verify(path, URI, deep=True) == "w.bin does not match its MD5"
    (path / "w.bin").write_bytes(b"y")
    assert _disk.verify(path, URI, deep=False) == "w.bin is 1 bytes, expected 100"
    (path / "w.bin").unlink()
    assert _disk.verify(path, URI, deep=False) == "w.bin is missing"
    assert _disk.verify(tmp_path / "nothing", URI, deep=False) == "missing"


def test_present_and_remove_include_staging(tmp_path: Path) -> None:
    _model(tmp_path, "m", URI, {"w.bin": b"x"})
    staging = tmp_path / "models" / ".n.moorage-0123456789abcdef"
    staging.mkdir()
    (staging / "part").write_bytes(b"z" * 4096)
    assert _disk.present(tmp_path) == {"m", "n"}
    assert _disk.model_bytes(tmp_path, "n") >= 4096
    _disk.remove(tmp_path, "n")
    _disk.remove(tmp_path, "m")
    assert _disk.present(tmp_path) == set()
