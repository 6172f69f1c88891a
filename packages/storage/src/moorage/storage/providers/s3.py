"""``s3://bucket/prefix`` with KServe's environment (needs ``moorage-storage[s3]``).

Configuration, as KServe reads it: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN`` (or boto3's default chain: IRSA web identity, instance profile, ...);
``AWS_ENDPOINT_URL`` or ``S3_ENDPOINT`` + ``S3_USE_HTTPS``; ``S3_VERIFY_SSL``; ``AWS_CA_BUNDLE``
(and the CA-bundle ConfigMap mount); ``awsAnonymousCredential=true`` for unsigned requests;
``S3_USER_VIRTUAL_BUCKET=true`` for virtual-host addressing; ``S3_USE_ACCELERATE``;
``AWS_DEFAULT_REGION``; and the ``STORAGE_CONFIG`` storage-spec JSON.

Listing uses boto3; bytes are fetched with pre-signed GET URLs by the engine's own HTTP client
(parallel ranged parts, resume), which keeps boto3 off the data path. Layout: an object whose key
equals the URI's key lands as its base name; objects under the prefix keep their path below it;
objects that merely share the prefix (``models/model`` → ``models/model.bin``) keep their path
below the prefix's parent. Keys ending in ``/`` (folder markers) are skipped. ETags that are
plain MD5s are verified; multipart ETags (not an MD5 of the content) are verified from per-part
MD5s when ``MOORAGE_STORAGE_VERIFY_MULTIPART_ETAG=true`` and the server reports the part size
(``HEAD ?partNumber=1``); that costs a full MD5 pass, so it is off by default.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from moorage.core.errors import StorageAuthError, StorageError, StorageNotFound
from moorage.core.storage_uri import S3URI
from moorage.storage._context import Context
from moorage.storage._http import HttpClient, Sink
from moorage.storage._plan import Plan, RemoteFile
from moorage.storage.providers.base import require

__all__ = ["S3Provider", "make_client", "provider"]

logger = logging.getLogger(__name__)

_MD5 = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART = re.compile(r"^[0-9a-f]{32}-(\d+)$")
_PRESIGN_SECONDS = 12 * 3600


def make_client(ctx: Context) -> Any:
    """A boto3 S3 client configured from :class:`StorageSettings` (KServe's variables)."""
    boto3 = require("boto3", "s3")
    botocore_config = require("botocore.config", "s3")
    s = ctx.settings
    options: dict[str, Any] = {"signature_version": "s3v4"}
    if s.aws_anonymous_credential:
        options["signature_version"] = require("botocore", "s3").UNSIGNED
    s3_options: dict[str, Any] = {}
    if s.s3_user_virtual_bucket:
        s3_options["addressing_style"] = "virtual"
    elif s.s3_endpoint_url:
        s3_options["addressing_style"] = "path"
    if s.s3_use_accelerate:
        s3_options["use_accelerate_endpoint"] = True
    config = botocore_config.Config(
        s3=s3_options or None,
        retries={"max_attempts": max(1, s.retries), "mode": "standard"},
        connect_timeout=s.connect_timeout_s,
        read_timeout=s.read_timeout_s,
        max_pool_connections=max(10, s.concurrency),
        **options,
    )
    kwargs: dict[str, Any] = {"config": config}
    if s.s3_endpoint_url:
        kwargs["endpoint_url"] = s.s3_endpoint_url
    region = s.aws_default_region or ("us-east-1" if s.s3_endpoint_url else None)
    if region:
        kwargs["region_name"] = region
    verify = s.s3_verify
    if verify is not True:
        kwargs["verify"] = verify
    if s.aws_access_key_id and s.aws_secret_access_key and not s.aws_anonymous_credential:
        kwargs["aws_access_key_id"] = s.aws_access_key_id.get_secret_value()
        kwargs["aws_secret_access_key"] = s.aws_secret_access_key.get_secret_value()
        if s.aws_session_token:
            kwargs["aws_session_token"] = s.aws_session_token.get_secret_value()
    session = boto3.session.Session()
    return session.client("s3", **kwargs)


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


class _PresignedSource:
    """GETs through a pre-signed URL, signed on first use in the worker thread that needs it."""

    ranged = True

    def __init__(self, http: HttpClient, client: Any, bucket: str, key: str) -> None:
        self._http = http
        self._client = client
        self._bucket = bucket
        self._key = key
        self._url: str | None = None

    def fetch(
        self, sink: Sink, *, start: int, end: int | None, should_stop: Callable[[], bool]
    ) -> int:
        if self._url is None:
            self._url = self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self._bucket, "Key": self._key},
                ExpiresIn=_PRESIGN_SECONDS,
            )
        return self._http.fetch(self._url, sink, start=start, end=end, should_stop=should_stop)


