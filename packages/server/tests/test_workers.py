"""``--workers N``: the supervisor replaces a worker that dies, brakes a crash loop, and does not
replace a worker that could not start. The real process for the first and the last; the brake
is arithmetic on the supervisor's state."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from moorage.core.retry import Backoff
from moorage.server.workers import BOOT_FAILED, Supervisor

from .conftest import IRIS_ROWS
from .test_integration import start, stop

READY = re.compile(r"^\S+ (\d+) .*moorage-server ready", re.MULTILINE)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# ----------------------------------------------------------------------------- real process
@pytest.mark.integration
@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_the_server_keeps_answering(
    iris_dir: Path, tmp_path: Path
) -> None:
    server = start(
        ["--model_name", "iris", "--model_dir", str(iris_dir), "--workers", "2"],
        tmp_path / "workers.log",
    )

    def ready_pids() -> list[int]:
        return [int(pid) for pid in READY.findall(server.output())]

    try:
        wait_for(lambda: len(ready_pids()) >= 2, "two ready workers")
        first = ready_pids()
        assert server.process.pid not in first
        victim = first[0]
        os.kill(victim, signal.SIGKILL)
        # The survivor answers at once; the replacement comes up beside it.
        with httpx.Client(base_url=server.url) as client:
            for _ in range(5):
                response = client.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
                assert response.json() == {"predictions": [1, 1]}
        wait_for(lambda: len(ready_pids()) >= 3, "a replacement worker")
        replacement = ready_pids()[2]
        assert replacement not in first
        os.kill(replacement, 0)  # alive
        output = server.output()
        assert f"(pid {victim}) was killed by SIGKILL" in output, output
        assert f"(pid {replacement}) in place of the one that died" in output, output
        with httpx.Client(base_url=server.url) as client:
            for _ in range(10):  # new connections, spread over both workers
                response = client.post(
                    "/v1/models/iris:predict",
                    json={"instances": IRIS_ROWS},
                    headers={"connection": "close"},
                )
                assert response.json() == {"predictions": [1, 1]}
    finally:
        assert stop(server) == 0, server.output()


@pytest.mark.integration
@pytest.mark.slow
def test_workers_that_cannot_start_are_not_replaced(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.joblib").write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="server exited 1") as info:
        start(
            ["--model_name", "broken", "--model_dir", str(model_dir), "--workers", "2"],
            tmp_path / "broken.log",
        )
    assert "failed to start; not replacing it" in str(info.value)
    assert "in place of the one that died" not in str(info.value)


# ----------------------------------------------------------------------------- the brake
def supervisor() -> Supervisor:
    backoff = Backoff(initial=0.5, maximum=4.0, jitter=False, immediate_first=True)
    return Supervisor(lambda: None, 2, min_uptime=10.0, backoff=backoff)


def die(sup: Supervisor, pid: int, *, lived: float, code: int = -signal.SIGKILL) -> float:
    """Report worker ``pid`` dead after ``lived`` seconds; the wait before its replacement."""
    sup.children[pid] = (0, time.monotonic() - lived)
    sup.pending.clear()
    before = time.monotonic()
    sup._reaped(pid, code)
    if not sup.pending:
        return -1.0  # not replaced
    ((due, index),) = sup.pending
    assert index == 0
    return round(due - before, 1)


def test_quick_deaths_in_a_row_wait_longer_and_a_long_life_resets_the_brake() -> None:
    sup = supervisor()
    waits = [die(sup, 100 + n, lived=0.5) for n in range(7)]
    assert waits == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert die(sup, 200, lived=60.0) == 0.0 and sup.fast_deaths == 0
    assert die(sup, 201, lived=1.0) == 0.0 and sup.fast_deaths == 1


def test_a_worker_that_failed_to_start_is_not_replaced() -> None:
    sup = supervisor()
    assert die(sup, 100, lived=0.5, code=BOOT_FAILED) == -1.0
    assert sup.status == 1


def test_during_shutdown_exits_are_recorded_not_replaced() -> None:
    sup = supervisor()
    sup.stopping = signal.SIGTERM
    assert die(sup, 100, lived=30.0, code=0) == -1.0 and sup.status == 0
    # A worker still loading its models ends by SIGTERM's default action: what was asked.
    assert die(sup, 102, lived=1.0, code=-signal.SIGTERM) == -1.0 and sup.status == 0
    assert die(sup, 101, lived=30.0, code=-signal.SIGKILL) == -1.0
    assert sup.status == -signal.SIGKILL
