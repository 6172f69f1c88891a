"""``s3://bucket/prefix`` with KServe's environment.

Configuration, as KServe reads it: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN`` (or botocore's default chain: IRSA web identity, profiles, instance
profile, ...); ``AWS_ENDPOINT_URL`` or ``S3_ENDPOINT`` + ``S3_USE_HTTPS``; ``S3_VERIFY_SSL``;
``AWS_CA_BUNDLE`` (and the CA-bundle ConfigMap mount); ``awsAnonymousCredential=true`` for
unsigned requests; ``S3_USER_VIRTUAL_BUCKET=true`` for virtual-host addressing;
``S3_USE_ACCELERATE``; ``AWS_DEFAULT_REGION``; and the ``STORAGE_CONFIG`` storage-spec JSON.

Every request (``ListObjectsV2`` pages, part-size probes, object GETs) is an SigV4 pre-signed URL
(:mod:`moorage.storage._sigv4`) sent by the engine's own HTTP client, so with keys in the
environment (or anonymous access) neither boto3 nor botocore is imported: that import and client
set-up cost more than fetching a small model. Only the credential chain (no keys given) needs
the ``[s3]`` extra; botocore then resolves the credentials, and each URL is signed with their
current value. Requests go to ``https://<bucket>.s3.<region>.amazonaws.com`` without an endpoint
(path style for bucket names that are not DNS labels), path style to a custom endpoint unless
``S3_USER_VIRTUAL_BUCKET=true``; a bucket in another region than the one configured (a 301 or
400 answer naming the bucket's region) is signed again for that region, once.

Layout: an object whose key equals the URI's key lands as its base name; objects under the
prefix keep their path below it; objects that merely share the prefix (``models/model`` →
``models/model.bin``) keep their path below the prefix's parent. Keys ending in ``/`` (folder
markers) are skipped. ETags that are plain MD5s are verified; multipart ETags (not an MD5 of the
content) are verified from per-part MD5s when ``MOORAGE_STORAGE_VERIFY_MULTIPART_ETAG=true`` and
the server reports the part size (``HEAD ?partNumber=1``); that costs a full MD5 pass, so it is
off by default.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus, urlencode, urlsplit
from xml.etree import ElementTree

from moorage.core.errors import StorageAuthError, StorageError, StorageNotFound
from moorage.core.retry import Backoff, retry
from moorage.core.storage_uri import S3URI
from moorage.storage._context import Context
from moorage.storage._http import HttpClient, HttpError, Sink
from moorage.storage._plan import Plan, RemoteFile
from moorage.storage._redact import register_secret
from moorage.storage._sigv4 import Credentials, SigV4Signer
from moorage.storage.providers.base import require

__all__ = ["S3Provider", "provider", "target_path"]

logger = logging.getLogger(__name__)

_MD5 = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART = re.compile(r"^[0-9a-f]{32}-(\d+)$")
#: A bucket name usable as a DNS label in a virtual-host address.
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
#: How long a signed URL stays valid; each request is signed just before it is sent.
_PRESIGN_SECONDS = 3600
#: Keys asked for per ListObjectsV2 page (S3's maximum).
_PAGE_KEYS = 1000
#: The largest ListObjectsV2 page accepted (1000 keys of 1 KiB each, with room to spare).
_LIST_PAGE_LIMIT = 16 * 1024 * 1024
_AUTH_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
)


def target_path(prefix: str, key: str) -> str:
    """Where object ``key`` lands, relative to the destination (see the module docstring)."""
    if key == prefix:
        return key.rsplit("/", 1)[-1]
    if prefix == "" or prefix.endswith("/"):
        return key[len(prefix) :].lstrip("/")
    if key.startswith(prefix + "/"):
        return key[len(prefix) + 1 :].lstrip("/")
    parent = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
    return key[len(parent) :].lstrip("/")


# -- addressing and credentials -------------------------------------------------------------------
@dataclass(frozen=True)
class _Bucket:
    """Where one bucket's requests go, and how they are signed (``signer=None``: anonymous)."""

    name: str
    scheme: str
    host: str
    base: str  # path before the key: "/<bucket>" (path style), "" (virtual host)
    signer: SigV4Signer | None

    def url(
        self,
        method: str,
        key: str = "",
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> str:
        """The (pre-signed) URL; ``headers``: the ``x-amz-*`` headers the request will send."""
        path = f"{self.base}/{key}" if key or not self.base else self.base
        if self.signer is None:
            tail = "?" + urlencode(sorted((query or {}).items())) if query else ""
            return f"{self.scheme}://{self.host}{quote(path, safe='/-_.~')}{tail}"
        return self.signer.presign(
            method, self.scheme, self.host, path, query, headers=headers, expires=_PRESIGN_SECONDS
        )


def _host_header(hostname: str, port: int | None, scheme: str) -> str:
    """The Host header as the HTTP client sends it (lower case, default port left out)."""
    host = f"[{hostname}]" if ":" in hostname else hostname
    if port is not None and port != (443 if scheme == "https" else 80):
        host += f":{port}"
    return host


def _bucket(
    ctx: Context, name: str, region: str, creds: Callable[[], Credentials] | None
) -> _Bucket:
    s = ctx.settings
    signer = SigV4Signer(creds, region) if creds is not None else None
    if s.s3_use_accelerate:
        return _Bucket(name, "https", f"{name}.s3-accelerate.amazonaws.com", "", signer)
    endpoint = s.s3_endpoint_url
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        scheme = parts.scheme or "https"
        host = _host_header(parts.hostname or "", parts.port, scheme)
        root = parts.path.rstrip("/")
        if s.s3_user_virtual_bucket:
            return _Bucket(name, scheme, f"{name}.{host}", root, signer)
        return _Bucket(name, scheme, host, f"{root}/{name}", signer)
    regional = f"s3.{region}.amazonaws.com"
    if s.s3_user_virtual_bucket or _DNS_BUCKET.match(name):
        return _Bucket(name, "https", f"{name}.{regional}", "", signer)
    return _Bucket(name, "https", regional, f"/{name}", signer)


def _credentials(ctx: Context, uri: S3URI) -> tuple[Callable[[], Credentials] | None, str | None]:
    """(current credentials, region from botocore's configuration); ``None``: anonymous."""
    s = ctx.settings
    if s.aws_anonymous_credential:
        return None, None
    if s.aws_access_key_id and s.aws_secret_access_key:
        static = Credentials(
            s.aws_access_key_id.get_secret_value(),
            s.aws_secret_access_key.get_secret_value(),
            s.aws_session_token.get_secret_value() if s.aws_session_token else None,
        )
        return (lambda: static), None
    session = require("botocore.session", "s3").get_session()
    chain = session.get_credentials()
    if chain is None:
        raise StorageAuthError(
            f"{uri}: no S3 credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "use IRSA, or awsAnonymousCredential=true for a public bucket)"
        )

    def current() -> Credentials:
        frozen = chain.get_frozen_credentials()
        register_secret(frozen.secret_key)
        register_secret(frozen.token)
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    current()  # fail here, in planning, when the chain cannot produce credentials
    region = session.get_config_variable("region")
    return current, str(region) if region else None


