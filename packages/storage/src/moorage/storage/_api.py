"""``download(uri, dest)``: the one entry point of the library and the initializer."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from moorage.core.config.storage import StorageSettings
from moorage.core.errors import StorageError
from moorage.core.storage_uri import LocalURI, StorageURI, parse_storage_uri
from moorage.storage._atomic import MANIFEST_NAME, Staging, manifest_matches
from moorage.storage._context import Context
from moorage.storage._errors import error_boundary
from moorage.storage._progress import Progress
from moorage.storage._transfer import PARTIAL_DIR, FileRecord, Transfer
from moorage.storage.providers.base import get_provider

__all__ = ["DownloadStats", "adownload", "download", "last_download_stats"]

logger = logging.getLogger("moorage.storage")

_MOUNTED_MODELS = "/mnt/models"


class DownloadStats:
    """What the last :func:`download` in this thread did (for tests and benchmarks)."""

    fetched_bytes: int = 0
    skipped: bool = False
    seconds: float = 0.0


_last: list[DownloadStats] = [DownloadStats()]


def download(
    uri: str,
    dest: str | os.PathLike[str],
    /,
    *,
    settings: StorageSettings | None = None,
    env: Mapping[str, str] | None = None,
    force: bool = False,
    progress: Literal["auto", "bar", "log", "off"] | None = None,
) -> Path:
    """Fetch the model at ``uri`` into the directory ``dest`` and return ``dest`` as a Path.

    Files land directly in ``dest`` (KServe's layout) together with the manifest
    ``.moorage-download.json``. The call is atomic (``dest`` is complete and verified or
    untouched), resumable (an interrupted call's progress is reused by the next one) and
    idempotent (when ``dest`` already holds this ``uri`` it returns at once; ``force=True``
    fetches again).

    ``settings`` defaults to :class:`~moorage.core.config.storage.StorageSettings` read from
    ``env`` (or the process environment): credentials and endpoints use KServe's variable
    names. Errors are :mod:`moorage.core.errors` types (``InvalidStorageURI``,
    ``UnsupportedScheme``, ``StorageNotFound``, ``StorageAuthError``, ``IntegrityError``,
    ``UnsafeArchive``, ``StorageError``) whose messages name the URI and never a credential.
    """
    started = time.monotonic()
    if settings is None:
        settings = StorageSettings.from_environ(env) if env is not None else StorageSettings()
    dest_path = Path(os.fspath(dest)).absolute()
    stats = DownloadStats()
    _last[0] = stats
    with error_boundary(uri):
        parsed = parse_storage_uri(uri, azure_blob_hosts=settings.azure_blob_hosts)
        if _is_mounted_models(parsed):
            logger.info("%s: models are mounted by the agent; nothing to do", uri)
            dest_path.mkdir(parents=True, exist_ok=True)
            stats.skipped = True
            return dest_path
        if not force and manifest_matches(dest_path, uri):
            logger.info("%s: already present in %s", uri, dest_path)
            stats.skipped = True
            return dest_path
        provider = get_provider(parsed)
        staging = Staging(uri, dest_path)
        ctx = Context(settings=settings, uri=uri)
        try:
            with staging.locked():
                if not force and manifest_matches(dest_path, uri):
                    stats.skipped = True
                    staging.discard()
                    return dest_path
                _run(parsed, provider, ctx, staging, settings, progress, stats)
        finally:
            ctx.close()
    stats.seconds = time.monotonic() - started
    logger.info("Successfully copied %s to %s", uri, dest_path)
    logger.info("Model downloaded in %.3f seconds.", stats.seconds)
    return dest_path


async def adownload(uri: str, dest: str | os.PathLike[str], /, **kwargs: Any) -> Path:
    """:func:`download` for async callers: runs it in a worker thread (same arguments)."""
    import asyncio  # here: the storage initializer never needs it (~20 ms of its start-up)

    return await asyncio.to_thread(download, uri, dest, **kwargs)


def last_download_stats() -> DownloadStats:
    """Statistics of the most recent :func:`download` in this process."""
    return _last[0]


def _is_mounted_models(parsed: StorageURI) -> bool:
    return (
        isinstance(parsed, LocalURI)
        and parsed.path.startswith(_MOUNTED_MODELS)
        and not os.path.exists(parsed.path)
    )


def _run(
    parsed: StorageURI,
    provider: Any,
    ctx: Context,
    staging: Staging,
    settings: StorageSettings,
    progress_mode: Literal["auto", "bar", "log", "off"] | None,
    stats: DownloadStats,
) -> None:
    plan = provider.plan(parsed, ctx)
    progress = Progress(
        ctx.uri, mode=progress_mode or settings.progress, interval=settings.progress_interval_s
    )
    with progress:
        transfer = Transfer(ctx, staging.path, progress)
        records = transfer.run(plan.files)
        stats.fetched_bytes = transfer.fetched_bytes
    known: dict[str, FileRecord] = {r.path: r for r in records}
    if plan.unpack_single_archive and len(records) == 1:
        # here: tarfile, zipfile and mimetypes are loaded only for a single-file model
        from moorage.storage._archive import archive_kind, safe_extract

        only = records[0]
        kind = archive_kind(only.path)
        if kind is not None:
            archive = staging.path / only.path
            logger.info("%s: unpacking %s", ctx.uri, only.path)
            safe_extract(
                archive,
                archive.parent,
                max_bytes=settings.max_archive_bytes,
                max_ratio=settings.max_archive_ratio,
                kind=kind,
            )
            archive.unlink()
            known = {}
    if plan.finalize is not None:
        plan.finalize(staging.path, ctx)
    _cleanup_partial(staging.path)
    files = _inventory(staging.path, known)
    if not files:
        raise StorageError(f"Failed to fetch model. No model found in {ctx.uri}.", uri=ctx.uri)
    staging.write_manifest(files, revision=plan.revision, digest=plan.digest, **(plan.extra or {}))
    staging.commit()


def _cleanup_partial(root: Path) -> None:
    shutil.rmtree(root / PARTIAL_DIR, ignore_errors=True)


def _inventory(root: Path, known: dict[str, FileRecord]) -> list[dict[str, Any]]:
    """Every file under ``root`` (symlinks not followed) with size and known hashes."""
    files: list[dict[str, Any]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        names = sorted(filenames)
        names += [d for d in dirnames if (base / d).is_symlink()]
        for name in names:
            path = base / name
            rel = path.relative_to(root).as_posix()
            if rel == MANIFEST_NAME:
                continue
            if path.is_symlink():
                entry: dict[str, Any] = {"path": rel, "symlink": os.readlink(path)}
                try:
                    entry["size"] = path.stat().st_size
                except OSError:
                    entry["size"] = 0
                files.append(entry)
                continue
            record = known.get(rel)
            if record is not None:
                files.append(record.to_json())
            else:
                files.append({"path": rel, "size": path.stat().st_size})
    return files
