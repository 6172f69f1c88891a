"""Safe extraction of tar (plain, gzip, bzip2, xz) and zip archives.

Refused, with :class:`~moorage.core.errors.UnsafeArchive`: absolute member names and names with
``..``; symbolic links that point outside the destination (checked against the real file
system, and once more over the finished tree, so chains of links cannot escape); hard links to
anything but an earlier regular member; device files and FIFOs; duplicate names; and archives
whose members add up to more than ``max_bytes`` or expand more than ``max_ratio`` times (past
a small floor), the usual shape of a decompression bomb. Bytes written are counted while
copying, so a lying header cannot push past the limit either. On refusal nothing extracted is
left behind.

Which files are archives follows KServe: ``mimetypes.guess_type`` says ``application/x-tar``
(``.tar``, ``.tar.gz``, ``.tgz``, ...) or ``application/zip``.
"""

from __future__ import annotations

import mimetypes
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

from moorage.core.errors import UnsafeArchive

__all__ = ["archive_kind", "safe_extract"]

_COPY_CHUNK = 1024 * 1024
_RATIO_FLOOR = 64 * 1024 * 1024


def archive_kind(name: str) -> str | None:
    """``"tar"`` or ``"zip"`` when KServe would unpack a file of that name, else ``None``."""
    kind, _ = mimetypes.guess_type(name)
    if kind == "application/x-tar":
        return "tar"
    if kind == "application/zip":
        return "zip"
    return None


def safe_extract(
    archive: Path, target: Path, *, max_bytes: int, max_ratio: float, kind: str | None = None
) -> list[str]:
    """Extract ``archive`` into ``target``; returns the member paths written.

    Raises :class:`UnsafeArchive` on anything unsafe, leaving ``target`` as it was.
    """
    kind = kind or archive_kind(archive.name) or _sniff(archive)
    target.mkdir(parents=True, exist_ok=True)
    extractor = _Extractor(archive, target, max_bytes=max_bytes, max_ratio=max_ratio)
    before = set(os.listdir(target))
    try:
        if kind == "zip":
            extractor.zip()
        elif kind == "tar":
            extractor.tar()
        else:
            raise UnsafeArchive(f"{archive.name} is not a tar or zip archive")
        extractor.check_links()
    except UnsafeArchive:
        _remove_new(target, before)
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        _remove_new(target, before)
        raise UnsafeArchive(
            f"Failed to unpack archive file. The file format is not valid. ({archive.name}: {exc})"
        ) from exc
    return extractor.written


def _sniff(archive: Path) -> str | None:
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    return None


