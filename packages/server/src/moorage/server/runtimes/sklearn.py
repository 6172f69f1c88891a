"""scikit-learn runtime: one ``.joblib`` / ``.pkl`` / ``.pickle`` file, ``predict`` or
``predict_proba`` (``--predict_proba`` / KServe's ``PREDICT_PROBA=true``)."""

from __future__ import annotations

from collections.abc import Callable
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
        #: scikit-learn's ``(get_config, set_config)``, when it is installed
        self._config: tuple[Callable[[], dict[str, Any]], Callable[..., None]] | None = None

    def _load(self, framework: ModuleType, path: Path) -> None:
        self._model = framework.load(path)
        try:
            import sklearn
        except ImportError:  # a plain joblib pickle of something else
            self._config = None
        else:
            self._config = (sklearn.get_config, sklearn.set_config)
        self._method = (
            self._model.predict_proba
            if self.predict_proba and hasattr(self._model, "predict_proba")
            else self._model.predict
        )

    def _predict(self, inputs: Any) -> Any:
        # scikit-learn re-checks every input for NaN/inf on each call, a fifth of a small
        # predict's time. When numpy says the array is finite (two ufunc calls, without the
        # Python wrapper of ``ndarray.all``), the check is skipped for this call; anything
        # else goes through scikit-learn's own validation unchanged. The setting is
        # scikit-learn's per-thread ``assume_finite``, put back as it was found.
        config = self._config
        if (
            config is None
            or type(inputs) is not np.ndarray
            or inputs.dtype.kind not in "fiub"
            or (
                inputs.dtype.kind == "f"
                and not np.logical_and.reduce(np.isfinite(inputs), axis=None)
            )
        ):
            return self._method(inputs)
        get_config, set_config = config
        if get_config()["assume_finite"]:
            return self._method(inputs)
        set_config(assume_finite=True)
        try:
            return self._method(inputs)
        finally:
            set_config(assume_finite=False)

    def _n_features(self) -> int | None:
        n = getattr(self._model, "n_features_in_", None)
        return n if isinstance(n, int) else None
