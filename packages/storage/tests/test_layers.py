"""Image layer application: /models only, whiteouts, opaque dirs, link safety."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from moorage.core.errors import UnsafeArchive
from moorage.storage._layers import LayerApplier
from moorage.storage.testing._registry import _tar_layer


def write_layer(tmp_path: Path, name: str, files: dict[str, bytes | str | None]) -> Path:
    compressed, _ = _tar_layer(files)
    path = tmp_path / name
    path.write_bytes(compressed)
    return path


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_whiteouts_and_subtree(tmp_path: Path) -> None:
    root = tmp_path / "root"
    applier = LayerApplier(root, max_bytes=1 << 20)
    applier.apply(
        write_layer(
            tmp_path,
            "l1",
            {"etc/passwd": b"x", "models/a.bin": b"a", "models/d/x": b"x", "models/keep": b"k"},
        )
    )
    applier.apply(
        write_layer(
            tmp_path,
            "l2",
            {
                "models/a.bin": None,
                "models/d/.wh..wh..opq": b"",
                "models/d/y": b"y",
                "models/link": "->/models/keep",
            },
        )
    )
    applier.check_links()
    assert listing(root) == ["d", "d/y", "keep", "link"]
    assert (root / "link").read_bytes() == b"k"
    assert not (root / "link").readlink().is_absolute()


def test_root_whiteout_clears_models(tmp_path: Path) -> None:
    root = tmp_path / "root"
    applier = LayerApplier(root, max_bytes=1 << 20)
    applier.apply(write_layer(tmp_path, "l1", {"models/a": b"a"}))
    applier.apply(write_layer(tmp_path, "l2", {"models": None}))
    assert listing(root) == []


@pytest.mark.parametrize(
    "files",
    [
        {"models/evil": "->/etc/passwd"},
        {"models/evil": "->../../../etc"},
    ],
)
def test_escaping_links_refused(tmp_path: Path, files: dict[str, bytes | str | None]) -> None:
    applier = LayerApplier(tmp_path / "root", max_bytes=1 << 20)
    with pytest.raises(UnsafeArchive):
        applier.apply(write_layer(tmp_path, "l", files))


def test_layer_budget(tmp_path: Path) -> None:
    applier = LayerApplier(tmp_path / "root", max_bytes=1000)
    with pytest.raises(UnsafeArchive, match="limit"):
        applier.apply(write_layer(tmp_path, "l", {"models/big": b"\0" * 5000}))


def test_not_a_tar(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(gzip.compress(b"not a tar at all" * 10))
    with pytest.raises(UnsafeArchive):
        LayerApplier(tmp_path / "root", max_bytes=1 << 20).apply(blob)
