"""What the tabular runtimes (sklearn, xgboost, lightgbm) share: model-file discovery and
KServe's input/output conventions.

Inputs: a v2 request with one input gives its numpy array; several inputs give a pandas
``DataFrame`` with one column per input (numpy column stack when pandas is missing). A v1 body
gives ``np.asarray(instances)`` (a ``DataFrame`` when the instances are JSON objects).
Outputs: v2 answers one tensor ``output-0``; v1 answers ``{"predictions": [...]}``.
Metadata: when the framework knows the feature count ``n``, the model declares input
``input-0`` FP32 ``[-1, n]`` and output ``output-0`` with the datatype and trailing shape of one
prediction on a row of zeros, made at load (nothing is declared if that prediction fails).

:class:`TabularModel` is the lifecycle they share; a runtime names its framework and file
extensions and says how to load the file (``_load``) and how to predict (``_predict``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from moorage.core.errors import InvalidInput, ServerError, StorageNotFound
from moorage.core.protocol import InferRequest, InferResponse, InferTensor
from moorage.server.model import Model

__all__ = [
    "MissingExtra",
    "TabularModel",
    "find_model_file",
    "predict_input",
    "predict_response",
]

logger = logging.getLogger(__name__)


class MissingExtra(ServerError):
    """A runtime's framework is not installed."""

    code = "missing_extra"

    def __init__(self, runtime: str, package: str) -> None:
        super().__init__(
            f"the {runtime} runtime needs {package}: pip install 'moorage-server[{runtime}]'",
            runtime=runtime,
        )


def model_files(model_dir: Path, extensions: Iterable[str]) -> list[Path]:
    suffixes = tuple(extensions)
    if not model_dir.is_dir():
        return []
    return sorted(p for p in model_dir.iterdir() if p.is_file() and p.name.endswith(suffixes))


def find_model_file(model_dir: Path, extensions: Iterable[str], runtime: str) -> Path:
    """The one file in ``model_dir`` with one of ``extensions`` (KServe: exactly one allowed)."""
    suffixes = tuple(extensions)
    files = model_files(model_dir, suffixes)
    if not files:
        raise StorageNotFound(
            f"no {runtime} model file ({', '.join(suffixes)}) found in {model_dir}",
            path=str(model_dir),
        )
    if len(files) > 1:
        names = ", ".join(p.name for p in files)
        raise ServerError(
            f"more than one {runtime} model file in {model_dir} ({names}); only one is allowed"
        )
    return files[0]


def predict_input(payload: Any, model_name: str) -> Any:
    """The array (or DataFrame) a tabular model predicts on."""
    if isinstance(payload, InferRequest):
        if not payload.inputs:
            raise InvalidInput(f"the request for model '{model_name}' has no inputs")
        if len(payload.inputs) == 1:
            return payload.inputs[0].as_numpy()
        columns = {t.name: t.as_numpy().reshape(-1) for t in payload.inputs}
        try:
            import pandas as pd
        except ImportError:
            return np.column_stack(list(columns.values()))
        return pd.DataFrame(columns)
    if isinstance(payload, dict):
        instances = payload["inputs"] if "inputs" in payload else payload.get("instances")
        if not isinstance(instances, list):
            raise InvalidInput('Expected "instances" to be a list')
        if instances and isinstance(instances[0], dict):
            try:
                import pandas as pd
            except ImportError:
                raise InvalidInput(
                    f"model '{model_name}' got instances as JSON objects, which need pandas "
                    "on the server (pip install pandas); send rows as lists instead"
                ) from None
            return pd.DataFrame(instances)
        try:
            return np.asarray(instances)
        except ValueError as exc:
            raise InvalidInput(
                f"instances for model '{model_name}' are not a rectangular array: {exc}"
            ) from None
    if isinstance(payload, np.ndarray):
        return payload
    raise InvalidInput(
        f"model '{model_name}' cannot predict on {type(payload).__name__}; send a v1 or v2 body"
    )


def predict_response(payload: Any, result: Any, model_name: str) -> Any:
    """A v2 ``InferResponse`` (one output, ``output-0``) or a v1 ``{"predictions": ...}``."""
    array = np.asarray(result)
    if isinstance(payload, InferRequest):
        return InferResponse(
            model_name,
            [InferTensor.from_numpy("output-0", array)],
            id=payload.id,
        )
    return {"predictions": array.tolist()}


class TabularModel(Model):
    """A model served from one file of a tabular framework (sklearn, xgboost, lightgbm).

    Subclasses set the class attributes and implement ``_load`` and ``_predict``; ``load`` and
    ``predict`` are the same for all of them.
    """

    #: The runtime's name: the ``moorage-server[...]`` extra and the word in messages.
    runtime: ClassVar[str]
    #: The module imported before loading (``MissingExtra`` when it is not installed).
    framework: ClassVar[str]
    #: What ``MissingExtra`` says to install.
    packages: ClassVar[str]
    extensions: ClassVar[tuple[str, ...]]
    #: The class name of the framework's own error that means "bad input" (``InvalidInput``).
    input_error: ClassVar[str | None] = None

    def __init__(self, name: str, model_dir: str | Path) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self._inputs: list[dict[str, Any]] = []
        self._outputs: list[dict[str, Any]] = []

    def _load(self, framework: ModuleType, path: Path) -> None:
        """Load ``path`` with the imported ``framework`` module."""
        raise NotImplementedError

    def _predict(self, inputs: Any) -> Any:
        """Predict on what :func:`predict_input` made of the request."""
        raise NotImplementedError

    def _n_features(self) -> int | None:
        """How many features the loaded model takes, when its framework says."""
        return None

    def load(self) -> bool:
        try:
            # What an ``import`` statement calls (not importlib): patched imports see it.
            framework = __import__(self.framework)
        except ImportError:
            raise MissingExtra(self.runtime, self.packages) from None
        path = find_model_file(self.model_dir, self.extensions, self.runtime)
        self._load(framework, path)
        self._inputs, self._outputs = self._signature()
        logging.getLogger(type(self).__module__).info(
            "%s model %s loaded from %s", self.runtime, self.name, path
        )
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
            result = self._predict(inputs)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"model '{self.name}' cannot predict on this input: {exc}") from exc
        except Exception as exc:
            if type(exc).__name__ == self.input_error:
                raise InvalidInput(
                    f"model '{self.name}' cannot predict on this input: {exc}"
                ) from exc
            raise
        return predict_response(payload, result, self.name)

    def get_input_types(self) -> list[dict[str, Any]]:
        return self._inputs

    def get_output_types(self) -> list[dict[str, Any]]:
        return self._outputs

    def _signature(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The v2 metadata ``(inputs, outputs)`` of the loaded model (see the module doc)."""
        n = self._n_features()
        if not n:
            return [], []
        inputs = [{"name": "input-0", "datatype": "FP32", "shape": [-1, n]}]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sample = np.asarray(self._predict(np.zeros((1, n), dtype=np.float32)))
            datatype = InferTensor.from_numpy("output-0", sample).datatype
        except Exception as exc:
            logger.debug("model %s declares no outputs: %s", self.name, exc)
            return inputs, []
        shape = [-1, *sample.shape[1:]]
        return inputs, [{"name": "output-0", "datatype": datatype.value, "shape": shape}]
