"""What a provider hands the transfer engine: files to fetch, where from, what to expect.

A provider turns a parsed URI into a :class:`Plan`: a list of :class:`RemoteFile` (a relative
destination path, a size, the hashes the source declares, and a :class:`ByteSource` that can
deliver byte ranges), plus what to record about the source (revision, digest) and an optional
``finalize`` step that runs in the staging directory after every file is verified (unpacking
an archive, assembling image layers, linking local files).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from moorage.storage._http import HttpClient, Sink

if TYPE_CHECKING:
    from moorage.storage._context import Context

__all__ = ["ByteSource", "Finalizer", "HttpSource", "Plan", "RemoteFile"]


class ByteSource(Protocol):
    """Delivers bytes of one remote object to a sink."""

    @property
    def ranged(self) -> bool:
        """Whether :meth:`fetch` honours ``start``/``end`` (parallel parts and resume need it)."""
        ...

    def fetch(
        self, sink: Sink, *, start: int, end: int | None, should_stop: Callable[[], bool]
    ) -> int:
        """Send bytes ``[start, end)`` (``end=None``: to the end) to ``sink``; return the count."""
        ...


@dataclass(frozen=True)
class HttpSource:
    """An object reachable by a plain (possibly pre-signed) HTTP GET."""

    client: HttpClient
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    ranged: bool = True

    def fetch(
        self, sink: Sink, *, start: int, end: int | None, should_stop: Callable[[], bool]
    ) -> int:
        return self.client.fetch(
            self.url, sink, start=start, end=end, headers=self.headers, should_stop=should_stop
        )


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch into the staging directory.

    ``identity`` changes whenever the remote bytes may have changed (ETag, version, digest);
    a partial download is resumed only if it still matches. ``multipart_part_size`` is set for
    S3 objects whose ETag is ``md5-of-part-md5s-N``: parts are then cut at that size so the
    ETag can be checked from per-part MD5s.
    """

    path: str
    size: int | None
    source: ByteSource
    identity: str = ""
    md5: str | None = None
    sha256: str | None = None
    #: git blob id (SHA-1 of ``blob <size>\0<bytes>``), as the Hugging Face Hub lists small files.
    git_sha1: str | None = None
    multipart_etag: str | None = None
    multipart_part_size: int | None = None
    #: where the file came from, for messages (no credentials).
    origin: str = ""


Finalizer = Callable[[Path, "Context"], None]


@dataclass
class Plan:
    """Everything needed to materialise one storage URI."""

    files: list[RemoteFile]
    revision: str | None = None
    digest: str | None = None
    #: KServe: when exactly one file was fetched and it is a tar/zip archive, unpack it.
    unpack_single_archive: bool = False
    #: runs in the staging directory once every file is fetched and verified.
    finalize: Finalizer | None = None
    #: extra facts for the manifest (e.g. the OCI media type).
    extra: dict[str, str] = field(default_factory=dict)
