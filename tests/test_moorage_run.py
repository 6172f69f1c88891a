"""``moorage run`` end to end: the real CLI, the real model server process, real storage servers.

Each run is answered over REST (v1 and v2) and gRPC (tritonclient, an independent client), then
stopped with SIGINT, which must end every process and free the ports. Sources: the repository's
sklearn example (a local path), an ``hf://`` repo on the Hugging Face Hub stand-in and an
``oci://`` image on a local docker-registry (both from ``moorage.storage.testing``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "sklearn-iris"
ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]
START_TIMEOUT = 90.0

ISVC = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {name}
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      storageUri: {uri}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


class Run:
    """A ``moorage run`` subprocess with its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.http_port = _free_port()
        self.grpc_port = _free_port()
        argv = [sys.executable, "-m", "moorage.controller", "run", *args]
        argv += ["--port", str(self.http_port), "--grpc-port", str(self.grpc_port)]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=ROOT,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._queue.put(raw.decode(errors="replace").rstrip("\n"))
        self._queue.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"moorage run exited before {text!r}:\n{self.output}")
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} after {timeout} s:\n{self.output}")

    def drain(self) -> None:
        while True:
            try:
                line = self._queue.get(timeout=5)
            except queue.Empty:
                return
            if line is None:
                return
            self.lines.append(line)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self.drain()
        return code


