"""The provider protocol and registry: one backend per module, chosen by URI type.

A provider is any object with ``name`` and ``plan(uri, ctx) -> Plan``; it is registered for
the :mod:`moorage.core.storage_uri` value types it handles. Providers live in
``moorage.storage.providers.<name>`` and are imported only when a URI of theirs comes along, so an
optional SDK (boto3, google-cloud-storage, azure, huggingface_hub) is imported only when needed
and a missing one gives an error naming the extra to install.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from moorage.core.errors import UnsupportedScheme
from moorage.core.storage_uri import (
    GCSURI,
    HDFSURI,
    HFURI,
    HTTPURI,
    OCIURI,
    PVCURI,
    S3URI,
    AzureBlobURI,
    AzureFileURI,
    LocalURI,
    StorageURI,
)
from moorage.storage._context import Context
from moorage.storage._errors import missing_extra
from moorage.storage._plan import Plan

__all__ = ["Provider", "get_provider", "register_provider", "require"]


class Provider(Protocol):
    """Turns a parsed storage URI into a :class:`~moorage.storage.Plan`."""

    name: str

    def plan(self, uri: Any, ctx: Context, /) -> Plan: ...


#: URI type -> "module:attribute" of its provider (imported lazily) or a provider instance.
_REGISTRY: dict[type[StorageURI], str | Provider] = {
    S3URI: "moorage.storage.providers.s3:provider",
    GCSURI: "moorage.storage.providers.gcs:provider",
    AzureBlobURI: "moorage.storage.providers.azure:blob_provider",
    AzureFileURI: "moorage.storage.providers.azure:file_provider",
    HTTPURI: "moorage.storage.providers.http:provider",
    PVCURI: "moorage.storage.providers.pvc:provider",
    LocalURI: "moorage.storage.providers.local:provider",
    HFURI: "moorage.storage.providers.hf:provider",
    OCIURI: "moorage.storage.providers.oci:provider",
}


def register_provider(uri_type: type[StorageURI], provider: str | Provider) -> None:
    """Register (or replace) the provider for a URI type: an instance or ``"module:attr"``."""
    _REGISTRY[uri_type] = provider


def get_provider(uri: StorageURI) -> Provider:
    """The provider for ``uri``; raises :class:`UnsupportedScheme` if there is none."""
    if isinstance(uri, HDFSURI):
        raise UnsupportedScheme(
            f"{uri}: {uri.scheme}:// is recognised but moorage-storage does not fetch from HDFS; "
            "use a ClusterStorageContainer with an HDFS-capable image",
            uri=str(uri),
        )
    entry = _REGISTRY.get(type(uri))
    if entry is None:
        raise UnsupportedScheme(f"{uri}: no storage provider for {type(uri).__name__}")
    if isinstance(entry, str):
        module_name, _, attr = entry.partition(":")
        provider: Provider = getattr(importlib.import_module(module_name), attr)
        _REGISTRY[type(uri)] = provider
        return provider
    return entry


def require(module: str, extra: str) -> Any:
    """Import an optional dependency, or raise an error naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise missing_extra(module, extra) from None
