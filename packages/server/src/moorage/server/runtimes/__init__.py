"""Runtimes: what turns a model directory into a :class:`~moorage.server.Model`.

A runtime is any object with ``name``, ``detect(model_dir) -> bool`` (cheap: look at file names
and a few bytes, import no framework) and ``create(name, model_dir, settings) -> Model`` (build,
not load). The built-in ones are ``sklearn``, ``xgboost`` and ``lightgbm``; third parties add
theirs under the entry-point group ``moorage.server.runtimes``::

    [project.entry-points."moorage.server.runtimes"]
    mytorch = "my_package.runtime:runtime"

Entry points are looked up lazily, on the first name the built-ins do not know.
"""

from moorage.server.runtimes._registry import (
    ENTRY_POINT_GROUP,
    FileRuntime,
    Runtime,
    available_runtimes,
    detect_runtime,
    get_runtime,
    lightgbm_runtime,
    sklearn_runtime,
    xgboost_runtime,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "FileRuntime",
    "Runtime",
    "available_runtimes",
    "detect_runtime",
    "get_runtime",
    "lightgbm_runtime",
    "sklearn_runtime",
    "xgboost_runtime",
]
