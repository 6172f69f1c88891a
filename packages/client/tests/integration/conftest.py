"""Real peer servers on loopback for the client's integration tests.

- **MLServer 1.7.1** (an independent OIP v2 implementation) in its own venv outside the repo,
  ``${MOORAGE_PEERS:-$HOME/.cache/moorage-peers}/mlserver``. It serves an sklearn iris model
  and ``echo``, a tiny custom runtime that returns its inputs (BYTES, FP16, every dtype) and
  can be told to sleep.
- **KServe 0.14.1**'s own model server (``bench/peers/kserve_sklearn.py``) in the ``kserve``
  venv beside it, serving iris.
- **moorage-server** (packages/server) started with KServe's flags, serving an sklearn iris
  model and an sklearn text pipeline (BYTES in).

``scripts/test.sh`` builds the peer venvs before the tests (``scripts/peers.sh``, cached); a
fixture that still finds one missing builds it with the same script (``MOORAGE_BUILD_PEERS=0``
forbids that). Each server is a process started and stopped by PID. A peer that cannot be
built or started here is skipped with the reason, except in CI (``CI=true``), where it fails
the tests: there the interoperability tests must run. One that starts and then misbehaves
fails the tests everywhere.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

REPO = Path(__file__).resolve().parents[4]
PEERS = Path(os.environ.get("MOORAGE_PEERS") or Path.home() / ".cache" / "moorage-peers")
START_TIMEOUT = float(os.environ.get("MOORAGE_PEER_START_TIMEOUT", "120"))

# iris rows 0, 50 and 100 and their classes, for both servers' sklearn models
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]]
IRIS_CLASSES = [0, 1, 2]

# Run by the server's own Python (one sklearn import): argv = iris path [text path]
TRAIN = """
import sys, joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
joblib.dump(LogisticRegression(max_iter=500, random_state=0).fit(X, y), sys.argv[1])
if len(sys.argv) > 2:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import make_pipeline
    texts = ["good great fine", "great good", "bad awful poor", "awful bad"] * 3
    model = make_pipeline(CountVectorizer(), MultinomialNB()).fit(texts, [1, 1, 0, 0] * 3)
    joblib.dump(model, sys.argv[2])
"""

ECHO_RUNTIME = '''
"""MLServer test runtime: returns its inputs; parameters.sleep_ms delays the answer."""
import asyncio

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceResponse, ResponseOutput


class EchoRuntime(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload):
        sleep_ms = getattr(payload.parameters, "sleep_ms", None) if payload.parameters else None
        if sleep_ms:
            await asyncio.sleep(int(sleep_ms) / 1000)
        outputs = [
            # NumpyCodec cannot hold BYTES elements of different lengths: pass those through
            ResponseOutput(name=inp.name, shape=inp.shape, datatype=inp.datatype, data=inp.data)
            if inp.datatype == "BYTES"
            else NumpyCodec.encode_output(inp.name, NumpyCodec.decode_input(inp))
            for inp in payload.inputs
        ]
        return InferenceResponse(model_name=self.name, outputs=outputs)
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Peer:
    """A server process on loopback."""

    name: str
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log: Path

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    def wait_ready(self, paths: list[str], timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        pending = list(paths)
        with httpx.Client(timeout=2, trust_env=False) as client:
            while pending:
                if self.process.poll() is not None:
                    pytest.fail(
                        f"{self.name} exited with {self.process.returncode} while starting:\n"
                        f"{self.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")
                try:
                    if client.get(self.rest_url + pending[0]).status_code == 200:
                        pending.pop(0)
                        continue
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=2)  # graceful shutdown is not under test here
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def spawn(name: str, cmd: list[str], *, cwd: Path, http_port: int, grpc_port: int) -> Peer:
    log = cwd / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return Peer(name, process, http_port, grpc_port, log)


def unavailable(reason: str) -> NoReturn:
    """Skip for a peer that cannot run here; in CI, fail: the interoperability tests must run."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}\n(CI is set: a missing peer fails instead of skipping)")
    pytest.skip(reason)


def peer_venv(name: str, program: str) -> Path:
    """The ``name`` peer venv holding ``bin/<program>``, built by scripts/peers.sh if missing."""
    venv = PEERS / name
    if (venv / "bin" / program).exists() and (venv / ".moorage-peer-ok").exists():
        return venv
    if os.environ.get("MOORAGE_BUILD_PEERS", "1") == "0":
        unavailable(f"no {name} peer venv at {venv} and MOORAGE_BUILD_PEERS=0")
    script = REPO / "scripts" / "peers.sh"
    try:
        result = subprocess.run(
            ["bash", str(script), name],
            env={**os.environ, "MOORAGE_PEERS": str(PEERS)},
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"cannot build the {name} peer venv with {script}: {exc}")
    if result.returncode != 0 or not (venv / "bin" / program).exists():
        tail = (result.stderr or result.stdout)[-1500:]
        unavailable(f"cannot build the {name} peer venv with {script}:\n{tail}")
    return venv


# ----------------------------------------------------------------------------- MLServer


def launch_mlserver(root: Path, started: list[Peer]) -> Peer:
    venv = peer_venv("mlserver", "mlserver")
    models = root / "models"
    (models / "iris").mkdir(parents=True)
    (models / "echo").mkdir()
    subprocess.run(
        [str(venv / "bin" / "python"), "-c", TRAIN, str(models / "iris" / "model.joblib")],
        check=True,
        timeout=120,
    )
    (models / "iris" / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "iris",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
            }
        )
    )
    (models / "echo" / "echo_runtime.py").write_text(textwrap.dedent(ECHO_RUNTIME))
    (models / "echo" / "model-settings.json").write_text(
        json.dumps({"name": "echo", "implementation": "echo_runtime.EchoRuntime"})
    )
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    (models / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": http_port,
                "grpc_port": grpc_port,
                "metrics_port": metrics_port,
                "parallel_workers": 0,
                "debug": False,
                "load_models_at_startup": True,
            }
        )
    )
    peer = spawn(
        "mlserver",
        [str(venv / "bin" / "mlserver"), "start", str(models)],
        cwd=root,
        http_port=http_port,
        grpc_port=grpc_port,
    )
    started.append(peer)
    peer.wait_ready(["/v2/health/ready", "/v2/models/iris/ready", "/v2/models/echo/ready"])
    return peer


