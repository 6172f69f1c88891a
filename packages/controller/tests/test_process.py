"""Server processes never outlive moorage, even when moorage is killed outright."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

FAKE = Path(__file__).parent / "data" / "fake_server.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux only")
def test_sigkill_of_moorage_takes_the_server_down(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    runtime = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": "fake"},
        "spec": {
            "supportedModelFormats": [{"name": "fake", "autoSelect": True}],
            "containers": [
                {"name": "kserve-container", "image": "f", "command": ["python", str(FAKE)]}
            ],
        },
    }
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "demo"},
        "spec": {
            "predictor": {"model": {"modelFormat": {"name": "fake"}, "storageUri": "./model"}}
        },
    }
    path = tmp_path / "isvc.yaml"
    path.write_text(yaml.safe_dump_all([isvc, runtime]))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moorage.controller", "run", "-f", str(path), "--port", str(port),
         "--grpc-port", str(_free_port()), "--cache-dir", str(tmp_path / "c"), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Press Ctrl-C" in line:
            break
    assert _listening(port)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _listening(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _listening(port), "the server outlived a killed moorage"
