"""The runtime registry: built-ins plus ``moorage.server.runtimes`` entry points."""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from moorage.core.config.server import ServerSettings
from moorage.core.errors import InvalidInput, StorageNotFound
from moorage.server.model import Model

__all__ = [
    "ENTRY_POINT_GROUP",
    "FileRuntime",
    "Runtime",
    "available_runtimes",
    "detect_runtime",
    "get_runtime",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "moorage.server.runtimes"


@runtime_checkable
class Runtime(Protocol):
    @property
    def name(self) -> str: ...

    def detect(self, model_dir: Path) -> bool: ...

    def create(self, name: str, model_dir: Path, settings: ServerSettings) -> Model: ...


@dataclass(frozen=True)
class FileRuntime:
    """A runtime recognised by model-file extension, its model class imported on ``create``."""

    name: str
    extensions: tuple[str, ...]
    model_class: str  # "module:Class"
    options: Callable[[ServerSettings], dict[str, Any]] = lambda settings: {}
    sniff: Callable[[Path], bool] | None = None

    def detect(self, model_dir: Path) -> bool:
        if not model_dir.is_dir():
            return False
        for path in model_dir.iterdir():
            if (
                path.is_file()
                and path.name.endswith(self.extensions)
                and (self.sniff is None or self.sniff(path))
            ):
                return True
        return False

    def create(self, name: str, model_dir: Path, settings: ServerSettings) -> Model:
        module, _, cls_name = self.model_class.partition(":")
        cls = getattr(importlib.import_module(module), cls_name)
        model: Model = cls(name, model_dir, **self.options(settings))
        return model


def _head(path: Path, size: int = 4096) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(size)
    except OSError:
        return b""


def _is_lightgbm_text(path: Path) -> bool:
    return _head(path, 16).startswith(b"tree")


def _is_xgboost(path: Path) -> bool:
    head = _head(path)
    if path.suffix == ".json":
        return b'"learner"' in head
    if path.suffix == ".bst":
        return not head.startswith(b"tree")
    return True


sklearn_runtime = FileRuntime(
    "sklearn",
    (".joblib", ".pkl", ".pickle"),
    "moorage.server.runtimes.sklearn:SKLearnModel",
    options=lambda s: {"predict_proba": s.predict_proba},
)
xgboost_runtime = FileRuntime(
    "xgboost",
    (".bst", ".json", ".ubj"),
    "moorage.server.runtimes.xgboost:XGBoostModel",
    options=lambda s: {"nthread": s.nthread},
    sniff=_is_xgboost,
)
lightgbm_runtime = FileRuntime(
    "lightgbm",
    (".bst", ".txt"),
    "moorage.server.runtimes.lightgbm:LightGBMModel",
    options=lambda s: {"nthread": s.nthread},
    sniff=_is_lightgbm_text,
)


def _huggingface() -> Runtime:
    # The runtime module imports no framework (transformers is imported when a model is made).
    from moorage.server.runtimes.huggingface import huggingface_runtime

    return huggingface_runtime


_BUILTIN: dict[str, Runtime] = {
    r.name: r for r in (sklearn_runtime, xgboost_runtime, lightgbm_runtime, _huggingface())
}


@functools.cache
def _entry_point_runtimes() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load_entry_point(name: str) -> Runtime | None:
    ep = _entry_point_runtimes().get(name)
    if ep is None:
        return None
    runtime = ep.load()
    if isinstance(runtime, type):
        runtime = runtime()
    if not isinstance(runtime, Runtime):
        raise TypeError(f"entry point {ep.value} ({ENTRY_POINT_GROUP}) is not a runtime")
    return runtime


def available_runtimes() -> list[str]:
    """Names of every known runtime (built-in first, then plugins)."""
    names = list(_BUILTIN)
    names.extend(n for n in _entry_point_runtimes() if n not in _BUILTIN)
    return names


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name``: a built-in, else a plugin (entry points read only then)."""
    key = name.lower()
    runtime = _BUILTIN.get(key) or _load_entry_point(key)
    if runtime is None:
        raise InvalidInput(
            f"unknown model format {name!r}; known: {', '.join(available_runtimes())}"
        )
    return runtime


def detect_runtime(model_dir: Path) -> Runtime:
    """The first runtime whose files are in ``model_dir``: built-ins, then plugins."""
    if not model_dir.is_dir():
        raise StorageNotFound(f"model directory {model_dir} does not exist", path=str(model_dir))
    for runtime in _BUILTIN.values():
        if runtime.detect(model_dir):
            logger.info("detected model format %s in %s", runtime.name, model_dir)
            return runtime
    for name in _entry_point_runtimes():
        if name in _BUILTIN:
            continue
        try:
            plugin = _load_entry_point(name)
        except Exception:
            logger.exception("runtime plugin %s failed to load", name)
            continue
        if plugin is not None and plugin.detect(model_dir):
            logger.info("detected model format %s in %s", plugin.name, model_dir)
            return plugin
    files = ", ".join(sorted(p.name for p in model_dir.iterdir())) or "nothing"
    raise StorageNotFound(
        f"no known model format in {model_dir} (it holds {files}); "
        f"pass --model_format (one of {', '.join(available_runtimes())})",
        path=str(model_dir),
    )
