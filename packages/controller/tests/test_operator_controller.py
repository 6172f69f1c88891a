"""The operator's work queue and reconcile with a recording client: no API server.

What is sent for a snapshot (applies, deletes, status patches, Events), that a second reconcile
sends nothing, that API failures come back after a backoff and bad input is reported once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import kopf
import pytest

from moorage.controller.operator.apply import ObjectRef, ref
from moorage.controller.operator.client import RateLimiter
from moorage.controller.operator.controller import Controller, slim
from moorage.core.resources import builtin_runtimes
from moorage.core.retry import Backoff

KEY = ("ns", "iris")


class Recorder:
    """Stands in for KubeClient: records calls, answers applies with the object as stored."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_next: list[BaseException] = []
        self.generation = 1

    def _maybe_fail(self) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        self._maybe_fail()
        self.calls.append(("apply", ref(obj)))
        meta = {**obj["metadata"], "generation": self.generation, "uid": "x"}
        return {**obj, "metadata": meta}

    async def delete(self, target: ObjectRef) -> None:
        self._maybe_fail()
        self.calls.append(("delete", target))

    async def patch_status(self, isvc: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
        self._maybe_fail()
        self.calls.append(("status", dict(patch)))

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        self._maybe_fail()
        self.calls.append(("event", obj["reason"]))
        return dict(obj)

    def kinds(self) -> list[str]:
        return [c[0] for c in self.calls]


def _isvc(fmt: str = "sklearn", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": {
            "predictor": {"model": {"modelFormat": {"name": fmt}, "storageUri": "gs://b/m"}},
            **spec,
        },
    }


@pytest.fixture
def controller() -> Controller:
    client = Recorder()
    backoff = Backoff(attempts=100, initial=0.01, maximum=0.05, jitter=False)
    controller = Controller(
        client,  # type: ignore[arg-type]
        config_namespace="kserve",
        workers=2,
        now=lambda: "2026-01-01T00:00:00Z",
        backoff=backoff,
    )
    [runtime] = [r for r in builtin_runtimes() if r.name == "kserve-sklearnserver"]
    controller.snapshot.cluster_runtimes["kserve-sklearnserver"] = runtime.to_dict()
    return controller


def _observe(controller: Controller) -> None:
    """What the watches would bring back: the applied objects as they are."""
    client: Recorder = controller.client  # type: ignore[assignment]
    owned = controller.snapshot.owned.setdefault(KEY, {})
    for target, obj in list(owned.items()):
        owned[target] = {**obj, "metadata": {**obj["metadata"], "generation": client.generation}}


async def test_reconcile_applies_then_sends_nothing_more(controller: Controller) -> None:
    client: Recorder = controller.client  # type: ignore[assignment]
    controller.snapshot.isvcs[KEY] = _isvc()
    await controller.reconcile(KEY)
    assert client.kinds() == ["apply"] * 4 + ["status"]
    status = client.calls[-1][1]
    assert status["observedGeneration"] == 1
    assert {c["type"] for c in status["conditions"]} >= {"Ready", "PredictorReady"}
    # The watch brings the written status and the objects: nothing to send again.
    controller.snapshot.isvcs[KEY] = {**_isvc(), "status": status}
    _observe(controller)
    client.calls.clear()
    await controller.reconcile(KEY)
    assert client.calls == []
    # Someone edits the Deployment's spec (its generation moves): applied again.
    client.generation = 2
    target = ObjectRef("Deployment", "ns", "iris-predictor")
    deployment = controller.snapshot.owned[KEY][target]
    controller.snapshot.owned[KEY][target] = {
        **deployment, "metadata": {**deployment["metadata"], "generation": 5},
    }  # fmt: skip
    await controller.reconcile(KEY)
    assert client.kinds() == ["apply"] * 4


async def test_a_removed_transformer_is_pruned(controller: Controller) -> None:
    client: Recorder = controller.client  # type: ignore[assignment]
    transformer = {"containers": [{"name": "kserve-container", "image": "t"}]}
    controller.snapshot.isvcs[KEY] = _isvc(transformer=transformer)
    await controller.reconcile(KEY)
    assert client.kinds().count("apply") == 7
    controller.snapshot.isvcs[KEY] = _isvc()
    client.calls.clear()
    await controller.reconcile(KEY)
    deleted = [c[1] for c in client.calls if c[0] == "delete"]
    assert deleted == [
        ObjectRef("Deployment", "ns", "iris-transformer"),
        ObjectRef("HorizontalPodAutoscaler", "ns", "iris-transformer"),
        ObjectRef("Service", "ns", "iris-transformer"),
    ]


