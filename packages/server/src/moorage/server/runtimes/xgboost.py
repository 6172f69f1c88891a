"""XGBoost runtime: one booster file (``.json``, ``.ubj`` or legacy binary ``.bst``)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from moorage.server.runtimes._tabular import TabularModel

__all__ = ["MODEL_EXTENSIONS", "XGBoostModel"]

MODEL_EXTENSIONS = (".bst", ".json", ".ubj")


class XGBoostModel(TabularModel):
    """Serves an XGBoost ``Booster`` (KServe's ``xgbserver``), predicting in place."""

    runtime = "xgboost"
    framework = "xgboost"
    packages = "xgboost"
    extensions = MODEL_EXTENSIONS
    input_error = "XGBoostError"

    def __init__(self, name: str, model_dir: str | Path, *, nthread: int = 1) -> None:
        super().__init__(name, model_dir)
        self.nthread = nthread
        self._booster: Any = None

    def _load(self, framework: ModuleType, path: Path) -> None:
        self._booster = framework.Booster(params={"nthread": self.nthread}, model_file=str(path))

    def _predict(self, inputs: Any) -> Any:
        return self._booster.inplace_predict(inputs)

    def _n_features(self) -> int | None:
        n: int = self._booster.num_features()
        return n
