"""moorage-core: the schema library every moorage package shares.

Submodules: ``errors`` (typed errors with HTTP/gRPC status), ``protocol`` (Open Inference Protocol
data model and codecs), ``resources`` (KServe custom resources), ``config`` (settings and the
``inferenceservice-config`` ConfigMap), ``storage_uri`` (storage URI grammar), ``retry``
(backoff with jitter for every retry loop).

Importing ``moorage.core`` is cheap: submodules load on first use.
"""

from moorage.core._version import __version__

__all__ = ["__version__"]
