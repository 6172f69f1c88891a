"""Applying container image layers to take one subtree (``/models``) out of an image.

Layers are tar streams (plain, gzip or zstd) applied in order, with the OCI whiteout rules: a
``.wh.<name>`` entry removes ``<name>`` from lower layers and ``.wh..wh..opq`` empties its
directory of lower-layer content; entries of the same layer are never hidden by its own
whiteouts. Only entries under ``<subtree>/`` are kept, re-rooted at the destination. The same
safety rules as archive extraction apply: no ``..``, no device files, no links that leave the
destination (absolute links into the subtree are rewritten relative), and a byte budget.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO, Any

from moorage.core.errors import UnsafeArchive
from moorage.storage.providers.base import require

__all__ = ["LayerApplier"]

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_CHUNK = 1024 * 1024


class LayerApplier:
    """Applies layers one after the other onto ``root``, keeping ``/<subtree>`` only."""

    def __init__(self, root: Path, *, subtree: str = "models", max_bytes: int) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.subtree = subtree.strip("/")
        self.max_bytes = max_bytes
        self.total = 0
        self.seen_subtree = False
        root.mkdir(parents=True, exist_ok=True)

    # -- opening --------------------------------------------------------------------------------
    def _open(self, blob: Path, media_type: str) -> tuple[tarfile.TarFile, list[Any]]:
        closers: list[Any] = []
        fh: IO[bytes] = open(blob, "rb")  # noqa: SIM115 - closed with the tar
        closers.append(fh)
        magic = fh.read(4)
        fh.seek(0)
        if media_type.endswith("+zstd") or magic == b"\x28\xb5\x2f\xfd":
            zstandard = require("zstandard", "oci")
            reader = zstandard.ZstdDecompressor().stream_reader(fh)
            closers.append(reader)
            return tarfile.open(fileobj=reader, mode="r|"), closers
        return tarfile.open(fileobj=fh, mode="r|*"), closers

    # -- mapping --------------------------------------------------------------------------------
    def _map(self, raw: str) -> str | None:
        """Path relative to ``root`` for a layer entry, ``""`` for the subtree itself, or None."""
        name = raw.replace("\\", "/")
        while name.startswith("./"):
            name = name[2:]
        name = name.lstrip("/")
        pure = PurePosixPath(name)
        if ".." in pure.parts:
            raise UnsafeArchive(f"image layer entry escapes its root: {raw!r}")
        parts = pure.parts
        if not parts or parts[0] != self.subtree:
            return None
        return "/".join(parts[1:])

    def _inside(self, path: str) -> bool:
        return path == self.real_root or path.startswith(self.real_root + os.sep)

    def _remove(self, path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()

    def _prepare(self, rel: str) -> Path:
        dest = self.root / rel
        parent = dest.parent
        if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
            self._remove(parent)
        parent.mkdir(parents=True, exist_ok=True)
        if not self._inside(os.path.realpath(parent)):
            raise UnsafeArchive(f"image layer entry would be written outside: {rel!r}")
        return dest

    # -- applying -------------------------------------------------------------------------------
    def apply(self, blob: Path, media_type: str = "") -> None:
        added: set[str] = set()
        closers: list[Any] = []
        try:
            tf, closers = self._open(blob, media_type)
            with tf:
                for member in tf:
                    self._member(tf, member, added)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise UnsafeArchive(
                f"image layer {blob.name} is not a valid tar stream: {exc}"
            ) from exc
        finally:
            for closer in reversed(closers):
                closer.close()

    def _member(self, tf: tarfile.TarFile, member: tarfile.TarInfo, added: set[str]) -> None:
        top = member.name.replace("\\", "/")
        while top.startswith("./"):
            top = top[2:]
        if top.strip("/") == _WHITEOUT + self.subtree:
            self._clear("", added)
            return
        rel = self._map(member.name)
        if rel is None:
            return
        self.seen_subtree = True
        name = PurePosixPath(rel).name if rel else ""
        if name == _OPAQUE:
            self._clear(str(PurePosixPath(rel).parent).lstrip("."), added)
            return
        if name.startswith(_WHITEOUT):
            target = str(PurePosixPath(rel).parent / name[len(_WHITEOUT) :]).lstrip("./")
            if target not in added:
                self._remove(self.root / target)
            return
        if rel == "":
            return
        if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
            raise UnsafeArchive(f"image layer has a device file under /{self.subtree}: {rel!r}")
        dest = self._prepare(rel)
        if member.isdir():
            if dest.exists() and not dest.is_dir():
                self._remove(dest)
            dest.mkdir(exist_ok=True)
            added.add(rel)
            return
        self._remove(dest)
        if member.issym():
            self._symlink(rel, dest, member.linkname)
        elif member.islnk():
            source_rel = self._map(member.linkname)
            if source_rel is None or not (self.root / source_rel).is_file():
                raise UnsafeArchive(f"image layer hard link {rel!r} -> {member.linkname!r}")
            os.link(self.root / source_rel, dest, follow_symlinks=False)
        elif member.isfile():
            source = tf.extractfile(member)
            if source is None:
                raise UnsafeArchive(f"image layer entry {rel!r} cannot be read")
            self._write(dest, source, member.mode)
        else:
            raise UnsafeArchive(f"image layer entry {rel!r} has an unsupported type")
        added.add(rel)

    def _clear(self, rel: str, added: set[str]) -> None:
        """Empty directory ``rel`` of everything not added by the current layer."""
        directory = self.root / rel if rel else self.root
        if not directory.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(directory, topdown=False):
            for name in filenames + dirnames:
                path = Path(dirpath) / name
                entry = path.relative_to(self.root).as_posix()
                if entry in added or any(a.startswith(entry + "/") for a in added):
                    continue
                self._remove(path)

    def _symlink(self, rel: str, dest: Path, link: str) -> None:
        if link.startswith("/"):
            inner = self._map(link)
            if inner is None:
                raise UnsafeArchive(
                    f"image layer symlink {rel!r} -> {link!r} points outside /{self.subtree}"
                )
            link = os.path.relpath(self.root / inner, dest.parent)
        resolved = os.path.realpath(os.path.join(dest.parent, link))
        if not self._inside(resolved):
            raise UnsafeArchive(f"image layer symlink {rel!r} -> {link!r} escapes /{self.subtree}")
        os.symlink(link, dest)

    def _write(self, dest: Path, source: IO[bytes], mode: int) -> None:
        with open(dest, "wb") as out:
            while True:
                chunk = source.read(_CHUNK)
                if not chunk:
                    break
                self.total += len(chunk)
                if self.total > self.max_bytes:
                    raise UnsafeArchive(
                        f"image /{self.subtree} expands past the limit of {self.max_bytes} bytes"
                    )
                out.write(chunk)
        os.chmod(dest, (mode & 0o755) | 0o600)

    def check_links(self) -> None:
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in filenames + dirnames:
                path = Path(dirpath) / name
                if path.is_symlink() and not self._inside(os.path.realpath(path)):
                    raise UnsafeArchive(f"image symlink {path.relative_to(self.root)} escapes")
