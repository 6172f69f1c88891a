"""LightGBM runtime: one text model file (``.txt`` or KServe's ``model.bst``)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from moorage.server.runtimes._tabular import TabularModel

__all__ = ["MODEL_EXTENSIONS", "LightGBMModel"]

MODEL_EXTENSIONS = (".bst", ".txt")


class LightGBMModel(TabularModel):
    """Serves a LightGBM ``Booster`` (KServe's ``lgbserver``)."""

    runtime = "lightgbm"
    framework = "lightgbm"
    packages = "lightgbm"
    extensions = MODEL_EXTENSIONS
    input_error = "LightGBMError"

    def __init__(self, name: str, model_dir: str | Path, *, nthread: int = 1) -> None:
        super().__init__(name, model_dir)
        self.nthread = nthread
        self._booster: Any = None

    def _load(self, framework: ModuleType, path: Path) -> None:
        self._booster = framework.Booster(model_file=str(path))

    def _predict(self, inputs: Any) -> Any:
        return self._booster.predict(inputs, num_threads=self.nthread)

    def _n_features(self) -> int | None:
        n: int = self._booster.num_feature()
        return n
