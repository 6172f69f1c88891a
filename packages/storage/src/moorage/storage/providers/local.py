"""Local paths and ``file://``: link the model into place, as KServe does.

Each entry of a source directory (or the single source file) becomes a symbolic link in the
destination, so nothing is copied. A source that is a single tar/zip archive is unpacked
(safely) instead. An empty source raises "Failed to fetch model. No model found in <path>.".
"""

from __future__ import annotations

import os
from pathlib import Path

from moorage.core.errors import StorageNotFound
from moorage.core.storage_uri import LocalURI
from moorage.storage._archive import archive_kind, safe_extract
from moorage.storage._context import Context
from moorage.storage._plan import Plan

__all__ = ["LocalProvider", "plan_local", "provider"]


def plan_local(source: Path, uri: str, *, missing_message: str | None = None) -> Plan:
    """A plan that links (or unpacks) ``source`` into the staging directory."""
    source = source.absolute()
    if not source.exists():
        raise StorageNotFound(missing_message or f"Local path {source} does not exist", uri=uri)
    if source.is_dir():
        entries = sorted(source.iterdir())
        if not entries:
            raise StorageNotFound(f"Failed to fetch model. No model found in {source}.", uri=uri)
    else:
        entries = [source]

    def finalize(staging: Path, ctx: Context) -> None:
        if len(entries) == 1 and entries[0].is_file() and archive_kind(entries[0].name):
            safe_extract(
                entries[0],
                staging,
                max_bytes=ctx.settings.max_archive_bytes,
                max_ratio=ctx.settings.max_archive_ratio,
            )
            return
        for entry in entries:
            link = staging / entry.name
            if not link.exists() and not link.is_symlink():
                os.symlink(entry, link)

    return Plan(files=[], finalize=finalize, extra={"local_path": str(source)})


class LocalProvider:
    name = "local"

    def plan(self, uri: LocalURI, ctx: Context, /) -> Plan:
        missing = None
        if uri.path.startswith("/mnt/pvc"):
            missing = f"Cannot locate source uri {uri.path} for PVC"
        return plan_local(Path(uri.path), ctx.uri, missing_message=missing)


provider = LocalProvider()
