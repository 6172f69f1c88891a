"""KServe v0.14.1's names, labels and annotations for the model cache, in one place."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "CACHE_LABEL",
    "DISABLE_ANNOTATION",
    "FINALIZER",
    "MODELS_DIR",
    "PVC_NAME_ANNOTATION",
    "SOURCE_URI_ANNOTATION",
    "pv_name",
    "pvc_name",
    "safe_uri",
]

#: The cache controller's finalizer on a LocalModelCache.
FINALIZER = "localmodel.kserve.io/finalizer"
#: On an InferenceService using a cache (value: the cache's name); also on the PVs/PVCs we create.
CACHE_LABEL = "internal.serving.kserve.io/localmodel"
#: On an InferenceService using a cache: the cache's ``sourceModelUri``.
SOURCE_URI_ANNOTATION = "internal.serving.kserve.io/localmodel-sourceuri"
#: On an InferenceService using a cache: the PVC its pods mount.
PVC_NAME_ANNOTATION = "internal.serving.kserve.io/localmodel-pvc-name"
#: An InferenceService with this annotation never uses a cache (KServe v0.14.1).
DISABLE_ANNOTATION = "serving.kserve.io/disable-localmodel"
#: Under the node's model root, models live in ``models/<cache name>`` (the agent's layout and
#: the ``subPath`` a predictor mounts).
MODELS_DIR = "models"


def pvc_name(cache: str, node_group: str) -> str:
    """The PVC an InferenceService's namespace gets for a cache: ``<cache>-<nodeGroup>``."""
    return f"{cache}-{node_group}"


def pv_name(cache: str, node_group: str, namespace: str) -> str:
    """The PV bound to that PVC: ``<cache>-<nodeGroup>-<namespace>``."""
    return f"{cache}-{node_group}-{namespace}"


def safe_uri(uri: str) -> str:
    """``uri`` for a log line: no user-info, no query string (pre-signed URLs, SAS tokens)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<uri>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "<redacted>" if parts.query else "", ""))
