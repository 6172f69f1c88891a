"""Remembered plans: keyed on everything they depend on, replayed by the second run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from moorage.controller.local.plans import load_plan, plan_key, save_plan
from moorage.controller.local.runner import Prepared
from moorage.controller.local.spec import ProcessSpec

FAKE = Path(__file__).parent / "data" / "fake_server.py"


def prepared(specs: int = 1) -> Prepared:
    spec = ProcessSpec(
        component="predictor",
        argv=["python", "-m", "x"],
        env={"A": "1"},
        cwd=Path("/tmp"),
        http_port=1,
        grpc_port=2,
        model_name="m",
    )
    return Prepared(
        name="m",
        runtime="r",
        storage_uri="./model",
        base_dir=Path("/tmp"),
        model_dir=Path("/tmp/model"),
        in_place=True,
        specs=[spec] * specs,
    )


def test_key_follows_files_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "isvc.yaml"
    path.write_text("a: 1\n")
    key = plan_key([path], flags=["8080"])
    assert key == plan_key([path], flags=["8080"])
    assert key != plan_key([path], flags=["9090"])
    assert key != plan_key([path], flags=["8080"], python="/other/python")
    path.write_text("a: 2\n")
    assert key != plan_key([path], flags=["8080"])
    assert plan_key([tmp_path / "missing.yaml"], flags=[]) is None


def test_round_trip_and_transformers_are_not_saved(tmp_path: Path) -> None:
    assert save_plan(tmp_path, "k" * 64, prepared())
    assert load_plan(tmp_path, "k" * 64) == prepared()
    assert load_plan(tmp_path, "x" * 64) is None
    assert not save_plan(tmp_path, "t" * 64, prepared(specs=2))
    (tmp_path / "runs" / ("k" * 32 + ".json")).write_text("{broken")
    assert load_plan(tmp_path, "k" * 64) is None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_once(isvc: Path, cache: Path, port: int, grpc: int) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-m", "moorage.controller", "run", "-f", str(isvc), "--port", str(port),
         "--grpc-port", str(grpc), "--cache-dir", str(cache), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        lines.append(line)
        if "Press Ctrl-C" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, "".join(lines) + rest
    return "".join(lines) + rest


def test_second_run_replays_the_plan(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    docs = [
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": "demo"},
            "spec": {
                "predictor": {"model": {"modelFormat": {"name": "fake"}, "storageUri": "./model"}}
            },
        },
        {
            "apiVersion": "serving.kserve.io/v1alpha1",
            "kind": "ServingRuntime",
            "metadata": {"name": "fake"},
            "spec": {
                "supportedModelFormats": [{"name": "fake", "autoSelect": True}],
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": "fake:1",
                        "command": ["python", str(FAKE)],
                        "args": ["--model_name={{.Name}}", "--model_dir=/mnt/models"],
                    }
                ],
            },
        },
    ]
    isvc = tmp_path / "isvc.yaml"
    isvc.write_text(yaml.safe_dump_all(docs))
    cache = tmp_path / "cache"
    port, grpc = _free_port(), _free_port()
    first = _run_once(isvc, cache, port, grpc)
    assert "demo is ready" in first and "reusing its plan" not in first
    second = _run_once(isvc, cache, port, grpc)
    assert "reusing its plan" in second and "demo is ready" in second
    isvc.write_text(isvc.read_text() + "\n# edited\n")
    third = _run_once(isvc, cache, port, grpc)
    assert "reusing its plan" not in third
    assert os.listdir(cache / "runs")