# ----------------------------------------------------------------------------- moorage-server
def moorage_server_command() -> list[str]:
    try:
        found = importlib.util.find_spec("moorage.server.__main__")
    except ModuleNotFoundError:
        found = None
    if found is None:
        unavailable("moorage-server (packages/server) is not installed in this environment")
    for module in ("sklearn", "joblib"):
        if importlib.util.find_spec(module) is None:
            unavailable(f"moorage-server needs its sklearn extra here ({module} is missing)")
    return [sys.executable, "-m", "moorage.server"]


def start_moorage_server(command: list[str], root: Path, label: str, model_dir: Path) -> Peer:
    name = model_dir.name
    http_port, grpc_port = free_port(), free_port()
    args = ["--model_name", name, "--model_dir", str(model_dir), "--host", "127.0.0.1"]
    args += ["--http_port", str(http_port), "--grpc_port", str(grpc_port)]
    return spawn(
        f"moorage-server-{label}",
        [*command, *args],
        cwd=root,
        http_port=http_port,
        grpc_port=grpc_port,
    )


def launch_moorage_servers(root: Path, started: list[Peer]) -> dict[str, Peer]:
    """moorage-server processes: ``iris``, ``text`` (an sklearn text pipeline, BYTES in) and
    ``doomed`` (another iris, for the test that kills it)."""
    command = moorage_server_command()
    for name in ("iris", "text"):
        (root / name).mkdir()
    iris_file, text_file = root / "iris" / "model.joblib", root / "text" / "model.joblib"
    subprocess.run(
        [sys.executable, "-c", TRAIN, str(iris_file), str(text_file)], check=True, timeout=120
    )
    peers = {}
    for label, model in (("iris", "iris"), ("text", "text"), ("doomed", "iris")):
        peers[label] = start_moorage_server(command, root, label, root / model)
        started.append(peers[label])
    for label, peer in peers.items():
        model = "text" if label == "text" else "iris"
        peer.wait_ready(["/v2/health/ready", f"/v2/models/{model}/ready"])
    return peers


# ----------------------------------------------------------------------------- KServe 0.14
def launch_kserve(root: Path, started: list[Peer]) -> Peer:
    """KServe 0.14.1's own model server (bench/peers/kserve_sklearn.py) serving iris."""
    python = peer_venv("kserve", "python") / "bin" / "python"
    script = REPO / "bench" / "peers" / "kserve_sklearn.py"
    (root / "iris").mkdir()
    subprocess.run(
        [str(python), "-c", TRAIN, str(root / "iris" / "model.joblib")], check=True, timeout=120
    )
    http_port, grpc_port = free_port(), free_port()
    args = ["--model_name", "iris", "--model_dir", str(root / "iris"), "--workers", "1"]
    args += ["--http_port", str(http_port), "--grpc_port", str(grpc_port)]
    peer = spawn(
        "kserve",
        [str(python), str(script), *args],
        cwd=root,
        http_port=http_port,
        grpc_port=grpc_port,
    )
    started.append(peer)
    peer.wait_ready(["/v2/health/ready", "/v2/models/iris/ready"])
    return peer


# ----------------------------------------------------------------------------- fixtures
#: peer fixture name -> launcher; every peer the selected tests need starts at once, in
#: parallel (each is mostly waiting on imports), when the first of them is requested.
LAUNCHERS: dict[str, Callable[[Path, list[Peer]], Any]] = {
    "mlserver": launch_mlserver,
    "moorage_servers": launch_moorage_servers,
    "kserve_server": launch_kserve,
}


@pytest.fixture(scope="session")
def _peers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Any]]]:
    wanted = sorted(
        {
            name
            for item in request.session.items
            for name in getattr(item, "fixturenames", ())
            if name in LAUNCHERS
        }
    )
    started: list[Peer] = []
    with ThreadPoolExecutor(max(1, len(wanted)), thread_name_prefix="peer") as pool:
        futures = {
            name: pool.submit(LAUNCHERS[name], tmp_path_factory.mktemp(name), started)
            for name in wanted
        }
        try:
            yield futures
        finally:
            for future in futures.values():
                future.cancel()
            concurrent.futures.wait(futures.values())
            for peer in started:  # signal all first: they shut down in parallel
                if peer.process.poll() is None:
                    peer.process.send_signal(signal.SIGTERM)
            for peer in started:
                peer.stop()


def _peer(peers: dict[str, Future[Any]], name: str) -> Any:
    if name not in peers:  # requested dynamically; not seen at collection
        pytest.skip(f"{name} was not launched for this session")
    return peers[name].result()  # re-raises the launcher's skip or failure


@pytest.fixture(scope="session")
def mlserver(_peers: dict[str, Future[Any]]) -> Peer:
    return _peer(_peers, "mlserver")  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def moorage_servers(_peers: dict[str, Future[Any]]) -> dict[str, Peer]:
    return _peer(_peers, "moorage_servers")  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def kserve_server(_peers: dict[str, Future[Any]]) -> Peer:
    return _peer(_peers, "kserve_server")  # type: ignore[no-any-return]
