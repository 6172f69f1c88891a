"""The ClusterServingRuntimes moorage ships (package data ``runtimes/*.yaml``)."""

from __future__ import annotations

from functools import cache
from importlib import resources

from moorage.core.resources._servingruntime import ClusterServingRuntime

__all__ = ["builtin_runtime_files", "builtin_runtimes"]


@cache
def builtin_runtime_files() -> dict[str, str]:
    """``{file name: YAML text}`` of the shipped runtimes, in name order."""
    folder = resources.files("moorage.core.resources") / "runtimes"
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml")
    }


@cache
def _parsed() -> tuple[ClusterServingRuntime, ...]:
    from moorage.core.resources._loader import load_resources

    out: list[ClusterServingRuntime] = []
    for text in builtin_runtime_files().values():
        for resource in load_resources(text):
            assert isinstance(resource, ClusterServingRuntime)
            out.append(resource)
    return tuple(out)


def builtin_runtimes(*, copy: bool = True) -> list[ClusterServingRuntime]:
    """Fresh copies of moorage's built-in runtimes, in file-name order (with ``copy=False``
    the shared parsed objects, for readers that never modify them: much cheaper).

    KServe v0.14.1's ten ClusterServingRuntimes under KServe's names: ``kserve-sklearnserver``,
    ``kserve-xgbserver``, ``kserve-lgbserver`` and ``kserve-huggingfaceserver`` run
    ``moorage-server`` in image ``moorage/server:latest``; ``kserve-mlserver``,
    ``kserve-tritonserver``, ``kserve-torchserve``, ``kserve-tensorflow-serving``,
    ``kserve-paddleserver`` and ``kserve-pmmlserver`` the upstream images KServe installs. Plus
    ``moorage-sklearn``/``-xgboost``/``-lightgbm``, moorage 0.1's names, selectable only by
    name. The local runner and the chart (``charts/moorage/runtimes/``) use the same files,
    parsed once per process.
    """
    if not copy:
        return list(_parsed())
    return [runtime.model_copy(deep=True) for runtime in _parsed()]
