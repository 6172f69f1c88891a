"""moorage-controller: the InferenceService controller's pure core and ``moorage run``.

* :mod:`~moorage.controller.runtime_selection` picks the (Cluster)ServingRuntime for a predictor;
* :mod:`~moorage.controller.arguments` renders the runtime container for an InferenceService;
* :mod:`~moorage.controller.reconcile` renders the Kubernetes objects (``moorage render``);
* :mod:`~moorage.controller.workload` is the one parsing path of every command;
* :mod:`~moorage.controller.local` serves a workload as processes (``moorage run``);
* :mod:`~moorage.controller.cli` is the ``moorage`` command.

Submodules are imported on use, so ``import moorage.controller`` stays cheap.
"""

from moorage.controller._version import __version__

__all__ = ["__version__"]
