"""XGBoost runtime: one booster file (``.json``, ``.ubj`` or legacy binary ``.bst``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from moorage.core.errors import InvalidInput
from moorage.server.model import Model
from moorage.server.runtimes._tabular import (
    MissingExtra,
    find_model_file,
    predict_input,
    predict_response,
)

__all__ = ["MODEL_EXTENSIONS", "XGBoostModel"]

logger = logging.getLogger(__name__)

MODEL_EXTENSIONS = (".bst", ".json", ".ubj")


class XGBoostModel(Model):
    """Serves an XGBoost ``Booster`` (KServe's ``xgbserver``), predicting in place."""

    def __init__(self, name: str, model_dir: str | Path, *, nthread: int = 1) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.nthread = nthread
        self._booster: Any = None

    def load(self) -> bool:
        try:
            import xgboost
        except ImportError:
            raise MissingExtra("xgboost", "xgboost") from None
        path = find_model_file(self.model_dir, MODEL_EXTENSIONS, "xgboost")
        self._booster = xgboost.Booster(params={"nthread": self.nthread}, model_file=str(path))
        logger.info("xgboost model %s loaded from %s", self.name, path)
        self.ready = True
        return self.ready

    def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        inputs = predict_input(payload, self.name)
        try:
            result = self._booster.inplace_predict(inputs)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"model '{self.name}' cannot predict on this input: {exc}") from exc
        except Exception as exc:
            if type(exc).__name__ == "XGBoostError":
                raise InvalidInput(
                    f"model '{self.name}' cannot predict on this input: {exc}"
                ) from exc
            raise
        return predict_response(payload, result, self.name)
