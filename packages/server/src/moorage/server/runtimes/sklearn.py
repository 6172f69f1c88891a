"""scikit-learn runtime: one ``.joblib`` / ``.pkl`` / ``.pickle`` file, ``predict`` or
``predict_proba`` (``--predict_proba`` / KServe's ``PREDICT_PROBA=true``)."""

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

__all__ = ["MODEL_EXTENSIONS", "SKLearnModel"]

logger = logging.getLogger(__name__)

MODEL_EXTENSIONS = (".joblib", ".pkl", ".pickle")


class SKLearnModel(Model):
    """Serves a pickled scikit-learn estimator (KServe's ``sklearnserver``)."""

    def __init__(self, name: str, model_dir: str | Path, *, predict_proba: bool = False) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.predict_proba = predict_proba
        self._model: Any = None

    def load(self) -> bool:
        try:
            import joblib
        except ImportError:
            raise MissingExtra("sklearn", "scikit-learn and joblib") from None
        path = find_model_file(self.model_dir, MODEL_EXTENSIONS, "sklearn")
        self._model = joblib.load(path)
        self._method = (
            self._model.predict_proba
            if self.predict_proba and hasattr(self._model, "predict_proba")
            else self._model.predict
        )
        logger.info("sklearn model %s loaded from %s", self.name, path)
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
            result = self._method(inputs)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"model '{self.name}' cannot predict on this input: {exc}") from exc
        return predict_response(payload, result, self.name)