def _remove_new(target: Path, before: set[str]) -> None:
    for name in set(os.listdir(target)) - before:
        path = target / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class _Extractor:
    def __init__(self, archive: Path, target: Path, *, max_bytes: int, max_ratio: float) -> None:
        self.archive = archive
        self.target = target
        self.root = os.path.realpath(target)
        self.max_bytes = max_bytes
        self.max_ratio = max_ratio
        self.compressed = max(archive.stat().st_size, 1)
        self.total = 0
        self.written: list[str] = []
        self.names: set[str] = set()
        self.regular: set[str] = set()
        self.links: list[Path] = []

    # -- checks ---------------------------------------------------------------------------------
    def _name(self, raw: str) -> str:
        name = raw.replace("\\", "/")
        pure = PurePosixPath(name)
        if name.startswith("/") or pure.is_absolute() or (len(name) > 1 and name[1] == ":"):
            raise UnsafeArchive(f"archive member has an absolute path: {raw!r}")
        if ".." in pure.parts:
            raise UnsafeArchive(f"archive member escapes the destination: {raw!r}")
        clean = str(pure)
        if clean in ("", "."):
            return ""
        return clean

    def _inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + os.sep)

    def _budget(self, size: int) -> None:
        self.total += size
        if self.total > self.max_bytes:
            raise UnsafeArchive(
                f"archive expands past the limit of {self.max_bytes} bytes "
                f"(possible decompression bomb)"
            )
        if self.total > _RATIO_FLOOR and self.total / self.compressed > self.max_ratio:
            raise UnsafeArchive(
                f"archive expands more than {self.max_ratio:g} times (possible decompression bomb)"
            )

    def _parent_ok(self, dest: Path) -> None:
        real = os.path.realpath(dest.parent)
        if not self._inside(real):
            raise UnsafeArchive(f"archive member would be written outside the destination: {dest}")

    def _claim(self, name: str) -> None:
        if name in self.names:
            raise UnsafeArchive(f"archive has a duplicate member: {name!r}")
        self.names.add(name)

    # -- writers --------------------------------------------------------------------------------
    def _write(self, name: str, source: IO[bytes], mode: int) -> None:
        dest = self.target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._parent_ok(dest)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(dest, flags, 0o600)
        try:
            while True:
                chunk = source.read(_COPY_CHUNK)
                if not chunk:
                    break
                self._budget(len(chunk))
                os.write(fd, chunk)
        finally:
            os.close(fd)
        os.chmod(dest, (mode & 0o755) | 0o600 if mode else 0o644)
        self.regular.add(name)
        self.written.append(name)

    def _symlink(self, name: str, link: str) -> None:
        if not link or link.startswith("/") or PurePosixPath(link).is_absolute():
            raise UnsafeArchive(f"archive symlink {name!r} points to an absolute path {link!r}")
        dest = self.target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._parent_ok(dest)
        resolved = os.path.realpath(os.path.join(os.path.dirname(str(dest)), link))
        if not self._inside(resolved):
            raise UnsafeArchive(f"archive symlink {name!r} -> {link!r} escapes the destination")
        os.symlink(link, dest)
        self.links.append(dest)
        self.written.append(name)

    def _hardlink(self, name: str, link: str) -> None:
        target_name = self._name(link)
        if target_name not in self.regular:
            raise UnsafeArchive(
                f"archive hard link {name!r} -> {link!r} does not point to an earlier file"
            )
        dest = self.target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._parent_ok(dest)
        os.link(self.target / target_name, dest, follow_symlinks=False)
        self.written.append(name)

    def _mkdir(self, name: str) -> None:
        dest = self.target / name
        dest.mkdir(parents=True, exist_ok=True)
        if not self._inside(os.path.realpath(dest)):
            raise UnsafeArchive(f"archive directory {name!r} escapes the destination")

    def check_links(self) -> None:
        """Every symlink, as finally resolved, stays inside (chains cannot escape)."""
        for link in self.links:
            if not self._inside(os.path.realpath(link)):
                raise UnsafeArchive(
                    f"archive symlink {link.relative_to(self.target)} escapes the destination"
                )

    # -- formats --------------------------------------------------------------------------------
    def tar(self) -> None:
        with tarfile.open(self.archive, mode="r:*") as tf:
            for member in tf:
                name = self._name(member.name)
                if not name:
                    continue
                if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
                    raise UnsafeArchive(f"archive member {member.name!r} is a device or FIFO")
                if member.isdir():
                    self._mkdir(name)
                    continue
                self._claim(name)
                if member.issym():
                    self._symlink(name, member.linkname)
                elif member.islnk():
                    self._hardlink(name, member.linkname)
                elif member.isfile():
                    if member.size > self.max_bytes:
                        self._budget(member.size)
                    source = tf.extractfile(member)
                    if source is None:
                        raise UnsafeArchive(f"archive member {member.name!r} cannot be read")
                    with source:
                        self._write(name, source, member.mode)
                else:
                    raise UnsafeArchive(f"archive member {member.name!r} has an unsupported type")

    def zip(self) -> None:
        with zipfile.ZipFile(self.archive) as zf:
            declared = sum(info.file_size for info in zf.infolist())
            if declared > self.max_bytes:
                raise UnsafeArchive(
                    f"archive expands past the limit of {self.max_bytes} bytes "
                    f"(possible decompression bomb)"
                )
            if declared > _RATIO_FLOOR and declared / self.compressed > self.max_ratio:
                raise UnsafeArchive(
                    f"archive expands more than {self.max_ratio:g} times "
                    f"(possible decompression bomb)"
                )
            for info in zf.infolist():
                name = self._name(info.filename)
                if not name:
                    continue
                mode = info.external_attr >> 16
                if info.is_dir():
                    self._mkdir(name)
                    continue
                self._claim(name)
                if stat.S_ISLNK(mode):
                    if info.file_size > 4096:
                        raise UnsafeArchive(f"archive symlink {info.filename!r} is malformed")
                    self._symlink(name, zf.read(info).decode("utf-8", "replace"))
                elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                    raise UnsafeArchive(f"archive member {info.filename!r} is a device or FIFO")
                else:
                    with zf.open(info) as source:
                        self._write(name, source, stat.S_IMODE(mode))
