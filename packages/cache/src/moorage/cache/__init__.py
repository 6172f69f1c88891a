"""moorage-cache: the LocalModelCache controller and the node agent (KServe v0.14.1's model cache).

``moorage-cache controller`` places each LocalModelCache on the nodes of its node group (one
LocalModelNode per node), creates the PV/PVC its InferenceServices' namespaces mount, and reports
the nodes' states in the cache's status; ``moorage-cache agent`` (one per node) downloads what its
LocalModelNode lists with :mod:`moorage.storage`. The decisions of both are pure functions:
:func:`moorage.cache.reconcile.plan` and :func:`moorage.cache.nodeplan.decide`. See the README.
"""

from moorage.cache._version import __version__
from moorage.cache.nodeplan import ModelRecord, decide
from moorage.cache.reconcile import ClusterState, Plan, cache_for_isvc, plan

__all__ = ["ClusterState", "ModelRecord", "Plan", "__version__", "cache_for_isvc", "decide", "plan"]
