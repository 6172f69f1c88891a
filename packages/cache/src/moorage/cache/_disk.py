"""The node's model root on disk: where each model lives, what it holds, whether it is intact.

Models live in ``<root>/models/<model name>`` (KServe's layout: a predictor mounts the node
group's volume with ``subPath: models/<cache>``). A download is staged by :mod:`moorage.storage`
beside it in ``<root>/models/.<model name>.moorage-<hash>`` and becomes the model directory in one
rename, with the manifest ``.moorage-download.json`` listing every file, its size and the hashes
its source published. A model directory is *verified* when that manifest is for the expected URI
and every file is present with its size (``deep``: and its SHA-256, MD5 or CRC32, whichever
the download checked).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import zlib
from pathlib import Path

from moorage.cache._names import MODELS_DIR
from moorage.storage import read_manifest

__all__ = [
    "manifest_total",
    "model_bytes",
    "model_dir",
    "present",
    "remove",
    "staging_dirs",
    "usage",
    "verify",
]

_CHUNK = 4 * 1024 * 1024


def model_dir(root: Path, name: str) -> Path:
    return root / MODELS_DIR / name


def staging_dirs(root: Path, name: str) -> list[Path]:
    """Staging directories of downloads into ``name`` (complete or interrupted)."""
    base = root / MODELS_DIR
    try:
        return sorted(p for p in base.iterdir() if p.name.startswith(f".{name}.moorage-"))
    except OSError:
        return []


def present(root: Path) -> set[str]:
    """Names that have a model directory or a staging directory under ``root``."""
    base = root / MODELS_DIR
    names: set[str] = set()
    try:
        entries = list(base.iterdir())
    except OSError:
        return names
    for entry in entries:
        if entry.name.startswith("."):
            if ".moorage-" in entry.name:
                names.add(entry.name[1:].split(".moorage-", 1)[0])
        elif entry.is_dir():
            names.add(entry.name)
    return names


def remove(root: Path, name: str) -> None:
    """Remove a model and its staging directories."""
    for path in [model_dir(root, name), *staging_dirs(root, name)]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def usage(path: Path) -> int:
    """Bytes the files under ``path`` take on disk (allocated blocks, so a preallocated sparse
    part counts what was written; 0 when missing)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            blocks = getattr(st, "st_blocks", None)
            total += blocks * 512 if blocks is not None else st.st_size
    return total


def model_bytes(root: Path, name: str) -> int:
    """What a model takes on disk, staging included."""
    return sum(usage(p) for p in [model_dir(root, name), *staging_dirs(root, name)])


def verify(path: Path, uri: str, *, deep: bool) -> str | None:
    """``None`` when ``path`` holds a complete, intact download of ``uri``; else what is wrong."""
    manifest = read_manifest(path)
    if manifest is None:
        return "no download manifest" if path.exists() else "missing"
    if manifest.get("source_sha256") != hashlib.sha256(uri.encode()).hexdigest():
        return f"holds another source ({manifest.get('source')})"
    for entry in manifest.get("files", []):
        file = path / entry["path"]
        try:
            st = file.stat()
        except OSError:
            return f"{entry['path']} is missing"
        if entry.get("symlink"):
            continue
        if st.st_size != entry.get("size"):
            return f"{entry['path']} is {st.st_size} bytes, expected {entry.get('size')}"
        if deep and (entry.get("sha256") or entry.get("md5") or entry.get("crc32")):
            problem = _check_hash(file, entry)
            if problem:
                return f"{entry['path']} {problem}"
    return None


def _check_hash(file: Path, entry: dict[str, object]) -> str | None:
    """The first of SHA-256, MD5 and CRC32 (S3's base64 form) the entry records, checked."""
    sha = hashlib.sha256() if entry.get("sha256") else None
    md5 = hashlib.md5(usedforsecurity=False) if entry.get("md5") and sha is None else None
    crc: int | None = 0 if entry.get("crc32") and sha is None and md5 is None else None
    with file.open("rb") as f:
        while chunk := f.read(_CHUNK):
            if sha is not None:
                sha.update(chunk)
            if md5 is not None:
                md5.update(chunk)
            if crc is not None:
                crc = zlib.crc32(chunk, crc)
    if sha is not None and sha.hexdigest() != entry["sha256"]:
        return "does not match its SHA-256"
    if md5 is not None and md5.hexdigest() != entry["md5"]:
        return "does not match its MD5"
    if crc is not None and base64.b64encode(crc.to_bytes(4, "big")).decode() != entry["crc32"]:
        return "does not match its CRC32"
    return None


def manifest_total(path: Path) -> int:
    """Total bytes a complete model's manifest lists."""
    manifest = read_manifest(path) or {}
    return sum(int(e.get("size") or 0) for e in manifest.get("files", []))
