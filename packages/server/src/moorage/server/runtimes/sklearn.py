"""scikit-learn runtime: one ``.joblib`` / ``.pkl`` / ``.pickle`` file, ``predict`` or
``predict_proba`` (``--predict_proba`` / KServe's ``PREDICT_PROBA=true``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from moorage.server.runtimes._tabular import TabularModel

__all__ = ["MODEL_EXTENSIONS", "SKLearnModel"]

MODEL_EXTENSIONS = (".joblib", ".pkl", ".pickle")


class SKLearnModel(TabularModel):
    """Serves a pickled scikit-learn estimator (KServe's ``sklearnserver``)."""

    runtime = "sklearn"
    framework = "joblib"
    packages = "scikit-learn and joblib"
    extensions = MODEL_EXTENSIONS

    def __init__(self, name: str, model_dir: str | Path, *, predict_proba: bool = False) -> None:
        super().__init__(name, model_dir)
        self.predict_proba = predict_proba
        self._model: Any = None
        self._finite_context: Callable[[], AbstractContextManager[Any]] | None = None

    def _load(self, framework: ModuleType, path: Path) -> None:
        self._model = framework.load(path)
        try:
            import sklearn
        except ImportError:  # a plain joblib pickle of something else
            self._finite_context = None
        else:
            self._finite_context = functools.partial(sklearn.config_context, assume_finite=True)
        self._method = (
            self._model.predict_proba
            if self.predict_proba and hasattr(self._model, "predict_proba")
            else self._model.predict
        )

    def _predict(self, inputs: Any) -> Any:
        # scikit-learn re-checks every input for NaN/inf on each call, a fifth of a small
        # predict's time. When numpy says the array is finite (a few microseconds), that check
        # is skipped; anything else goes through scikit-learn's own validation unchanged.
        if (
            self._finite_context is not None
            and isinstance(inputs, np.ndarray)
            and inputs.dtype.kind in "fiub"
            and (inputs.dtype.kind != "f" or np.isfinite(inputs).all())
        ):
            with self._finite_context():
                return self._method(inputs)
        return self._method(inputs)

    def _n_features(self) -> int | None:
        n = getattr(self._model, "n_features_in_", None)
        return n if isinstance(n, int) else None
