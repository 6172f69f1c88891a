"""``gs://bucket/prefix`` from Google Cloud Storage (needs ``moorage-storage[gcs]``).

Credentials as KServe: ``GOOGLE_APPLICATION_CREDENTIALS`` (a service-account file, mounted from
the ``gcloud-application-credentials.json`` Secret key) or Google's default chain; when there
are none, an anonymous client (public buckets). ``STORAGE_EMULATOR_HOST`` points at an emulator.
Listing uses ``google-cloud-storage``; bytes come through the engine from the JSON API's media
endpoint with the credentials' bearer token, checked against the object's MD5 when it has one.
Paths follow the same rules as ``s3://`` (see :func:`moorage.storage.providers.s3.target_path`).
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from moorage.core.errors import StorageAuthError, StorageError, StorageNotFound
from moorage.core.storage_uri import GCSURI
from moorage.storage._context import Context
from moorage.storage._plan import HttpSource, Plan, RemoteFile
from moorage.storage._redact import register_secret
from moorage.storage.providers.base import require
from moorage.storage.providers.s3 import target_path

__all__ = ["GCSProvider", "provider"]

_PUBLIC_ENDPOINT = "https://storage.googleapis.com"


def _client(ctx: Context) -> tuple[Any, str, Any]:
    """(storage client, API endpoint, credentials or None)."""
    storage = require("google.cloud.storage", "gcs")
    s = ctx.settings
    if s.storage_emulator_host:
        credentials_mod = require("google.auth.credentials", "gcs")
        endpoint = s.storage_emulator_host.rstrip("/")
        if "://" not in endpoint:
            endpoint = f"http://{endpoint}"
        client = storage.Client(
            credentials=credentials_mod.AnonymousCredentials(),
            project="moorage",
            client_options={"api_endpoint": endpoint},
        )
        return client, endpoint, None
    if s.google_application_credentials:
        client = storage.Client.from_service_account_json(s.google_application_credentials)
        return client, _PUBLIC_ENDPOINT, client._credentials
    exceptions = require("google.auth.exceptions", "gcs")
    try:
        client = storage.Client()
        return client, _PUBLIC_ENDPOINT, client._credentials
    except exceptions.DefaultCredentialsError:
        return storage.Client.create_anonymous_client(), _PUBLIC_ENDPOINT, None


def _bearer(credentials: Any) -> dict[str, str]:
    if credentials is None:
        return {}
    requests_transport = require("google.auth.transport.requests", "gcs")
    if not getattr(credentials, "valid", False):
        credentials.refresh(requests_transport.Request())
    token = getattr(credentials, "token", None)
    if not token:
        return {}
    register_secret(token)
    return {"Authorization": f"Bearer {token}"}


class GCSProvider:
    name = "gcs"

    def plan(self, uri: GCSURI, ctx: Context, /) -> Plan:
        client, endpoint, credentials = _client(ctx)
        exceptions = require("google.api_core.exceptions", "gcs")
        try:
            blobs = [
                b
                for b in client.list_blobs(uri.bucket, prefix=uri.path)
                if not b.name.endswith("/")
            ]
            headers = _bearer(credentials)
        except exceptions.NotFound:
            raise StorageNotFound(f"{uri}: bucket {uri.bucket!r} does not exist") from None
        except (exceptions.Forbidden, exceptions.Unauthorized) as exc:
            raise StorageAuthError(f"{uri}: access denied ({exc.code})") from None
        except exceptions.GoogleAPIError as exc:
            raise StorageError(f"{uri}: listing failed ({type(exc).__name__})") from None
        exact = [b for b in blobs if b.name == uri.path]
        if exact:
            blobs = exact
        if not blobs:
            raise StorageNotFound(f"Failed to fetch model. No model found in {uri}.")
        files = []
        for blob in blobs:
            md5 = base64.b64decode(blob.md5_hash).hex() if blob.md5_hash else None
            url = (
                f"{endpoint}/download/storage/v1/b/{quote(uri.bucket, safe='')}"
                f"/o/{quote(blob.name, safe='')}?alt=media"
            )
            if blob.generation:
                url += f"&generation={blob.generation}"
            files.append(
                RemoteFile(
                    path=target_path(uri.path, blob.name),
                    size=int(blob.size) if blob.size is not None else None,
                    source=HttpSource(ctx.http, url, headers=headers),
                    identity=f"{blob.generation}|{blob.etag}|{blob.size}",
                    md5=md5 if ctx.settings.verify_hashes else None,
                    origin=f"gs://{uri.bucket}/{blob.name}",
                )
            )
        return Plan(files=files, unpack_single_archive=True)


provider = GCSProvider()
