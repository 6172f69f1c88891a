"""``moorage operator``: KServe's InferenceService controller (RawDeployment) on kopf.

Pure parts, tested without an API server: :mod:`.rendering` (cluster state → objects or a
failure with KServe's reason), :mod:`.dependencies` (which InferenceServices an object's change
concerns), :mod:`.apply` (server-side apply requests, owner references, the prune set, merge
patches), :mod:`.status` (KServe's status from Deployments and Pods), :mod:`.lease` (who leads).
The rest talks to the API server: :mod:`.client` (writes, errors mapped to kopf's),
:mod:`.controller` (the work queue), :mod:`.handlers` (kopf's watches), :mod:`.command`
(the process).
"""

from moorage.controller.operator.command import add_parser, run

__all__ = ["add_parser", "run"]
