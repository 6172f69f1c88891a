"""Where a model comes from and where it lands on this machine.

``storageUri`` forms, locally:

* a local directory (``/abs``, ``rel/dir``, ``file:///abs``) is served in place: nothing is
  copied, edits show up on the next start. Relative paths are resolved against the directory of
  the YAML file that holds the InferenceService;
* a local file is fetched into the cache like any remote source (the server reads a directory);
* ``s3://``, ``gs://``, ``https://``, Azure, ``hf://`` and ``oci://`` are fetched with
  :func:`moorage.storage.download` into ``<cache>/models/<sha256 of the URI, 16 hex>``; a second
  run finds the download complete and reuses it (``refresh=True`` fetches again);
* ``pvc://`` names a Kubernetes volume and cannot be reached from here.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from moorage.controller.local.errors import UnsupportedLocally
from moorage.core.storage_uri import PVCURI, LocalURI, parse_storage_uri

__all__ = ["FetchedModel", "cache_dir_for", "fetch_model", "resolve_local_uri"]


@dataclass(frozen=True)
class FetchedModel:
    """A model directory ready for ``--model_dir``."""

    uri: str
    path: Path
    in_place: bool
    reused: bool
    seconds: float


def cache_dir_for(cache_root: Path, uri: str) -> Path:
    """``<cache_root>/models/<16 hex of sha256(uri)>``: one directory per source URI."""
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return cache_root / "models" / digest


def resolve_local_uri(uri: str, *, base_dir: Path) -> str:
    """``uri`` with a relative local path made absolute against ``base_dir``; others unchanged."""
    parsed = parse_storage_uri(uri)
    if not isinstance(parsed, LocalURI):
        return uri
    path = Path(parsed.path).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return os.path.normpath(path)


def fetch_model(
    uri: str,
    *,
    base_dir: Path,
    cache_root: Path,
    refresh: bool = False,
    download: Callable[..., Path] | None = None,
) -> FetchedModel:
    """Make the model at ``uri`` available as a local directory (see the module docstring)."""
    started = time.monotonic()
    parsed = parse_storage_uri(uri)
    if isinstance(parsed, PVCURI):
        raise UnsupportedLocally(
            f"{uri} names a Kubernetes PersistentVolumeClaim, which moorage run cannot reach; "
            "copy the model to this machine and give its path as storageUri",
            uri=uri,
        )
    source = resolve_local_uri(uri, base_dir=base_dir)
    if isinstance(parsed, LocalURI):
        path = Path(source)
        if path.is_dir():
            return FetchedModel(uri, path, in_place=True, reused=True, seconds=0.0)
        if not path.exists():
            raise UnsupportedLocally(
                f"storageUri {uri}: no such file or directory: {path}"
                + (f" (relative paths are resolved against {base_dir})" if uri != source else ""),
                uri=uri,
            )
    if download is None:
        from moorage.storage import download as storage_download

        download = storage_download
    dest = cache_dir_for(cache_root, source)
    # A complete earlier download makes download() return at once; report it as reused.
    had_files = dest.is_dir() and any(dest.iterdir())
    result = Path(download(source, dest, force=refresh))
    return FetchedModel(
        uri,
        result,
        in_place=False,
        reused=had_files and not refresh,
        seconds=time.monotonic() - started,
    )
