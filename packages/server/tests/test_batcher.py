"""The in-process batcher (``--enable_batcher``): joining and splitting, the queue's rules, and
a real moorage-server under concurrent load over REST v1, REST v2 and gRPC."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from moorage.core.config.huggingface import HuggingFaceSettings
from moorage.core.config.server import ServerSettings
from moorage.core.errors import InvalidInput, Timeout
from moorage.core.protocol import InferRequest, InferResponse, InferTensor, RequestedOutput
from moorage.core.protocol.grpc import METHODS, SERVICE_NAME, request_to_proto, response_from_proto
from moorage.server import DataPlane, Model, ModelRepository
from moorage.server.batcher import Batcher, BatchPolicy, join, prepare, split
from moorage.server.model import BoundModel

from .test_integration import Server, start, stop

FEATURES = 20


# ---------------------------------------------------------------------- join and split
def _v2(rows: np.ndarray, **kwargs: Any) -> InferRequest:
    return InferRequest("m", [InferTensor.from_numpy("input-0", rows)], **kwargs)


def test_v2_requests_join_along_dim_0_and_split_back() -> None:
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.full((1, 3), 9, dtype=np.float32)
    ea, eb = prepare(_v2(a, id="a")), prepare(_v2(b, id="b"))
    assert ea is not None and eb is not None
    assert (ea.rows, eb.rows) == (2, 1) and ea.key == eb.key
    joint = join([_v2(a, id="a"), _v2(b, id="b")])
    assert joint.inputs[0].shape == (3, 3)
    assert joint.inputs[0].data.tolist() == [*a.tolist(), *b.tolist()]
    result = InferResponse(
        "m",
        [
            InferTensor.from_numpy("out", joint.inputs[0].data.sum(axis=1)),
            InferTensor.from_numpy("rows", joint.inputs[0].data),
        ],
    )
    parts = split(result, [_v2(a, id="a"), _v2(b, id="b")], [2, 1])
    assert parts is not None
    assert [p.id for p in parts] == ["a", "b"]
    assert parts[0].output("out").data.tolist() == [3, 12]
    assert parts[1].output("out").data.tolist() == [27]
    assert parts[1].output("rows").shape == (1, 3)


def test_v2_keys_separate_what_cannot_share_a_batch() -> None:
    base = prepare(_v2(np.zeros((1, 3), dtype=np.float32)))
    assert base is not None
    others = [
        _v2(np.zeros((1, 4), dtype=np.float32)),  # width
        _v2(np.zeros((1, 3), dtype=np.float64)),  # datatype
        _v2(np.zeros((1, 3), dtype=np.float32), parameters={"scale": 2}),
        _v2(np.zeros((1, 3), dtype=np.float32), outputs=[RequestedOutput("out")]),
        InferRequest("m", [InferTensor.from_numpy("other", np.zeros((1, 3), np.float32))]),
    ]
    for request in others:
        entry = prepare(request)
        assert entry is not None and entry.key != base.key
    binary = prepare(_v2(np.zeros((2, 3), np.float32), parameters={"binary_data_output": True}))
    assert binary is not None and binary.key == base.key  # only how the response is written


def test_what_goes_alone() -> None:
    scalar = InferRequest("m", [InferTensor.from_numpy("x", np.float32(1))])
    ragged = InferRequest(
        "m",
        [
            InferTensor.from_numpy("x", np.zeros((2, 3), np.float32)),
            InferTensor.from_numpy("y", np.zeros((3, 1), np.float32)),
        ],
    )
    assert prepare(scalar) is None and prepare(ragged) is None
    assert prepare(_v2(np.zeros((0, 3), np.float32))) is None
    assert prepare(_v2(np.zeros((1, 3), np.float32), parameters={"list": [1]})) is None
    assert prepare({"instances": [[1, 2], [3]]}) is None  # ragged
    assert prepare({"instances": [[1, 2]], "signature_name": "x"}) is None
    assert prepare({"inputs": [[1, 2]]}) is None
    assert prepare({"instances": []}) is None
    assert prepare({"instances": [{"a": 1}, [1]]}) is None
    assert prepare(np.zeros((2, 3))) is None


def test_v1_rows_join_and_split() -> None:
    one, two = {"instances": [[1, 2]]}, {"instances": [[3, 4], [5, 6]]}
    e1, e2 = prepare(one), prepare(two)
    assert e1 is not None and e2 is not None and e1.key == e2.key
    assert prepare({"instances": [[1, 2, 3]]}).key != e1.key  # type: ignore[union-attr]
    assert prepare({"instances": [[1.5, 2]]}).key != e1.key  # type: ignore[union-attr]
    records = prepare({"instances": [{"a": 1, "b": 2}]})
    assert records is not None and records.key == ("v1-records", ("a", "b"))
    joint = join([one, two])
    assert joint == {"instances": [[1, 2], [3, 4], [5, 6]]}
    assert split({"predictions": [10, 20, 30]}, [one, two], [1, 2]) == [
        {"predictions": [10]},
        {"predictions": [20, 30]},
    ]
    assert split([1, 2, 3], [one, two], [1, 2]) == [[1], [2, 3]]
    assert split({"predictions": [1, 2]}, [one, two], [1, 2]) is None  # not one per row
    assert split({"predictions": [1, 2, 3], "extra": 1}, [one, two], [1, 2]) is None
    assert (
        split(InferResponse("m", [InferTensor.from_numpy("o", np.ones(2))]), [one, two], [1, 2])
        is None
    )


# ---------------------------------------------------------------------- the queue, in process
class RowModel(Model):
    """Row ``[i, ...]`` predicts ``i * 10``; rows with a negative first value are refused. It
    records every call's row count and answers the batch's size in a response header."""

    def __init__(self, name: str = "rows", *, delay: float = 0.0) -> None:
        super().__init__(name)
        self.ready = True
        self.calls: list[int] = []
        self.delay = delay

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        if self.delay:
            await asyncio.sleep(self.delay)
        rows = (
            payload.inputs[0].as_numpy()
            if isinstance(payload, InferRequest)
            else np.asarray(payload["instances"])
        )
        self.calls.append(len(rows))
        if (rows[:, 0] < 0).any():
            raise InvalidInput("negative rows are refused")
        if response_headers is not None:
            response_headers["x-batch-rows"] = str(len(rows))
        out = rows[:, 0] * 10
        if isinstance(payload, InferRequest):
            return InferResponse(self.name, [InferTensor.from_numpy("out", out)], id=payload.id)
        return {"predictions": out.tolist()}


def _plane(model: Model, **policy: Any) -> DataPlane:
    repository = ModelRepository("/nonexistent")
    repository.update(model)
    policy.setdefault("max_latency", 0.05)
    return DataPlane(repository, max_inflight=64, batcher=Batcher(BatchPolicy(**policy)))


async def _infer(plane: DataPlane, payload: Any, **kwargs: Any) -> tuple[Any, dict[str, str]]:
    return await plane.infer("rows", payload, headers={}, **kwargs)


async def test_concurrent_callers_each_get_their_own_rows() -> None:
    model = RowModel()
    plane = _plane(model, max_batch_size=8)
    requests = [_v2(np.array([[i, 0.5]], dtype=np.float32), id=f"r{i}") for i in range(20)]
    results = await asyncio.gather(*(_infer(plane, r) for r in requests))
    for i, (response, _) in enumerate(results):
        assert response.id == f"r{i}"
        assert response.output("out").data.tolist() == [i * 10]
    assert sum(model.calls) == 20 and max(model.calls) <= 8 and len(model.calls) < 20
    assert any(int(h["x-batch-rows"]) > 1 for _, h in results)


async def test_v1_callers_with_several_rows() -> None:
    model = RowModel()
    plane = _plane(model, max_batch_size=32)
    bodies = [{"instances": [[i, 1], [i + 100, 1]]} for i in range(10)]
    results = await asyncio.gather(*(_infer(plane, b, protocol="v1") for b in bodies))
    for i, (response, _) in enumerate(results):
        assert response == {"predictions": [i * 10, (i + 100) * 10]}
    assert len(model.calls) < 10


async def test_a_bad_caller_gets_only_its_own_error() -> None:
    model = RowModel()
    plane = _plane(model)
    bodies = [_v2(np.array([[i, 0]], dtype=np.float32)) for i in range(6)]
    bodies[3] = _v2(np.array([[-1, 0]], dtype=np.float32))  # joins, then fails the batch
    bodies.append(_v2(np.zeros((1, 5), dtype=np.float32)))  # another width: its own batch
    outcomes = await asyncio.gather(*(_infer(plane, b) for b in bodies), return_exceptions=True)
    assert isinstance(outcomes[3], InvalidInput) and "negative" in str(outcomes[3])
    for i in (0, 1, 2, 4, 5):
        response, _ = outcomes[i]  # type: ignore[misc]
        assert response.output("out").data.tolist() == [i * 10]
    assert not isinstance(outcomes[6], BaseException)


async def test_a_lone_request_is_not_held_back() -> None:
    plane = _plane(RowModel(), max_latency=30.0)  # idle model: no waiting for company
    response, _ = await asyncio.wait_for(_infer(plane, _v2(np.ones((1, 2), np.float32))), 5)
    assert response.output("out").data.tolist() == [10]


async def test_a_batch_waits_at_most_max_latency_behind_a_running_one() -> None:
    model = RowModel(delay=1.0)
    plane = _plane(model, max_latency=0.05)
    first = asyncio.ensure_future(_infer(plane, _v2(np.ones((1, 2), np.float32))))
    await asyncio.sleep(0.2)  # the first batch runs (1 s)
    second = await asyncio.wait_for(_infer(plane, _v2(np.full((1, 2), 2, np.float32))), 1.9)
    assert second[0].output("out").data.tolist() == [20]
    await first


async def test_a_cancelled_caller_leaves_the_batch_alone() -> None:
    model = RowModel(delay=0.2)
    plane = _plane(model)
    tasks = [
        asyncio.ensure_future(_infer(plane, _v2(np.array([[i, 0]], np.float32)))) for i in range(5)
    ]
    await asyncio.sleep(0)
    tasks[2].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[2], asyncio.CancelledError)
    assert [d[0].output("out").data.tolist() for i, d in enumerate(done) if i != 2] == [  # type: ignore[index]
        [0], [10], [30], [40],
    ]  # fmt: skip


async def test_a_failure_of_the_batcher_itself_reaches_every_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("split broke")

    monkeypatch.setattr("moorage.server.batcher.split", broken)
    plane = _plane(RowModel())
    requests = [_v2(np.full((1, 2), i, np.float32)) for i in range(4)]
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(_infer(plane, r) for r in requests), return_exceptions=True), 5
    )
    assert all("split broke" in str(o) for o in outcomes), outcomes


async def test_timeout_answers_504_and_the_batch_goes_on() -> None:
    model = RowModel(delay=0.5)
    plane = _plane(model, timeout=0.1)
    with pytest.raises(Timeout, match="batcher timeout"):
        await _infer(plane, _v2(np.ones((1, 2), np.float32)))
    await asyncio.sleep(0.6)
    assert model.calls == [1]


async def test_a_model_whose_result_is_not_per_row_stops_being_batched() -> None:
    class Total(RowModel):
        async def predict(
            self, payload: Any, headers: Any = None, response_headers: Any = None
        ) -> Any:
            rows = payload.inputs[0].as_numpy()
            self.calls.append(len(rows))
            return InferResponse(self.name, [InferTensor.from_numpy("sum", [rows.sum()])])

    model = Total()
    plane = _plane(model)
    requests = [_v2(np.full((1, 2), i, np.float32)) for i in range(4)]
    results = await asyncio.gather(*(_infer(plane, r) for r in requests))
    assert [r.output("sum").data.tolist() for r, _ in results] == [[0], [2], [4], [6]]
    model.calls.clear()
    await asyncio.gather(*(_infer(plane, r) for r in requests))
    assert model.calls == [1, 1, 1, 1]


async def test_models_that_batch_themselves_are_left_alone() -> None:
    class NoBatch(RowModel):
        batchable = False

    model = NoBatch()
    plane = _plane(model)
    await asyncio.gather(*(_infer(plane, _v2(np.ones((1, 2), np.float32))) for _ in range(4)))
    assert model.calls == [1, 1, 1, 1]


async def test_explain_and_big_requests_are_not_batched() -> None:
    model = RowModel()
    bound = BoundModel(model)
    batcher = Batcher(BatchPolicy(max_batch_size=2, max_latency=0.05))
    big = _v2(np.ones((2, 2), np.float32))
    results = await asyncio.gather(*(batcher.predict(bound, big, {}, {}) for _ in range(3)))
    assert model.calls == [2, 2, 2] and all(r.output("out").shape == (2,) for r in results)


def test_flags_and_the_llm_runtimes_max_batch_size() -> None:
    s = ServerSettings.from_cli(
        ["--enable_batcher", "--max_batchsize", "8", "--max_batch_size", "4"]
    )
    assert (s.enable_batcher, s.max_batchsize, s.max_latency) == (True, 8, 5000)
    assert HuggingFaceSettings.from_args(s.extra_args).max_batch_size == 4
    agent = ServerSettings.from_cli(
        ["--enable-batcher", "--max-batchsize", "16", "--max-latency", "10"]
    )
    assert (agent.enable_batcher, agent.max_batchsize, agent.max_latency) == (True, 16, 10)
    off = ServerSettings.from_cli(["--enable_batcher", "false", "--batcher_timeout", "2"])
    assert off.enable_batcher is False and off.batcher_timeout == 2


# ---------------------------------------------------------------------- a real server
@pytest.fixture(scope="module")
def rowid_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A joblib DecisionTreeRegressor that predicts each of its 64 training rows' index."""
    import joblib
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, FEATURES)).astype(np.float32)
    path = tmp_path_factory.mktemp("rowid")
    joblib.dump(DecisionTreeRegressor().fit(x, np.arange(64)), path / "model.joblib")
    np.save(path / "rows.npy", x)
    return path


