"""``http(s)://`` URLs of one file, with KServe's headers and content-type rules.

Request headers for a host come from the ``<host>-headers`` variable (JSON), as KServe's
credential injection writes it. The file is probed with a one-byte ranged GET (which also works
for pre-signed URLs that refuse HEAD); a server that honours ranges gets parallel parts and
resume, one that does not gets a single stream. KServe's content-type rules apply: a ``.zip``
name needs a zip type, a ``.tar``/``.tar.gz``/``.tgz`` name a tar or gzip type, and anything else
``application/octet-stream``; archives are then unpacked safely.
"""

from __future__ import annotations

import mimetypes
from urllib.parse import urlsplit

from moorage.core.errors import StorageAuthError, StorageError, StorageNotFound
from moorage.core.storage_uri import HTTPURI
from moorage.storage._context import Context
from moorage.storage._http import HttpClient, HttpError
from moorage.storage._plan import HttpSource, Plan, RemoteFile
from moorage.storage._redact import redact_url

__all__ = ["HTTPProvider", "probe", "provider"]

ZIP_TYPES: tuple[str, ...] = (
    "application/x-zip-compressed",
    "application/zip",
    "application/zip-compressed",
)
TAR_TYPES: tuple[str, ...] = (
    "application/x-tar",
    "application/x-gtar",
    "application/x-gzip",
    "application/gzip",
)
OCTET_TYPES: tuple[str, ...] = ("application/octet-stream",)


def _status_error(exc: HttpError, url: str) -> StorageError:
    message = f"URI: {redact_url(url)} returned a {exc.status} response code."
    if exc.status in (401, 403):
        return StorageAuthError(message, status=exc.status)
    if exc.status == 404:
        return StorageNotFound(message, status=exc.status)
    return StorageError(message, status=exc.status)


def probe(client: HttpClient, url: str, headers: dict[str, str] | None = None) -> dict[str, object]:
    """Size, range support, content type and validator of ``url`` (one ranged GET)."""
    probe_headers = {**(headers or {}), "Range": "bytes=0-0", "Accept-Encoding": "identity"}
    try:
        response = client.request(
            "GET", url, headers=probe_headers, ok=(200, 206), limit=1 << 16, skip_large=True
        )
    except HttpError as exc:
        if exc.status == 416:  # empty file
            return {"size": 0, "ranged": False, "type": "", "etag": ""}
        if exc.status:
            raise _status_error(exc, url) from None
        raise
    size: int | None = None
    ranged = False
    if response.status == 206:
        content_range = response.header("Content-Range") or ""
        total = content_range.rsplit("/", 1)[-1]
        if total.isdigit():
            size, ranged = int(total), True
    else:
        length = response.header("Content-Length")
        size = int(length) if length and length.isdigit() else None
    return {
        "size": size,
        "ranged": ranged,
        "type": (response.header("Content-Type") or "").strip().lower(),
        "etag": response.header("ETag") or response.header("Last-Modified") or "",
        "url": response.url,
    }


def check_content_type(url: str, filename: str, content_type: str) -> None:
    """KServe's rule: the response type must fit the file name's type."""
    parts = urlsplit(url)
    guessed, _ = mimetypes.guess_type(parts.path if "." in parts.path.rsplit("/", 1)[-1] else url)
    if guessed == "application/zip":
        allowed = ZIP_TYPES
    elif guessed == "application/x-tar":
        allowed = TAR_TYPES
    else:
        allowed = OCTET_TYPES
    if not content_type.startswith(allowed):
        raise StorageError(
            f"URI: {redact_url(url)} did not respond with any of following 'Content-Type': "
            + ", ".join(allowed),
            content_type=content_type,
        )


class HTTPProvider:
    name = "http"

    def plan(self, uri: HTTPURI, ctx: Context, /) -> Plan:
        info = probe(ctx.http, uri.url)
        check_content_type(uri.url, uri.filename, str(info["type"]))
        size = info["size"]
        source = HttpSource(ctx.http, str(info.get("url") or uri.url), ranged=bool(info["ranged"]))
        remote = RemoteFile(
            path=uri.filename,
            size=size if isinstance(size, int) else None,
            source=source,
            identity=f"{info['etag']}|{size}",
            origin=redact_url(uri.url),
        )
        return Plan(files=[remote], unpack_single_archive=True)


provider = HTTPProvider()
