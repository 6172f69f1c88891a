"""moorage-storage: the storage initializer and the library that moves model bytes.

    from moorage.storage import download
    path = download("s3://bucket/models/iris", "/mnt/models")

:func:`download` (and :func:`adownload`) fetch any storage URI KServe v0.14 accepts, plus
``hf://`` and ``oci://``, atomically, resumably, in parallel and verified. See the package
README for the full contract; :mod:`moorage.storage.testing` holds real-server fixtures.
"""

from moorage.storage._api import DownloadStats, adownload, download, last_download_stats
from moorage.storage._atomic import MANIFEST_NAME, read_manifest
from moorage.storage._plan import ByteSource, HttpSource, Plan, RemoteFile
from moorage.storage._version import __version__
from moorage.storage.providers.base import Provider, get_provider, register_provider

__all__ = [
    "MANIFEST_NAME",
    "ByteSource",
    "DownloadStats",
    "HttpSource",
    "Plan",
    "Provider",
    "RemoteFile",
    "__version__",
    "adownload",
    "download",
    "get_provider",
    "last_download_stats",
    "read_manifest",
    "register_provider",
]