# -- requests ---------------------------------------------------------------------------------
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(elem: ElementTree.Element, name: str) -> str | None:
    for child in elem:
        if _local(child.tag) == name:
            return child.text or ""
    return None


def _error_field(exc: HttpError, name: str) -> str:
    """A field of an S3 error body (``Code``, ``Region``), or ``""``."""
    try:
        root = ElementTree.fromstring(exc.body)
    except ElementTree.ParseError:
        return ""
    return _child_text(root, name) or ""


#: The request header that makes S3 return an object's stored checksum (``x-amz-checksum-*``).
_CHECKSUM_MODE = {"x-amz-checksum-mode": "ENABLED"}


class _S3Source:
    """An object's bytes, each request signed just before it is sent."""

    ranged = True

    def __init__(self, http: HttpClient, bucket: _Bucket, key: str) -> None:
        self._http = http
        self._bucket = bucket
        self._key = key

    def fetch(
        self, sink: Sink, *, start: int, end: int | None, should_stop: Callable[[], bool]
    ) -> int:
        url = self._bucket.url("GET", self._key)
        return self._http.fetch(url, sink, start=start, end=end, should_stop=should_stop)

    def fetch_whole_checked(
        self,
        sink: Sink,
        *,
        should_stop: Callable[[], bool],
        on_headers: Callable[[Callable[[str], str | None]], None],
    ) -> int:
        """The whole object, asking for the checksum it was stored with (S3 returns it only
        for a GET without a range, and only when asked); ``on_headers`` reads it."""
        url = self._bucket.url("GET", self._key, headers=_CHECKSUM_MODE)
        return self._http.fetch(
            url, sink, headers=_CHECKSUM_MODE, should_stop=should_stop, on_headers=on_headers
        )


