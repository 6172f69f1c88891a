"""KServe v0.14.1's names, labels and annotations for the model cache, in one place."""

from __future__ import annotations

__all__ = [
    "CACHE_LABEL",
    "DISABLE_ANNOTATION",
    "FINALIZER",
    "MODELS_DIR",
    "PVC_NAME_ANNOTATION",
    "SOURCE_URI_ANNOTATION",
    "pv_name",
    "pvc_name",
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
