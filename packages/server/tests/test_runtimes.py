"""Built-in runtimes: detection, loading, v1/v2 predictions, plugin lookup, errors."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from moorage.core.config.server import ServerSettings
from moorage.core.errors import InvalidInput, StorageNotFound
from moorage.server import DataPlane, ModelRepository
from moorage.server._loading import build_models, repository_loader
from moorage.server.rest import create_app
from moorage.server.runtimes import detect_runtime, get_runtime
from moorage.server.runtimes._tabular import MissingExtra

from .conftest import IRIS_ROWS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
FLAT = [v for row in IRIS_ROWS for v in row]


@pytest.fixture(scope="module")
def boosted_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    dirs = {}
    booster = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "nthread": 1},
        xgb.DMatrix(x, label=y),
        num_boost_round=5,
    )
    for suffix in ("json", "ubj", "bst"):
        d = tmp_path_factory.mktemp(f"xgb-{suffix}")
        booster.save_model(str(d / f"model.{suffix}"))
        dirs[f"xgboost-{suffix}"] = d
    lgb_booster = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1},
        lgb.Dataset(x, label=y),
        num_boost_round=5,
    )
    for name in ("model.txt", "model.bst"):
        d = tmp_path_factory.mktemp(f"lgb-{name}")
        lgb_booster.save_model(str(d / name))
        dirs[f"lightgbm-{name}"] = d
    return dirs


def test_detection(iris_dir: Path, boosted_dirs: dict[str, Path], tmp_path: Path) -> None:
    assert detect_runtime(iris_dir).name == "sklearn"
    for key, path in boosted_dirs.items():
        assert detect_runtime(path).name == key.split("-")[0], key
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(StorageNotFound, match=r"notes\.md"):
        detect_runtime(tmp_path)
    with pytest.raises(StorageNotFound, match="does not exist"):
        detect_runtime(tmp_path / "missing")


def test_get_runtime() -> None:
    assert get_runtime("SKLEARN").name == "sklearn"
    with pytest.raises(InvalidInput, match="unknown model format 'onnx'"):
        get_runtime("onnx")


async def _serve(models: list[Any]) -> httpx.AsyncClient:
    repository = ModelRepository()
    for model in models:
        repository.update(model)
    app = create_app(DataPlane(repository))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_sklearn_v1_v2(iris_dir: Path) -> None:
    settings = ServerSettings(model_name="iris", model_dir=str(iris_dir))
    models = build_models(settings)
    assert [m.name for m in models] == ["iris"] and models[0].ready
    async with await _serve(models) as client:
        v1 = await client.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
        assert v1.json() == {"predictions": [1, 1]}
        body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                            "data": FLAT}]}  # fmt: skip
        v2 = (await client.post("/v2/models/iris/infer", json=body)).json()
        assert v2["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [2],
                                  "data": [1, 1]}]  # fmt: skip
        bad = await client.post("/v1/models/iris:predict", json={"instances": [[1, 2, 3]]})
        assert bad.status_code == 400 and "4 features" in bad.json()["error"]
        ragged = await client.post("/v1/models/iris:predict", json={"instances": [[1], [1, 2]]})
        assert ragged.status_code == 400


async def test_sklearn_predict_proba(iris_dir: Path) -> None:
    settings = ServerSettings(model_name="iris", model_dir=str(iris_dir), predict_proba=True)
    async with await _serve(build_models(settings)) as client:
        v1 = (await client.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})).json()
    probabilities = np.asarray(v1["predictions"])
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "key",
    ["xgboost-json", "xgboost-ubj", "xgboost-bst", "lightgbm-model.txt", "lightgbm-model.bst"],
)
async def test_boosters(boosted_dirs: dict[str, Path], key: str) -> None:
    settings = ServerSettings(model_name="m", model_dir=str(boosted_dirs[key]))
    async with await _serve(build_models(settings)) as client:
        v1 = (await client.post("/v1/models/m:predict", json={"instances": IRIS_ROWS})).json()
        assert np.asarray(v1["predictions"]).shape == (2, 3)
        body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64",
                            "data": FLAT}]}  # fmt: skip
        v2 = (await client.post("/v2/models/m/infer", json=body)).json()
        assert v2["outputs"][0]["shape"] == [2, 3]
        bad = await client.post("/v1/models/m:predict", json={"instances": [["a", "b"]]})
        assert bad.status_code in (400, 500), bad.text


def test_explicit_model_format_wins(iris_dir: Path) -> None:
    settings = ServerSettings(model_name="x", model_dir=str(iris_dir), model_format="xgboost")
    with pytest.raises(StorageNotFound, match="xgboost"):
        build_models(settings)


def test_multi_model_repository(
    iris_dir: Path, boosted_dirs: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    shutil.copytree(iris_dir, tmp_path / "flowers")
    shutil.copytree(boosted_dirs["lightgbm-model.txt"], tmp_path / "boosted")
    (tmp_path / "empty").mkdir()
    models = build_models(ServerSettings(model_name="ignored", model_dir=str(tmp_path)))
    assert sorted(m.name for m in models) == ["boosted", "flowers"]


async def test_repository_load_from_model_dir(iris_dir: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(iris_dir, tmp_path / "late")
    settings = ServerSettings(model_dir=str(tmp_path))
    repository = ModelRepository(str(tmp_path), loader=repository_loader(settings))
    assert await repository.load("late")
    assert repository.get_model("late") is not None
    with pytest.raises(Exception, match="does not exist"):
        await repository.load("absent")


def test_missing_extra_names_the_extra(iris_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "joblib":
            raise ImportError("no joblib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    settings = ServerSettings(model_name="iris", model_dir=str(iris_dir))
    with pytest.raises(MissingExtra, match=r"pip install 'moorage-server\[sklearn\]'"):
        build_models(settings)


def test_two_model_files_refused(iris_dir: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copy(iris_dir / "model.joblib", tmp_path / "a.joblib")
    shutil.copy(iris_dir / "model.joblib", tmp_path / "b.pkl")
    with pytest.raises(Exception, match="more than one sklearn model file"):
        build_models(ServerSettings(model_dir=str(tmp_path)))


def test_model_dir_uri_is_downloaded(
    iris_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import moorage.storage

    calls: list[tuple[str, str]] = []

    def fake_download(uri: str, dest: str, /, **kwargs: Any) -> Path:
        calls.append((uri, dest))
        shutil.copy(iris_dir / "model.joblib", Path(dest) / "model.joblib")
        return Path(dest)

    monkeypatch.setattr(moorage.storage, "download", fake_download)
    settings = ServerSettings(model_name="iris", model_dir="s3://bucket/iris")
    models = build_models(settings)
    assert calls and calls[0][0] == "s3://bucket/iris"
    assert models[0].ready and models[0].name == "iris"


async def test_sklearn_declares_its_tensors(iris_dir: Path) -> None:
    settings = ServerSettings(model_name="iris", model_dir=str(iris_dir))
    async with await _serve(build_models(settings)) as client:
        meta = (await client.get("/v2/models/iris")).json()
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]


async def test_sklearn_predict_proba_declares_probabilities(iris_dir: Path) -> None:
    settings = ServerSettings(model_name="iris", model_dir=str(iris_dir), predict_proba=True)
    async with await _serve(build_models(settings)) as client:
        meta = (await client.get("/v2/models/iris")).json()
    assert meta["outputs"] == [{"name": "output-0", "datatype": "FP64", "shape": [-1, 3]}]


@pytest.mark.parametrize(
    ("key", "datatype"), [("xgboost-json", "FP32"), ("lightgbm-model.txt", "FP64")]
)
async def test_boosters_declare_their_tensors(
    boosted_dirs: dict[str, Path], key: str, datatype: str
) -> None:
    settings = ServerSettings(model_name="m", model_dir=str(boosted_dirs[key]))
    async with await _serve(build_models(settings)) as client:
        meta = (await client.get("/v2/models/m")).json()
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "output-0", "datatype": datatype, "shape": [-1, 3]}]


def test_no_outputs_declared_when_the_sample_prediction_fails(iris_dir: Path) -> None:
    from moorage.server.runtimes.sklearn import SKLearnModel

    class Picky(SKLearnModel):
        def _predict(self, inputs: Any) -> Any:
            if not inputs.any():
                raise ValueError("all zeros")
            return super()._predict(inputs)

    model = Picky("iris", iris_dir)
    assert model.get_input_types() == [] and model.get_output_types() == []
    model.load()
    assert model.get_input_types() == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert model.get_output_types() == []


def test_nothing_declared_without_a_feature_count(iris_dir: Path) -> None:
    from moorage.server.runtimes.sklearn import SKLearnModel

    model = SKLearnModel("iris", iris_dir)
    model.load()
    del model._model.n_features_in_
    assert model._signature() == ([], [])


def test_sklearn_finite_fast_path_matches_and_nan_is_still_refused(iris_dir: Path) -> None:
    import joblib

    from moorage.server.runtimes.sklearn import SKLearnModel

    model = SKLearnModel("iris", iris_dir)
    model.load()
    reference = joblib.load(next(iris_dir.glob("*.joblib")))
    scale = np.linspace(0.5, 1.5, 4, dtype=np.float32)
    rows = np.asarray(IRIS_ROWS * 50, dtype=np.float32) * scale
    for batch in (rows, rows.astype(np.float64), rows.astype(np.int64)):
        assert np.array_equal(model._predict(batch), reference.predict(batch))
    for bad in (np.nan, np.inf, -np.inf):
        with_bad = rows.copy()
        with_bad[3, 1] = bad
        with pytest.raises(InvalidInput, match=r"NaN|infinity"):
            model.predict(with_bad)
    # scikit-learn's per-thread setting is put back as it was found
    import sklearn

    assert sklearn.get_config()["assume_finite"] is False
    with sklearn.config_context(assume_finite=True):
        model._predict(rows)
        assert sklearn.get_config()["assume_finite"] is True
    assert sklearn.get_config()["assume_finite"] is False