@pytest.fixture(scope="module", params=["native", "grpcio"])
def batching_server(
    request: pytest.FixtureRequest, rowid_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("batching") / "server.log"
    server = start(
        [
            "--model_name", "rowid", "--model_dir", str(rowid_dir),
            "--enable_batcher", "--max_batchsize", "16", "--max_latency", "20",
            "--grpc_server", request.param,
        ],
        log,
        until="/v2/health/ready",
    )  # fmt: skip
    yield server
    stop(server)


def _batch_rows(server: Server) -> tuple[float, float]:
    """(batched predict calls, rows in them) from /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith('moorage_server_batch_rows_count{model="rowid"}'):
            count = float(line.split()[-1])
        if line.startswith('moorage_server_batch_rows_sum{model="rowid"}'):
            total = float(line.split()[-1])
    return count, total


CLIENTS = 32


def _hammer(server: Server, call: Any, rows: np.ndarray, rounds: int = 3) -> None:
    """``CLIENTS`` threads, each sending its own rows ``rounds`` times, checking every answer;
    then that some predict call held several requests' rows."""
    before = _batch_rows(server)

    def client(c: int) -> None:
        for r in range(rounds):
            i = (c * rounds + r) % len(rows)
            j = (i + 1) % len(rows)
            picked = [i] if c % 3 else [i, j]  # some callers send two rows
            assert call(rows[picked]) == picked, f"client {c} got someone else's rows"

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))
    count, total = _batch_rows(server)
    assert total - before[1] > count - before[0], "no predict call held several requests"


