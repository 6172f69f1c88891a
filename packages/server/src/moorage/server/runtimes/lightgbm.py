"""LightGBM runtime: one text model file (``.txt`` or KServe's ``model.bst``)."""

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

__all__ = ["MODEL_EXTENSIONS", "LightGBMModel"]

logger = logging.getLogger(__name__)

MODEL_EXTENSIONS = (".bst", ".txt")


class LightGBMModel(Model):
    """Serves a LightGBM ``Booster`` (KServe's ``lgbserver``)."""

    def __init__(self, name: str, model_dir: str | Path, *, nthread: int = 1) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.nthread = nthread
        self._booster: Any = None

    def load(self) -> bool:
        try:
            import lightgbm
        except ImportError:
            raise MissingExtra("lightgbm", "lightgbm") from None
        path = find_model_file(self.model_dir, MODEL_EXTENSIONS, "lightgbm")
        self._booster = lightgbm.Booster(model_file=str(path))
        logger.info("lightgbm model %s loaded from %s", self.name, path)
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
            result = self._booster.predict(inputs, num_threads=self.nthread)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"model '{self.name}' cannot predict on this input: {exc}") from exc
        except Exception as exc:
            if type(exc).__name__ == "LightGBMError":
                raise InvalidInput(
                    f"model '{self.name}' cannot predict on this input: {exc}"
                ) from exc
            raise
        return predict_response(payload, result, self.name)
