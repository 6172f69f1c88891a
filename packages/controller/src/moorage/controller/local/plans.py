"""Remembered plans: the second ``moorage run`` of an unchanged YAML skips parsing it.

Parsing, defaulting and validating an InferenceService needs the resource models of moorage-core,
whose import is most of the controller's start-up time. A successful run therefore saves its
plan (the processes' command lines, the model directory) under
``<cache>/runs/<key>.json``; the next run with the same key replays it: ports are checked and the
model is fetched (a no-op when complete) as always, but nothing is parsed again.

The key is a SHA-256 over everything the plan depends on: the bytes and paths of the ``-f``
files, the flags that shape the plan (``--name``, ``--host``, ``--port``, ``--grpc-port``,
``--no-builtin-runtimes``), the Python interpreter, and a fingerprint (names, sizes, mtimes) of
the installed moorage-core and moorage-controller sources, so that editing a file or upgrading
moorage gives a new key. Plans with a transformer (whose private ports are picked per run), with
``--port 0`` or ``--refresh`` are never saved or replayed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moorage.controller.local.runner import Prepared

__all__ = ["load_plan", "plan_key", "save_plan"]

_FORMAT = 2


def _fingerprint(hasher: Any, package_dirs: Sequence[str]) -> None:
    for root in package_dirs:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith((".py", ".yaml", ".json")):
                    stat = os.stat(os.path.join(dirpath, name))
                    hasher.update(f"{dirpath}/{name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())


def _package_dirs() -> list[str]:
    import moorage.controller
    import moorage.core

    return [*moorage.core.__path__, *moorage.controller.__path__]


def plan_key(
    files: Sequence[str | os.PathLike[str]],
    *,
    flags: Sequence[str],
    python: str = sys.executable,
) -> str | None:
    """The cache key of a run, or None when a file cannot be read (then nothing is cached)."""
    hasher = hashlib.sha256(f"moorage-run-plan:{_FORMAT}\n{python}\n".encode())
    hasher.update(("\0".join(flags) + "\n").encode())
    for raw in files:
        path = Path(raw).resolve()
        try:
            data = path.read_bytes()
        except OSError:
            return None
        hasher.update(f"{path}:{len(data)}\n".encode())
        hasher.update(data)
    _fingerprint(hasher, _package_dirs())
    return hasher.hexdigest()


def _path(cache_root: Path, key: str) -> Path:
    return cache_root / "runs" / f"{key[:32]}.json"


def load_plan(cache_root: Path, key: str) -> Prepared | None:
    """The plan saved under ``key``, or None (missing, unreadable or of another format)."""
    try:
        data = json.loads(_path(cache_root, key).read_text())
        if data.get("format") != _FORMAT or data.get("key") != key:
            return None
        return Prepared.from_json(data["plan"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_plan(cache_root: Path, key: str, plan: Prepared) -> bool:
    """Remember ``plan`` under ``key`` (atomically); False when it is not the replayable kind."""
    if len(plan.specs) != 1:
        return False
    target = _path(cache_root, key)
    body = json.dumps({"format": _FORMAT, "key": key, "plan": plan.to_json()}, indent=1)
    with contextlib.suppress(OSError):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".plan-")
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.replace(tmp, target)
        return True
    return False