def test_rest_v2_callers_never_get_each_others_rows(
    batching_server: Server, rowid_dir: Path
) -> None:
    rows = np.load(rowid_dir / "rows.npy")
    with httpx.Client(
        base_url=batching_server.url, timeout=30, limits=httpx.Limits(max_connections=CLIENTS)
    ) as http:

        def call(x: np.ndarray) -> list[int]:
            body = {
                "inputs": [
                    {
                        "name": "input-0",
                        "datatype": "FP32",
                        "shape": list(x.shape),
                        "data": x.ravel().tolist(),
                    }
                ]
            }
            response = http.post("/v2/models/rowid/infer", json=body)
            assert response.status_code == 200, response.text
            return [round(v) for v in response.json()["outputs"][0]["data"]]

        _hammer(batching_server, call, rows)


def test_rest_v1_callers_never_get_each_others_rows(
    batching_server: Server, rowid_dir: Path
) -> None:
    rows = np.load(rowid_dir / "rows.npy").astype(np.float64)
    with httpx.Client(
        base_url=batching_server.url, timeout=30, limits=httpx.Limits(max_connections=CLIENTS)
    ) as http:

        def call(x: np.ndarray) -> list[int]:
            response = http.post("/v1/models/rowid:predict", json={"instances": x.tolist()})
            assert response.status_code == 200, response.text
            return [round(v) for v in response.json()["predictions"]]

        _hammer(batching_server, call, rows)