async def test_objects_owned_by_someone_else_are_left_alone(controller: Controller) -> None:
    client: Recorder = controller.client  # type: ignore[assignment]
    controller.snapshot.isvcs[KEY] = _isvc()
    foreign = {"kind": "Service", "metadata": {"name": "iris-transformer", "namespace": "ns",
               "ownerReferences": [{"uid": "other", "controller": True}]}}  # fmt: skip
    controller.snapshot.owned[KEY] = {
        ObjectRef("Service", "ns", "iris-transformer"): slim(foreign, status=False)
    }
    await controller.reconcile(KEY)
    assert "delete" not in client.kinds()


async def test_bad_input_applies_nothing_and_records_one_event(controller: Controller) -> None:
    client: Recorder = controller.client  # type: ignore[assignment]
    controller.snapshot.isvcs[KEY] = _isvc(fmt="caffe")
    await controller.reconcile(KEY)
    assert client.kinds() == ["event", "status"]
    assert client.calls[0] == ("event", "NoSupportingRuntime")
    status = client.calls[1][1]
    assert status["modelStatus"]["lastFailureInfo"]["reason"] == "NoSupportingRuntime"
    controller.snapshot.isvcs[KEY] = {**_isvc(fmt="caffe"), "status": status}
    client.calls.clear()
    await controller.reconcile(KEY)
    assert client.calls == []  # the same failure: no second Event, no status write


async def test_api_errors_are_retried_with_backoff(controller: Controller) -> None:
    client: Recorder = controller.client  # type: ignore[assignment]
    client.fail_next = [
        kopf.TemporaryError("503: unavailable", delay=0.0),
        kopf.TemporaryError("409: conflict", delay=0.0),
    ]
    controller.snapshot.isvcs[KEY] = _isvc()
    controller.start()
    try:
        controller.enqueue(KEY)
        for _ in range(200):
            if "status" in client.kinds():
                break
            await asyncio.sleep(0.01)
        timers_left = len(controller._timers)
    finally:
        await controller.stop()
    assert client.kinds() == ["apply"] * 4 + ["status"]
    assert timers_left == 0  # fired retry timers are not kept


async def test_a_key_is_queued_once(controller: Controller) -> None:
    client: Recorder = controller.client  # type: ignore[assignment]
    controller.snapshot.isvcs[KEY] = _isvc()
    for _ in range(50):
        controller.enqueue(KEY)
    controller.start()
    try:
        await asyncio.wait_for(controller.idle.wait(), 5)
    finally:
        await controller.stop()
    assert client.kinds().count("status") == 1


async def test_a_deleted_inferenceservice_is_forgotten(controller: Controller) -> None:
    client: Recorder = controller.client  # type: ignore[assignment]
    controller.snapshot.isvcs[KEY] = _isvc()
    await controller.reconcile(KEY)
    assert len(controller.deps) == 1
    del controller.snapshot.isvcs[KEY]
    client.calls.clear()
    await controller.reconcile(KEY)
    assert client.calls == [] and len(controller.deps) == 0


def test_rate_limiter_allows_bursts_then_paces() -> None:
    now = [0.0]
    limiter = RateLimiter(10.0, 3, clock=lambda: now[0])
    assert [limiter.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.reserve() == pytest.approx(0.1)
    assert limiter.reserve() == pytest.approx(0.2)
    now[0] = 10.0  # refilled, up to the burst
    assert [limiter.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert RateLimiter(0.0, 1).reserve() == 0.0


async def test_modelmesh_inferenceservices_are_left_to_modelmesh(controller: Controller) -> None:
    client: Recorder = controller.client  # type: ignore[assignment]
    isvc = _isvc()
    isvc["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "ModelMesh"}
    controller.snapshot.isvcs[KEY] = isvc
    await controller.reconcile(KEY)
    assert client.calls == []
