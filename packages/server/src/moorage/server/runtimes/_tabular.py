"""What the tabular runtimes (sklearn, xgboost, lightgbm) share: model-file discovery and
KServe's input/output conventions.

Inputs: a v2 request with one input gives its numpy array; several inputs give a pandas
``DataFrame`` with one column per input (numpy column stack when pandas is missing). A v1 body
gives ``np.asarray(instances)`` (a ``DataFrame`` when the instances are JSON objects).
Outputs: v2 answers one tensor ``output-0``; v1 answers ``{"predictions": [...]}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from moorage.core.errors import InvalidInput, ServerError, StorageNotFound
from moorage.core.protocol import InferRequest, InferResponse, InferTensor

__all__ = ["MissingExtra", "find_model_file", "predict_input", "predict_response"]


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