def test_grpc_callers_never_get_each_others_rows(batching_server: Server, rowid_dir: Path) -> None:
    rows = np.load(rowid_dir / "rows.npy")
    request_cls, response_cls = METHODS["ModelInfer"]
    with grpc.insecure_channel(f"127.0.0.1:{batching_server.grpc}") as channel:
        infer = channel.unary_unary(
            f"/{SERVICE_NAME}/ModelInfer",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )

        def call(x: np.ndarray) -> list[int]:
            message = request_to_proto(
                InferRequest("rowid", [InferTensor.from_numpy("input-0", x)], id="me")
            )
            reply = response_from_proto(infer(message, timeout=30))
            assert reply.id == "me"
            return [round(v) for v in reply.output("output-0").data.tolist()]

        _hammer(batching_server, call, rows)


def test_bad_callers_among_good_ones_get_their_own_errors(
    batching_server: Server, rowid_dir: Path
) -> None:
    rows = np.load(rowid_dir / "rows.npy")

    def call(c: int) -> tuple[int, Any]:
        with httpx.Client(base_url=batching_server.url, timeout=30) as http:
            # Every fourth caller sends the wrong width: its own batch, which the model refuses.
            x = np.zeros((1, FEATURES - 3), np.float32) if c % 4 == 0 else rows[[c]]
            body = {
                "inputs": [
                    {
                        "name": "input-0",
                        "datatype": "FP32",
                        "shape": list(x.shape),
                        "data": x.ravel().tolist(),
                    }
                ]
            }
            response = http.post("/v2/models/rowid/infer", json=body)
            return response.status_code, response.json()

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(call, range(16)))
    for c, (status, body) in enumerate(outcomes):
        if c % 4 == 0:
            assert status == 400 and "features" in body["error"], body
        else:
            assert status == 200 and round(body["outputs"][0]["data"][0]) == c