@contextlib.contextmanager
def moorage_run(args: list[str], env: dict[str, str] | None = None) -> Iterator[Run]:
    run = Run(args, env or {})
    try:
        run.wait_for("Press Ctrl-C to stop.")
        yield run
    finally:
        code = run.stop()
    assert code == 0, run.output
    assert "moorage: stopping" in run.output
    assert _port_free(run.http_port) and _port_free(run.grpc_port), "a server outlived moorage run"


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def check_answers(run: Run, model: str) -> None:
    """v1 and v2 over REST, v2 over gRPC: iris rows 1 and 2 are versicolor (class 1)."""
    rest = f"http://127.0.0.1:{run.http_port}"
    assert f"REST  {rest}" in run.output and f"gRPC  127.0.0.1:{run.grpc_port}" in run.output
    v1 = _post(f"{rest}/v1/models/{model}:predict", {"instances": ROWS})
    assert v1 == {"predictions": [1, 1]}
    v2 = _post(
        f"{rest}/v2/models/{model}/infer",
        {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": ROWS}]},
    )
    assert v2["outputs"][0]["data"] == [1, 1]

    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{run.grpc_port}")
    try:
        tensor = grpcclient.InferInput("input-0", [2, 4], "FP32")
        tensor.set_data_from_numpy(np.array(ROWS, dtype=np.float32))
        result = client.infer(model, [tensor])
        name = result.get_response().outputs[0].name
        assert result.as_numpy(name).tolist() == [1, 1]
    finally:
        client.close()

    # the banner's own v1 request works when pasted
    curl = next(line for line in run.lines if ":predict" in line and "curl" in line)
    body = json.loads(curl.split(" -d ", 1)[1].strip().strip("'"))
    assert len(_post(f"{rest}/v1/models/{model}:predict", body)["predictions"]) == 1


@pytest.fixture(scope="module")
def model_file() -> Path:
    """examples/sklearn-iris/model/model.joblib, as ./scripts/serve-example.sh leaves it: trained
    with this environment's scikit-learn unless already there."""
    import sklearn

    target = EXAMPLE / "model" / "model.joblib"
    stamp = EXAMPLE / "model" / "sklearn-version"
    built_with = stamp.read_text().strip() if stamp.exists() else ""
    if not target.exists() or built_with != sklearn.__version__:
        subprocess.run([sys.executable, str(EXAMPLE / "train.py")], check=True)
    return target


def _serve(name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from moorage.storage import testing

    factory = getattr(testing, name)
    try:
        manager = factory(tmp_path_factory.mktemp(name))
        server = manager.__enter__()
    except testing.ComponentUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from _serve("hf_hub", tmp_path_factory)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from _serve("oci_registry", tmp_path_factory)


def test_sklearn_example(model_file: Path, tmp_path: Path) -> None:
    args = ["-f", str(EXAMPLE / "isvc.yaml"), "--cache-dir", str(tmp_path)]
    with moorage_run(args) as run:
        assert "served in place" in run.output
        check_answers(run, "sklearn-iris")
        # the runtime declares its input, so the banner's v2 request has the real shape
        assert "the shape below is a guess" not in run.output
        curl = next(line for line in run.lines if "/infer" in line and "curl" in line)
        body = json.loads(curl.split(" -d ", 1)[1].strip().strip("'"))
        assert [(t["name"], t["shape"]) for t in body["inputs"]] == [("input-0", [1, 4])]


def test_hf_model(hub: Any, model_file: Path, tmp_path: Path) -> None:
    hub.add_repo("moorage/sklearn-iris", {"model.joblib": model_file.read_bytes()})
    isvc = tmp_path / "isvc.yaml"
    isvc.write_text(ISVC.format(name="iris-hf", uri="hf://moorage/sklearn-iris"))
    cache = tmp_path / "cache"
    with moorage_run(["-f", str(isvc), "--cache-dir", str(cache)], env=hub.env()) as run:
        assert "fetched in" in run.output
        check_answers(run, "iris-hf")

    # the next run finds the download complete and does not ask the hub again
    from moorage.controller.local import fetch_model

    before = len(hub.requests())
    os.environ["HF_ENDPOINT"] = hub.endpoint
    try:
        again = fetch_model("hf://moorage/sklearn-iris", base_dir=tmp_path, cache_root=cache)
    finally:
        del os.environ["HF_ENDPOINT"]
    assert again.reused and (again.path / "model.joblib").exists()
    assert len(hub.requests()) == before


def test_oci_model(registry: Any, model_file: Path, tmp_path: Path) -> None:
    registry.push_image(
        "models/sklearn-iris", "v1", [{"models/model.joblib": model_file.read_bytes()}]
    )
    isvc = tmp_path / "isvc.yaml"
    isvc.write_text(ISVC.format(name="iris-oci", uri=registry.ref("models/sklearn-iris", "v1")))
    with moorage_run(["-f", str(isvc), "--cache-dir", str(tmp_path / "cache")]) as run:
        check_answers(run, "iris-oci")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moorage.controller", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_bad_yaml_fails_fast_with_the_field_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(ISVC.format(name="iris", uri="./m").replace("modelFormat:", "modelFromat:"))
    cache = tmp_path / "cache"
    done = _cli("run", "-f", str(bad), "--cache-dir", str(cache))
    assert done.returncode == 1
    assert f"{bad}: spec.predictor.model.modelFromat: unknown field" in done.stderr
    # Fast = before any work: nothing fetched into the cache, no server started.
    assert "starting" not in done.stdout
    assert not cache.exists() or not any(cache.iterdir())


def test_port_in_use_gets_a_clear_message(model_file: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _cli("run", "-f", str(EXAMPLE / "isvc.yaml"), "--port", str(port))
    assert done.returncode == 1
    assert f"port {port} (--port) already in use on this machine" in done.stderr
    assert "nothing was started" in done.stderr
    if sys.platform == "linux":
        assert f"(pid {os.getpid()})" in done.stderr  # who holds it
    assert "starting predictor" not in done.stdout


def _other_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (``hostname -I``), if any."""
    try:
        listed = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for address in listed.stdout.split():
        if "." in address and not address.startswith("127."):
            return address
    return None


def _listening(port: int) -> set[str]:
    """Local addresses of the LISTEN sockets on ``port``, from /proc/net/tcp (IPv4)."""
    found = set()
    with open("/proc/net/tcp") as f:
        for row in f.read().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/net/tcp")
def test_local_mode_listens_on_loopback_only(model_file: Path, tmp_path: Path) -> None:
    args = ["-f", str(EXAMPLE / "isvc.yaml"), "--cache-dir", str(tmp_path)]
    with moorage_run(args) as run:
        for port in (run.http_port, run.grpc_port):
            assert _listening(port) == {"127.0.0.1"}, port
            other = _other_address()
            if other is not None:
                with pytest.raises(ConnectionRefusedError), socket.socket() as sock:
                    sock.settimeout(5)
                    sock.connect((other, port))
        banner = f"listening on 127.0.0.1:{run.http_port}, 127.0.0.1:{run.grpc_port}"
        assert f"{banner} (loopback only: this machine alone can connect)" in run.output
        assert f"REST  http://127.0.0.1:{run.http_port}" in run.output