class S3Provider:
    name = "s3"

    def plan(self, uri: S3URI, ctx: Context, /) -> Plan:
        client = make_client(ctx)
        botocore_exceptions = require("botocore.exceptions", "s3")
        try:
            objects = self._list(client, uri)
        except botocore_exceptions.NoCredentialsError:
            raise StorageAuthError(
                f"{uri}: no S3 credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "use IRSA, or awsAnonymousCredential=true for a public bucket)"
            ) from None
        except botocore_exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code == "NoSuchBucket" or status == 404:
                raise StorageNotFound(f"{uri}: bucket {uri.bucket!r} does not exist") from None
            if status in (401, 403) or code in ("AccessDenied", "InvalidAccessKeyId"):
                raise StorageAuthError(
                    f"{uri}: access denied listing bucket {uri.bucket!r} ({code or status})"
                ) from None
            raise StorageError(f"{uri}: listing failed ({code or status})") from None
        except botocore_exceptions.EndpointConnectionError as exc:
            raise StorageError(f"{uri}: cannot reach the S3 endpoint ({exc})") from None
        if not objects:
            raise StorageNotFound(f"Failed to fetch model. No model found in {uri}.")
        http = ctx.make_http(verify=ctx.settings.s3_verify)
        files: list[RemoteFile] = []
        for obj in objects:
            key = obj["Key"]
            etag = str(obj.get("ETag", "")).strip('"').lower()
            size = int(obj["Size"])
            md5 = etag if _MD5.match(etag) else None
            multipart, part_size = None, None
            match = _MULTIPART.match(etag)
            if match and size > 0 and ctx.settings.verify_multipart_etag:
                part_size = self._part_size(client, uri.bucket, key, int(match.group(1)), size)
                multipart = etag if part_size else None
            files.append(
                RemoteFile(
                    path=target_path(uri.key, key),
                    size=size,
                    source=_PresignedSource(http, client, uri.bucket, key),
                    identity=f"{etag}|{size}",
                    md5=md5 if ctx.settings.verify_hashes else None,
                    multipart_etag=multipart,
                    multipart_part_size=part_size,
                    origin=f"s3://{uri.bucket}/{key}",
                )
            )
        return Plan(files=files, unpack_single_archive=True)

    @staticmethod
    def _list(client: Any, uri: S3URI) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=uri.bucket, Prefix=uri.key):
            for obj in page.get("Contents", []) or []:
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                if key == uri.key:
                    return [obj]
                found.append(obj)
        return found

    @staticmethod
    def _part_size(client: Any, bucket: str, key: str, parts: int, size: int) -> int | None:
        """The uniform part size of a multipart object, if the server tells it."""
        try:
            head = client.head_object(Bucket=bucket, Key=key, PartNumber=1)
        except Exception:
            return None
        first = int(head.get("ContentLength", 0) or 0)
        if int(head.get("PartsCount", parts) or parts) != parts or first <= 0:
            return None
        if parts > 1 and not (first * (parts - 1) < size <= first * parts):
            return None
        return first


provider = S3Provider()
