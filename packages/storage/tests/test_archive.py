"""Safe extraction: good archives unpack, malicious ones are refused and leave nothing behind."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from moorage.core.errors import UnsafeArchive
from moorage.storage._archive import archive_kind, safe_extract

LIMITS = {"max_bytes": 10 * 1024 * 1024, "max_ratio": 100.0}


def make_tar(
    path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz"
) -> Path:
    with tarfile.open(path, mode) as tf:
        for member in members:
            if isinstance(member, tuple):
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(member)
    return path


def link(name: str, target: str, *, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("name", "kind"),
    [("m.tar", "tar"), ("m.tar.gz", "tar"), ("m.tgz", "tar"), ("m.zip", "zip"), ("m.bin", None)],
)
def test_archive_kind_follows_kserve(name: str, kind: str | None) -> None:
    assert archive_kind(name) == kind


def test_good_tar_extracts(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "m.tar.gz",
        [("model/w.bin", b"w" * 100), ("model/c.json", b"{}"), link("model/alias", "w.bin")],
    )
    out = tmp_path / "out"
    written = safe_extract(archive, out, **LIMITS)
    assert sorted(written) == ["model/alias", "model/c.json", "model/w.bin"]
    assert (out / "model/alias").read_bytes() == b"w" * 100


def test_good_zip_extracts(tmp_path: Path) -> None:
    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/b.txt", "hello")
        zf.writestr("c.bin", b"\0" * 10)
    out = tmp_path / "out"
    safe_extract(archive, out, **LIMITS)
    assert (out / "a/b.txt").read_text() == "hello"


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("../evil.txt", b"x")], "escapes"),
        ([("a/../../evil.txt", b"x")], "escapes"),
        ([("/etc/evil", b"x")], "absolute"),
        ([link("esc", "../../outside")], "escapes"),
        ([link("abs", "/etc/passwd")], "absolute"),
        ([link("hard", "/etc/passwd", hard=True)], "absolute"),
        ([link("hard", "missing.txt", hard=True)], "hard link"),
        ([link("s", "."), link("t", "s/..")], "escapes"),
        ([link("d", "."), link("d2", "d/d/d/.."), ("d2/x", b"1")], "escapes"),
        ([("dup", b"1"), ("dup", b"2")], "duplicate"),
    ],
)
def test_malicious_tar_refused(
    tmp_path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], message: str
) -> None:
    archive = make_tar(tmp_path / "bad.tar.gz", members)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeArchive, match=message):
        safe_extract(archive, out, **LIMITS)
    assert list(out.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_device_file_refused(tmp_path: Path) -> None:
    dev = tarfile.TarInfo("dev/null")
    dev.type = tarfile.CHRTYPE
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    for member in (dev, fifo):
        archive = make_tar(tmp_path / f"{member.name.replace('/', '_')}.tar", [member], "w")
        with pytest.raises(UnsafeArchive, match="device or FIFO"):
            safe_extract(archive, tmp_path / "out", **LIMITS)


def test_tar_bomb_refused(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "bomb.tar.gz", [("zeros.bin", b"\0" * (12 * 1024 * 1024))])
    assert archive.stat().st_size < 100_000
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchive, match="decompression bomb"):
        safe_extract(archive, out, **LIMITS)
    assert not (out / "zeros.bin").exists()


def test_ratio_limit(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "r.tar.gz", [("zeros.bin", b"\0" * (70 * 1024 * 1024))])
    with pytest.raises(UnsafeArchive, match="times"):
        safe_extract(archive, tmp_path / "out", max_bytes=1 << 30, max_ratio=50.0)


def test_zip_bomb_and_traversal_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\0" * (12 * 1024 * 1024))
    with pytest.raises(UnsafeArchive, match="decompression bomb"):
        safe_extract(bomb, tmp_path / "o1", **LIMITS)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../evil.txt", "x")
    with pytest.raises(UnsafeArchive, match="escapes"):
        safe_extract(evil, tmp_path / "o2", **LIMITS)
    absolute = tmp_path / "abs.zip"
    with zipfile.ZipFile(absolute, "w") as zf:
        zf.writestr("/tmp/evil.txt", "x")
    with pytest.raises(UnsafeArchive):
        safe_extract(absolute, tmp_path / "o3", **LIMITS)


def test_zip_symlink_escape_refused(tmp_path: Path) -> None:
    archive = tmp_path / "ln.zip"
    info = zipfile.ZipInfo("ln")
    info.external_attr = 0o120777 << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "../../etc")
    with pytest.raises(UnsafeArchive, match="escapes"):
        safe_extract(archive, tmp_path / "out", **LIMITS)


def test_corrupt_archive_message(tmp_path: Path) -> None:
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"\x1f\x8b" + os.urandom(100))
    with pytest.raises(UnsafeArchive, match="Failed to unpack archive file"):
        safe_extract(archive, tmp_path / "out", **LIMITS)
