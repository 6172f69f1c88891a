"""``Model`` stages: sync/async detection once, arity, response headers, sync execution modes."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from moorage.core.errors import InferenceError, ModelNotFound, ModelNotReady, Overloaded
from moorage.server import DataPlane, Model, ModelRepository, ModelServer
from moorage.server.dataplane import InferenceEvent
from moorage.server.model import BoundModel, Stage


class Recorder(Model):
    def __init__(self) -> None:
        super().__init__("rec")
        self.ready = True
        self.threads: list[str] = []

    def predict(self, payload: Any, headers: Any = None) -> Any:
        self.threads.append(threading.current_thread().name)
        return {"predictions": payload["instances"]}


async def test_stage_arity_and_async() -> None:
    def one(x: Any) -> Any:
        return ("one", x)

    def two(x: Any, headers: Any = None) -> Any:
        return ("two", headers)

    def kw(x: Any, headers: Any = None, **kwargs: Any) -> Any:
        kwargs["response_headers"]["k"] = "v"
        return "kw"

    async def three(x: Any, headers: Any = None, response_headers: Any = None) -> Any:
        response_headers["a"] = "b"
        return "three"

    rh: dict[str, str] = {}
    assert await Stage(one, "p", "inline")(1, {}, rh) == ("one", 1)
    assert await Stage(two, "p", "thread")(1, {"h": "1"}, rh) == ("two", {"h": "1"})
    assert await Stage(kw, "p", "auto")(1, {}, rh) == "kw"
    stage = Stage(three, "p", "auto")
    assert stage.is_async and stage.runs_inline
    assert await stage(1, {}, rh) == "three"
    assert rh == {"k": "v", "a": "b"}


async def test_auto_mode_moves_cheap_sync_code_inline() -> None:
    model = Recorder()
    dataplane = _dataplane(model, sync_mode="auto")
    for _ in range(8):
        await dataplane.infer("rec", {"instances": [1]}, headers={}, protocol="v1")
    assert model.threads[0] != threading.current_thread().name  # measured in a thread first
    assert model.threads[-1] == threading.current_thread().name  # then trusted inline
    assert dataplane.repository.bound("rec").predict.runs_inline


async def test_auto_mode_moves_slow_sync_code_to_threads() -> None:
    stage = Stage(lambda x, h: x, "p", "auto")
    for _ in range(5):
        stage._measure(0.0001, 0.0001)
    assert stage.runs_inline
    for _ in range(10):
        stage._measure(0.05, 0.05)  # expensive
    assert not stage.runs_inline
    for _ in range(20):
        stage._measure(0.0025, 0.0002)  # cheap but slowed down by a busy machine
    assert stage.runs_inline
    for _ in range(20):
        stage._measure(0.05, 0.0001)  # waits (I/O): a thread lets the loop go on
    assert not stage.runs_inline


async def test_thread_and_inline_modes() -> None:
    for mode, inline in (("thread", False), ("inline", True)):
        model = Recorder()
        dataplane = _dataplane(model, sync_mode=mode)
        await dataplane.infer("rec", {"instances": [1]}, headers={}, protocol="v1")
        assert (model.threads[0] == threading.current_thread().name) is inline


async def test_dataplane_errors_and_hooks() -> None:
    class Hook:
        def __init__(self) -> None:
            self.events: list[InferenceEvent] = []

        def on_request(self, event: InferenceEvent) -> None:
            self.events.append(event)

        def on_response(self, event: InferenceEvent) -> None:
            assert event in self.events

    class Broken(Model):
        def predict(self, payload: Any, headers: Any = None) -> Any:
            raise KeyError("k")

    broken = Broken("broken")
    broken.ready = True
    dataplane = _dataplane(Recorder(), broken)
    hook = Hook()
    dataplane.hooks.append(hook)
    result, _ = await dataplane.infer("rec", {"instances": [2]}, headers={}, protocol="v1")
    assert result == {"predictions": [2]}
    event = hook.events[0]
    assert set(event.timings) == {"preprocess", "predict", "postprocess"}
    assert event.response == result and event.error is None
    with pytest.raises(InferenceError, match="model 'broken' failed in predict: KeyError"):
        await dataplane.infer("broken", {}, headers={})
    assert isinstance(hook.events[-1].error, InferenceError)
    with pytest.raises(ModelNotFound):
        await dataplane.infer("nope", {}, headers={})
    broken.ready = False
    with pytest.raises(ModelNotReady):
        await dataplane.infer("broken", {}, headers={})
    dataplane.repository.bound("rec").inflight = dataplane.max_inflight
    with pytest.raises(Overloaded):
        await dataplane.infer("rec", {}, headers={})


def test_registration_checks() -> None:
    with pytest.raises(TypeError):
        BoundModel(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"model\.name"):
        BoundModel(Model(""))


async def test_model_server_refuses_when_no_model_is_ready() -> None:
    from moorage.core.config.server import ServerSettings

    server = ModelServer(ServerSettings(http_port=0, grpc_port=0, enable_grpc=False))
    with pytest.raises(ModelNotReady, match="Model with name lonely is not ready"):
        await server.serve([Model("lonely")])


async def test_model_server_serves_and_stops_in_process() -> None:
    import httpx

    from moorage.core.config.server import ServerSettings

    model = Recorder()
    server = ModelServer(ServerSettings(host="127.0.0.1", http_port=0, grpc_port=0))
    task = asyncio.create_task(server.serve([model]))
    for _ in range(200):
        await asyncio.sleep(0.02)
        if server.http_port and server._uvicorn is not None and server._uvicorn.started:
            break
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
        response = await client.post("/v1/models/rec:predict", json={"instances": [5]})
        assert response.json() == {"predictions": [5]}
    assert server.grpc_port
    server.stop()
    await asyncio.wait_for(task, 10)
    assert not model.ready  # stopped


def _dataplane(*models: Model, sync_mode: Any = "auto") -> DataPlane:
    repository = ModelRepository(sync_mode=sync_mode)
    for model in models:
        repository.update(model)
    return DataPlane(repository, max_inflight=8)


def test_identity_stages_are_skipped() -> None:
    bound = BoundModel(Recorder())
    assert bound.preprocess is None and bound.postprocess is None

    class Pre(Recorder):
        def preprocess(self, payload: Any, headers: Any = None) -> Any:
            return payload

    bound = BoundModel(Pre())
    assert bound.preprocess is not None and bound.postprocess is None


async def test_inline_stage_keeps_sampling() -> None:
    calls: list[int] = []
    stage = Stage(lambda x, h: calls.append(x), "p", "auto")
    for _ in range(5):
        stage._measure(0.0001, 0.0001)
    assert stage.runs_inline
    seen = stage._seen
    for i in range(16):
        await stage(i, {}, {})
    assert stage._seen == seen + 2  # one call in 8 is timed
    assert calls == list(range(16))
