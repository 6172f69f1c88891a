"""Atomic destinations: a staging directory on ``dest``'s file system, a manifest, the final move.

A download is assembled in a staging directory under an exclusive ``flock``, so two processes
downloading into the same place take turns. Once every file is verified, the staging directory
receives the manifest ``.moorage-download.json`` and its content becomes ``dest``:

* ``dest`` missing: staged beside it, in ``<parent>/.<dest-name>.moorage-<hash of the URI>``,
  then one ``rename``; ``dest`` appears complete or not at all.
* ``dest`` an existing directory (in a pod, ``/mnt/models`` is an emptyDir mounted on a
  root-owned ``/mnt`` that the initializer's user cannot write, on another file system):
  staged inside it, in ``<dest>/.moorage-staging-<hash>``, so every move is a rename on the same
  file system; entries are renamed into ``dest`` one by one and the manifest comes last, so a
  crash in that short window leaves no manifest and the next run redoes the move.

The manifest records the source URI (its query string redacted, plus a SHA-256 of the full URI),
revision/digest, and every file with its size and known hashes. A later call with the same
source finds it, checks the files are still there with those sizes, and returns at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moorage.storage._redact import redact_url

__all__ = ["MANIFEST_NAME", "Staging", "read_manifest", "uri_fingerprint"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".moorage-download.json"
#: Name prefix of a staging directory inside the destination.
STAGING_PREFIX = ".moorage-staging-"
MANIFEST_VERSION = 1


def uri_fingerprint(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()


def read_manifest(dest: Path) -> dict[str, Any] | None:
    """The manifest of a completed destination, or ``None``."""
    try:
        data = json.loads((dest / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def manifest_matches(dest: Path, uri: str) -> bool:
    """Whether ``dest`` holds a complete download of ``uri`` whose files are all present."""
    data = read_manifest(dest)
    if not data or data.get("source_sha256") != uri_fingerprint(uri):
        return False
    for entry in data.get("files", []):
        path = dest / entry["path"]
        try:
            st = path.stat()
        except OSError:
            return False
        if entry.get("symlink"):
            continue
        if st.st_size != entry.get("size"):
            return False
    return True


class Staging:
    """The staging directory of one (uri, dest) pair."""

    def __init__(self, uri: str, dest: Path) -> None:
        self.uri = uri
        self.dest = dest
        tag = uri_fingerprint(uri)[:16]
        #: Staged inside an existing destination directory (see the module docstring).
        self.inside = dest.is_dir() and not dest.is_symlink()
        if self.inside:
            self.path = dest / f"{STAGING_PREFIX}{tag}"
        else:
            self.path = dest.parent / f".{dest.name or 'models'}.moorage-{tag}"
        self._lock_fd = -1

    @contextlib.contextmanager
    def locked(self, *, timeout: float = 3600.0) -> Iterator[Staging]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.mkdir(exist_ok=True)
        fd = os.open(self.path, os.O_RDONLY)
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if not announced:
                    logger.info("%s: waiting for another download into %s", self.uri, self.dest)
                    announced = True
                if time.monotonic() > deadline:
                    os.close(fd)
                    message = f"waited {timeout:.0f}s for another download into {self.dest}"
                    raise TimeoutError(message) from None
                time.sleep(0.2)
        self._lock_fd = fd
        try:
            yield self
        finally:
            os.close(fd)
            self._lock_fd = -1

    def write_manifest(self, files: list[dict[str, Any]], **facts: Any) -> None:
        data = {
            "version": MANIFEST_VERSION,
            "source": redact_url(self.uri) if "://" in self.uri else self.uri,
            "source_sha256": uri_fingerprint(self.uri),
            **{k: v for k, v in facts.items() if v is not None},
            "completed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
        }
        tmp = self.path / (MANIFEST_NAME + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
        os.replace(tmp, self.path / MANIFEST_NAME)

    def commit(self) -> None:
        """Make the staging directory's content the destination (see the module docstring)."""
        dest = self.dest
        if not dest.exists() and not dest.is_symlink():
            os.rename(self.path, dest)
            return
        if dest.is_symlink() or not dest.is_dir():
            raise FileExistsError(f"destination {dest} exists and is not a directory")
        old = read_manifest(dest)
        if old is not None:
            self._remove_listed(dest, old)
        if not self.inside:
            with contextlib.suppress(OSError):
                if not any(dest.iterdir()):
                    dest.rmdir()
                    os.rename(self.path, dest)
                    return
        if any(p.name != MANIFEST_NAME and p != self.path for p in dest.iterdir()):
            logger.warning("%s: %s is not empty; same-named files are replaced", self.uri, dest)
        (dest / MANIFEST_NAME).unlink(missing_ok=True)
        for entry in sorted(self.path.iterdir(), key=lambda p: p.name == MANIFEST_NAME):
            target = dest / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
        self.path.rmdir()

    @staticmethod
    def _remove_listed(dest: Path, manifest: dict[str, Any]) -> None:
        """Remove what an earlier download put in ``dest`` (it is being replaced)."""
        (dest / MANIFEST_NAME).unlink(missing_ok=True)
        tops = {entry["path"].split("/", 1)[0] for entry in manifest.get("files", [])}
        for top in tops:
            path = dest / top
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