class S3Provider:
    name = "s3"

    def plan(self, uri: S3URI, ctx: Context, /) -> Plan:
        s = ctx.settings
        creds, configured_region = _credentials(ctx, uri)
        region = s.aws_default_region or configured_region or "us-east-1"
        http = ctx.make_http(verify=s.s3_verify)
        bucket = _bucket(ctx, uri.bucket, region, creds)
        try:
            objects = self._list(http, bucket, uri, ctx)
        except HttpError as exc:
            moved = exc.headers.get("x-amz-bucket-region") or _error_field(exc, "Region")
            if not (moved and moved != region and exc.status in (301, 400)):
                raise _list_error(exc, uri) from None
            logger.info("%s: bucket %r is in %s", uri, uri.bucket, moved)
            bucket = _bucket(ctx, uri.bucket, moved, creds)
            try:
                objects = self._list(http, bucket, uri, ctx)
            except HttpError as again:
                raise _list_error(again, uri) from None
        if not objects:
            raise StorageNotFound(f"Failed to fetch model. No model found in {uri}.")
        files: list[RemoteFile] = []
        for key, etag, size in objects:
            md5 = etag if _MD5.match(etag) else None
            multipart, part_size = None, None
            match = _MULTIPART.match(etag)
            if match and size > 0 and s.verify_multipart_etag:
                part_size = self._part_size(http, bucket, key, int(match.group(1)), size)
                multipart = etag if part_size else None
            files.append(
                RemoteFile(
                    path=target_path(uri.key, key),
                    size=size,
                    source=_S3Source(http, bucket, key),
                    identity=f"{etag}|{size}",
                    md5=md5 if s.verify_hashes else None,
                    multipart_etag=multipart,
                    multipart_part_size=part_size,
                    origin=f"s3://{uri.bucket}/{key}",
                )
            )
        return Plan(files=files, unpack_single_archive=True)

    @staticmethod
    def _list(
        http: HttpClient, bucket: _Bucket, uri: S3URI, ctx: Context
    ) -> list[tuple[str, str, int]]:
        """(key, ETag without quotes in lower case, size) of every object under the prefix."""
        found: list[tuple[str, str, int]] = []
        for key, etag, size in _list_pages(http, bucket, uri.key, ctx):
            if key.endswith("/"):
                continue
            if key == uri.key:
                return [(key, etag, size)]
            found.append((key, etag, size))
        return found

    @staticmethod
    def _part_size(
        http: HttpClient, bucket: _Bucket, key: str, parts: int, size: int
    ) -> int | None:
        """The uniform part size of a multipart object, if the server tells it."""
        try:
            head = http.request("HEAD", bucket.url("HEAD", key, {"partNumber": "1"}), ok=(200, 206))
        except HttpError:
            return None
        first = int(head.header("Content-Length", "0") or 0)
        count = head.header("x-amz-mp-parts-count")
        if (count is not None and count.isdigit() and int(count) != parts) or first <= 0:
            return None
        if parts > 1 and not (first * (parts - 1) < size <= first * parts):
            return None
        return first


def _list_pages(
    http: HttpClient, bucket: _Bucket, prefix: str, ctx: Context
) -> Iterator[tuple[str, str, int]]:
    s = ctx.settings
    policy = Backoff(attempts=s.retries + 1, initial=s.retry_backoff_s, maximum=8.0)
    token: str | None = None
    while True:
        query = {
            "list-type": "2",
            "prefix": prefix,
            "encoding-type": "url",
            "max-keys": str(_PAGE_KEYS),
        }
        if token:
            query["continuation-token"] = token

        def page(query: dict[str, str] = query) -> bytes:
            url = bucket.url("GET", "", query)
            return http.request("GET", url, limit=_LIST_PAGE_LIMIT).body

        body = retry(
            page,
            policy,
            retry_on=lambda exc: isinstance(exc, HttpError) and exc.retryable,
            sleep=ctx.stop.wait,
        )
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError as exc:
            raise StorageError(f"s3://{bucket.name}: unreadable listing ({exc})") from None
        url_encoded = (_child_text(root, "EncodingType") or "").lower() == "url"
        for item in root:
            if _local(item.tag) != "Contents":
                continue
            key = _child_text(item, "Key") or ""
            if url_encoded:
                key = unquote_plus(key)
            etag = (_child_text(item, "ETag") or "").strip('"').lower()
            size = _child_text(item, "Size") or ""
            if not size.isdigit():
                raise StorageError(f"s3://{bucket.name}/{key}: listing has no size")
            yield key, etag, int(size)
        token = _child_text(root, "NextContinuationToken")
        if (_child_text(root, "IsTruncated") or "").lower() != "true" or not token:
            return


def _list_error(exc: HttpError, uri: S3URI) -> StorageError:
    code = _error_field(exc, "Code")
    status = exc.status
    if not status:
        return StorageError(f"{uri}: cannot reach the S3 endpoint ({exc})")
    if code == "NoSuchBucket" or status == 404:
        return StorageNotFound(f"{uri}: bucket {uri.bucket!r} does not exist")
    if status in (401, 403) or code in _AUTH_CODES:
        return StorageAuthError(
            f"{uri}: access denied listing bucket {uri.bucket!r} ({code or status})"
        )
    return StorageError(f"{uri}: listing failed ({code or status})")


provider = S3Provider()