SLOW_MODEL = """
    import time
    from moorage.server import Model, ModelServer

    class Slow(Model):
        def load(self):
            self.ready = True
            return True

        def predict(self, payload, headers=None):
            time.sleep(0.5)
            return {"predictions": [len(payload["instances"])] * len(payload["instances"])}

    if __name__ == "__main__":
        model = Slow("slow")
        model.load()
        ModelServer().start([model])
"""


def test_overloaded_when_the_queue_is_full_and_lone_requests_complete(tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(SLOW_MODEL))
    server = start(
        ["--enable_batcher", "--max_latency", "50", "--max_inflight_requests", "3"],
        tmp_path / "server.log",
        script=script,
        until="/v2/health/ready",
    )
    try:
        lone = httpx.post(
            f"{server.url}/v1/models/slow:predict", json={"instances": [[1]]}, timeout=10
        )
        assert lone.status_code == 200 and lone.json() == {"predictions": [1]}

        def call(_: int) -> int:
            body = {"instances": [[1]]}
            return httpx.post(
                f"{server.url}/v1/models/slow:predict", json=body, timeout=30
            ).status_code

        with ThreadPoolExecutor(10) as pool:
            statuses = list(pool.map(call, range(10)))
        assert statuses.count(503) >= 1 and statuses.count(200) >= 3, statuses
        assert set(statuses) <= {200, 503}
    finally:
        stop(server)
