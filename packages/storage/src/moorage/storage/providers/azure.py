"""Azure Blob (and Files) HTTPS URLs (needs ``moorage-storage[azure]``).

Credentials in KServe's order: a service principal (``AZURE_CLIENT_ID``, ``AZURE_TENANT_ID``,
``AZURE_CLIENT_SECRET``, or the legacy ``AZ_*`` names) → Azure AD token; else
``AZURE_STORAGE_ACCESS_KEY`` → account key (bytes are read through short-lived SAS URLs); else
``AZURE_STORAGE_SAS_TOKEN``; else anonymous (public containers). Listing uses
``azure-storage-blob``; bytes come through the engine (parallel ranged GETs, resume), checked
against ``Content-MD5`` when the blob has one. Path-style emulator URLs (Azurite:
``http://127.0.0.1:10000/devstoreaccount1/<container>/<path>``) are Azure Blob URLs when their
``host:port`` is listed in ``MOORAGE_STORAGE_AZURE_BLOB_HOSTS``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

from moorage.core.errors import StorageAuthError, StorageError, StorageNotFound
from moorage.core.storage_uri import AzureBlobURI, AzureFileURI
from moorage.storage._context import Context
from moorage.storage._plan import HttpSource, Plan, RemoteFile
from moorage.storage._redact import register_secret
from moorage.storage.providers.base import require
from moorage.storage.providers.s3 import target_path

__all__ = ["AzureBlobProvider", "AzureFileProvider", "blob_provider", "file_provider"]

_API_VERSION = "2021-08-06"
_SAS_HOURS = 12


def _token_credential(ctx: Context) -> Any:
    s = ctx.settings
    identity = require("azure.identity", "azure")
    if s.azure_client_id and s.azure_tenant_id and s.azure_client_secret:
        return identity.ClientSecretCredential(
            s.azure_tenant_id, s.azure_client_id, s.azure_client_secret.get_secret_value()
        )
    return identity.DefaultAzureCredential()


class AzureBlobProvider:
    name = "azure-blob"

    def plan(self, uri: AzureBlobURI, ctx: Context, /) -> Plan:
        blob_mod = require("azure.storage.blob", "azure")
        errors = require("azure.core.exceptions", "azure")
        s = ctx.settings
        mode = "anonymous"
        credential: Any = None
        if s.azure_client_id:
            credential, mode = _token_credential(ctx), "token"
        elif s.azure_storage_access_key:
            credential = {
                "account_name": uri.account,
                "account_key": s.azure_storage_access_key.get_secret_value(),
            }
            mode = "key"
        elif s.azure_storage_sas_token:
            credential, mode = s.azure_storage_sas_token.get_secret_value(), "sas"
        service = blob_mod.BlobServiceClient(account_url=uri.endpoint, credential=credential)
        container = service.get_container_client(uri.container)
        try:
            blobs = [
                b
                for b in container.list_blobs(name_starts_with=uri.path or None)
                if not b.name.endswith("/")
            ]
        except errors.ResourceNotFoundError:
            raise StorageNotFound(f"{uri}: container {uri.container!r} does not exist") from None
        except errors.ClientAuthenticationError:
            raise StorageAuthError(
                f"{uri}: access denied (set AZURE_STORAGE_ACCESS_KEY or a service principal)"
            ) from None
        except errors.HttpResponseError as exc:
            cls = StorageAuthError if exc.status_code in (401, 403) else StorageError
            raise cls(f"{uri}: listing failed (HTTP {exc.status_code})") from None
        exact = [b for b in blobs if b.name == uri.path]
        if exact:
            blobs = exact
        if not blobs:
            raise StorageNotFound(f"Failed to fetch model. No model found in {uri}.")
        account_key = (
            s.azure_storage_access_key.get_secret_value() if s.azure_storage_access_key else ""
        )
        headers: dict[str, str] = {"x-ms-version": _API_VERSION}
        if mode == "token":
            token = credential.get_token("https://storage.azure.com/.default").token
            register_secret(token)
            headers["Authorization"] = f"Bearer {token}"
        files = []
        for blob in blobs:
            url = f"{uri.endpoint}/{quote(uri.container)}/{quote(blob.name)}"
            if mode == "key":
                sas = blob_mod.generate_blob_sas(
                    account_name=uri.account,
                    container_name=uri.container,
                    blob_name=blob.name,
                    account_key=account_key,
                    permission=blob_mod.BlobSasPermissions(read=True),
                    expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=_SAS_HOURS),
                )
                register_secret(sas)
                url += "?" + sas
            elif mode == "sas":
                url += "?" + str(credential).lstrip("?")
            md5_raw = getattr(blob.content_settings, "content_md5", None)
            md5 = bytes(md5_raw).hex() if md5_raw else None
            files.append(
                RemoteFile(
                    path=target_path(uri.path, blob.name),
                    size=int(blob.size),
                    source=HttpSource(ctx.http, url, headers=headers),
                    identity=f"{blob.etag}|{blob.size}",
                    md5=md5 if s.verify_hashes else None,
                    origin=f"{uri.endpoint}/{uri.container}/{blob.name}",
                )
            )
        return Plan(files=files, unpack_single_archive=True)


class AzureFileProvider:
    name = "azure-file"

    def plan(self, uri: AzureFileURI, ctx: Context, /) -> Plan:
        share_mod = require("azure.storage.fileshare", "azure")
        s = ctx.settings
        if not s.azure_storage_access_key:
            raise StorageAuthError(f"{uri}: Azure Files needs AZURE_STORAGE_ACCESS_KEY")
        key = s.azure_storage_access_key.get_secret_value()
        share = share_mod.ShareClient(
            account_url=uri.endpoint,
            share_name=uri.share,
            credential={"account_name": uri.account, "account_key": key},
        )
        files: list[RemoteFile] = []
        stack = [uri.path.strip("/")]
        while stack:
            directory = stack.pop()
            client = share.get_directory_client(directory)
            for item in client.list_directories_and_files():
                path = f"{directory}/{item['name']}" if directory else item["name"]
                if item.get("is_directory"):
                    stack.append(path)
                    continue
                sas = share_mod.generate_file_sas(
                    account_name=uri.account,
                    share_name=uri.share,
                    file_path=path.split("/"),
                    account_key=key,
                    permission=share_mod.FileSasPermissions(read=True),
                    expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=_SAS_HOURS),
                )
                register_secret(sas)
                rel = path[len(uri.path.strip("/")) :].lstrip("/") or path.rsplit("/", 1)[-1]
                files.append(
                    RemoteFile(
                        path=rel,
                        size=int(item.get("size") or 0),
                        source=HttpSource(
                            ctx.http, f"{uri.endpoint}/{uri.share}/{quote(path)}?{sas}"
                        ),
                        identity=f"{path}|{item.get('size')}",
                        origin=f"{uri.endpoint}/{uri.share}/{path}",
                    )
                )
        if not files:
            raise StorageNotFound(f"Failed to fetch model. No model found in {uri}.")
        return Plan(files=files, unpack_single_archive=True)


blob_provider = AzureBlobProvider()
file_provider = AzureFileProvider()
