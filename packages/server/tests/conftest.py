"""Shared fixtures: small models, an app over them, an ASGI client, trained model files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from moorage.core.errors import InvalidInput
from moorage.core.protocol import InferRequest, InferResponse, InferTensor
from moorage.server import DataPlane, Model, ModelRepository
from moorage.server.rest import create_app


class EchoModel(Model):
    """async predict: returns every input as an output of the same name (v2) or the body (v1)."""

    def __init__(self, name: str = "echo") -> None:
        super().__init__(name)
        self.ready = True
        self.seen_headers: dict[str, str] = {}

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        self.seen_headers = dict(headers or {})
        if response_headers is not None and "x-echo" in (headers or {}):
            response_headers["x-echoed"] = headers["x-echo"]
        if isinstance(payload, InferRequest):
            return InferResponse(self.name, [t for t in payload.inputs], id=payload.id)
        return {"predictions": payload.get("instances", payload.get("inputs"))}

    def explain(self, payload: Any, headers: Any = None) -> Any:
        return {"explanations": len(payload.get("instances", []))}

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]


class SumModel(Model):
    """sync predict (KServe style, no response_headers argument): sums each input row."""

    def __init__(self, name: str = "sum") -> None:
        super().__init__(name)
        self.ready = True

    def preprocess(self, payload: Any, headers: Any = None) -> Any:
        if isinstance(payload, InferRequest):
            return payload.inputs[0].as_numpy()
        return np.asarray(payload["instances"], dtype=np.float64)

    def predict(self, payload: Any, headers: Any = None) -> Any:
        return payload.sum(axis=-1)

    def postprocess(self, result: Any, headers: Any = None) -> Any:
        return InferResponse(self.name, [InferTensor.from_numpy("sum", result)])


class FailingModel(Model):
    def __init__(self, name: str = "failing") -> None:
        super().__init__(name)
        self.ready = True

    def predict(self, payload: Any, headers: Any = None) -> Any:
        if isinstance(payload, dict) and payload.get("instances") == ["bad"]:
            raise InvalidInput("the model refuses 'bad'")
        raise RuntimeError("boom")


class SlowModel(Model):
    def __init__(self, name: str = "slow") -> None:
        super().__init__(name)
        self.ready = True
        self.release = asyncio.Event()

    async def predict(self, payload: Any, headers: Any = None) -> Any:
        await self.release.wait()
        return {"predictions": [1]}


class LazyModel(Model):
    """Not ready until loaded through the repository API."""

    def __init__(self, name: str = "lazy") -> None:
        super().__init__(name)

    def load(self) -> bool:
        self.ready = True
        return True

    def predict(self, payload: Any, headers: Any = None) -> Any:
        return {"predictions": ["lazy"]}


def make_repository() -> ModelRepository:
    repository = ModelRepository("/nonexistent")
    for model in (EchoModel(), SumModel(), FailingModel(), SlowModel(), LazyModel()):
        repository.update(model)
    return repository


@pytest.fixture
def dataplane() -> DataPlane:
    return DataPlane(make_repository(), max_inflight=4)


@pytest.fixture
def app(dataplane: DataPlane) -> Any:
    return create_app(dataplane, max_body_bytes=64 * 1024)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture(scope="session")
def iris_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a joblib LogisticRegression trained on iris."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    path = tmp_path_factory.mktemp("iris")
    x, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), path / "model.joblib")
    return path


IRIS_ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]
