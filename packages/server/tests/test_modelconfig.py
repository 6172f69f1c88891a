"""``--model_config_file``: the models a KServe model-config file lists are served.

The file is laid out as the kubelet writes a ConfigMap volume (``models.json`` a symlink into
``..data``, itself a symlink swapped on each update), and rewritten the same way.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from moorage.server.model import Model
from moorage.server.modelconfig import (
    FailedModel,
    ModelConfigWatcher,
    ModelEntry,
    parse_model_config,
)
from moorage.server.repository import ModelRepository

from .conftest import IRIS_ROWS
from .test_integration import start

# -- the ConfigMap volume --------------------------------------------------------------------


def _entry(name: str, uri: str, framework: str = "sklearn") -> dict[str, Any]:
    return {
        "modelName": name,
        "modelSpec": {"storageUri": uri, "framework": framework, "memory": "1Mi"},
    }


def write_config(configs: Path, entries: list[dict[str, Any]]) -> Path:
    """Write ``models.json`` as the kubelet updates a ConfigMap volume; returns its path."""
    configs.mkdir(parents=True, exist_ok=True)
    version = configs / f"..{time.monotonic_ns()}"
    version.mkdir()
    (version / "models.json").write_text(json.dumps(entries))
    link = configs / "..data_tmp"
    link.symlink_to(version.name)
    os.replace(link, configs / "..data")
    target = configs / "models.json"
    if not target.is_symlink():
        target.symlink_to("..data/models.json")
    return target


@pytest.fixture(scope="module")
def tree_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second sklearn model: a decision tree on iris."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    path = tmp_path_factory.mktemp("tree")
    x, y = load_iris(return_X_y=True)
    joblib.dump(DecisionTreeClassifier(random_state=0).fit(x, y), path / "model.joblib")
    return path


# -- parsing ---------------------------------------------------------------------------------


def test_parse_model_config() -> None:
    raw = json.dumps([_entry("a", "s3://b/a"), _entry("b", "gs://b/b", "xgboost")]).encode()
    assert parse_model_config(raw) == {
        "a": ModelEntry("a", "s3://b/a", "sklearn", "1Mi"),
        "b": ModelEntry("b", "gs://b/b", "xgboost", "1Mi"),
    }
    assert parse_model_config(b"") == {}
    assert parse_model_config(b"[]") == {}


@pytest.mark.parametrize(
    "raw",
    [b"{", b"{}", b'[{"modelName": "a"}]', b'[{"modelName": "a", "modelSpec": {}}]', b"[1]"],
)
def test_parse_model_config_refuses(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_model_config(raw)


# -- the watcher in process ------------------------------------------------------------------


class _Files(Model):
    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name)
        self.path = path

    def load(self) -> bool:
        self.ready = (self.path / "model.joblib").exists()
        return self.ready


async def test_watcher_loads_unloads_and_reports(tmp_path: Path, iris_dir: Path) -> None:
    repository = ModelRepository(str(tmp_path / "models"))
    config = write_config(tmp_path / "configs", [_entry("a", str(iris_dir))])
    watcher = ModelConfigWatcher(
        config,
        repository,
        model_dir=tmp_path / "models",
        build=lambda name, path, framework: _Files(name, path),
        register=repository.update,
        poll_seconds=0.05,
    )
    assert await watcher.check()
    await watcher.wait()
    assert repository.get_models()["a"].ready
    assert (tmp_path / "models" / "a" / "model.joblib").exists()
    assert not await watcher.check()  # unchanged

    write_config(
        tmp_path / "configs",
        [_entry("b", str(tmp_path / "missing")), _entry("../x", str(iris_dir))],
    )
    assert await watcher.check()
    await watcher.wait()
    models = repository.get_models()
    assert "a" not in models
    assert not (tmp_path / "models" / "a").exists()
    assert isinstance(models["b"], FailedModel) and not models["b"].ready
    assert "does not exist" in models["b"].load_error
    assert isinstance(models["../x"], FailedModel)
    assert not (tmp_path / "x").exists()
    await watcher.aclose()


# -- a real server ---------------------------------------------------------------------------


def _wait(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def _ready(url: str, name: str) -> int:
    return httpx.get(f"{url}/v2/models/{name}/ready", timeout=5).status_code


def _infer(url: str, name: str) -> httpx.Response:
    body = {
        "inputs": [
            {
                "name": "x",
                "shape": [2, 4],
                "datatype": "FP64",
                "data": [v for row in IRIS_ROWS for v in row],
            }
        ]
    }
    return httpx.post(f"{url}/v2/models/{name}/infer", json=body, timeout=10)


@pytest.mark.integration
def test_server_serves_the_model_config(tmp_path: Path, iris_dir: Path, tree_dir: Path) -> None:
    configs = tmp_path / "configs"
    models = tmp_path / "models"
    config = write_config(configs, [_entry("iris", str(iris_dir)), _entry("tree", str(tree_dir))])
    server = start(
        [
            "--model_config_file", str(config),
            "--model_dir", str(models),
            "--model_config_poll_seconds", "0.1",
            "--enable_grpc", "false",
        ],
        tmp_path / "server.log",
    )  # fmt: skip
    try:
        url = server.url
        _wait(lambda: _ready(url, "iris") == 200 and _ready(url, "tree") == 200)
        for name in ("iris", "tree"):
            answer = _infer(url, name)
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["outputs"][0]["data"]) == 2
        assert (models / "tree" / "model.joblib").exists()

        # tree dropped, a model whose URI does not exist added
        write_config(configs, [_entry("iris", str(iris_dir)), _entry("bad", f"{tmp_path}/nope")])
        _wait(lambda: _ready(url, "tree") == 404 and _ready(url, "bad") == 503)
        assert not (models / "tree").exists()
        meta = httpx.get(f"{url}/v2/models/bad", timeout=5).json()
        assert "does not exist" in meta["error"]
        index = httpx.post(f"{url}/v2/repository/index", json={}, timeout=5).json()
        assert {"name": "bad", "state": "UNAVAILABLE", "reason": meta["error"]} in index
        assert _infer(url, "iris").status_code == 200
        assert _infer(url, "bad").status_code == 503
        # one failed entry does not take the server out of service
        assert httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200
        assert "model bad from" in server.output()
    finally:
        server.process.terminate()
        server.process.wait(timeout=30)
