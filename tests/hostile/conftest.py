"""The real ``moorage-server`` process under attack, and the normal client served beside it.

Each server runs the example sklearn model (trained into a temporary directory when the
example's file is missing) on 127.0.0.1 ephemeral ports, with short timeouts (the flags under
test) so that the idle-connection attacks end in seconds. :class:`Server` reads the process's
RSS and CPU time from ``/proc``; :class:`Liveness` runs a real gRPC and REST inference every
0.2 s in a thread while an attack runs and records how long each took.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sklearn-iris"
MODEL = "sklearn-iris"
ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]
#: The issue's bars: RSS growth during one attack, and a normal call's latency beside it.
RSS_BUDGET_MB = 100.0
SERVED_WITHIN_S = 1.0

#: Short timeouts and budgets for the tests (the defaults are minutes and hundreds).
FLAGS = [
    "--grpc_handshake_timeout_seconds", "1",
    "--grpc_header_timeout_seconds", "1",
    "--grpc_max_connection_idle_seconds", "2",
    "--http_header_timeout_seconds", "1",
    "--http_body_timeout_seconds", "2",
    "--http_keep_alive_timeout_seconds", "1",
    "--grpc_max_buffered_request_bytes", str(32 * 1024 * 1024),
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example model, or one trained like it where the example was not built here."""
    if (EXAMPLE / "model" / "model.joblib").exists():
        return EXAMPLE / "model"
    out = tmp_path_factory.mktemp("model")
    subprocess.run([sys.executable, str(EXAMPLE / "train.py"), str(out)], check=True)
    return out


class Server:
    """A ``moorage-server`` process; ``prefix`` wraps the command (``prlimit ...``)."""

    def __init__(
        self, model_dir: Path, grpc_server: str, *, extra: list[str] = (), prefix: list[str] = ()
    ) -> None:  # type: ignore[assignment]
        self.grpc_server = grpc_server
        self.http_port = free_port()
        self.grpc_port = free_port()
        argv = [
            *prefix, sys.executable, "-m", "moorage.server",
            "--model_name", MODEL, "--model_dir", str(model_dir), "--host", "127.0.0.1",
            "--http_port", str(self.http_port), "--grpc_port", str(self.grpc_port),
            "--grpc_server", grpc_server, "--workers", "1", *FLAGS, *extra,
            *os.environ.get("HOSTILE_EXTRA", "").split(),
        ]  # fmt: skip
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"hostile-{self.http_port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url("/v2/health/ready"), timeout=1) as reply:
                    if reply.status == 200:
                        # One call each way first: the bars are about attacks, not cold starts.
                        grpc_infer(self.grpc_port, timeout=30)
                        rest_infer(self.http_port, timeout=30)
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in {timeout} s: {self.log()[-3000:]}")

    @property
    def pid(self) -> int:
        """The server's own pid (``prlimit`` execs it, so it is the child's)."""
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert match is not None
        return int(match.group(1)) / 1024

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def inferences(self) -> float:
        """Inference requests the server counted (``moorage_server_requests_total``)."""
        with urllib.request.urlopen(self.url("/metrics"), timeout=5) as reply:
            text = reply.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("moorage_server_requests_total{")
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.log_path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- normal client
def _infer_message() -> bytes:
    import numpy as np

    from moorage.core.protocol import InferRequest, InferTensor
    from moorage.core.protocol.grpc import request_to_bytes

    tensor = InferTensor.from_numpy("input-0", np.array(ROWS, dtype=np.float32))
    return request_to_bytes(InferRequest(MODEL, [tensor]))


def grpc_infer(port: int, timeout: float = SERVED_WITHIN_S) -> float:
    """One ModelInfer on a new channel; its duration in seconds (raises past ``timeout``)."""
    started = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        call(_infer_message(), timeout=timeout)
    return time.monotonic() - started


def rest_infer(port: int, timeout: float = SERVED_WITHIN_S) -> float:
    """One v1 predict on a new connection; its duration in seconds."""
    started = time.monotonic()
    body = json.dumps({"instances": ROWS}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models/{MODEL}:predict",
        data=body,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        assert json.loads(reply.read())["predictions"] == [1, 1]
    return time.monotonic() - started


class Liveness:
    """A normal client beside an attack: a gRPC and a REST inference every 0.2 s, each on a
    new connection; :meth:`check` says every one was served within ``SERVED_WITHIN_S``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.times: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Liveness:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, call, port in (
                ("grpc", grpc_infer, self.server.grpc_port),
                ("rest", rest_infer, self.server.http_port),
            ):
                try:
                    self.times.append(call(port))
                except Exception as exc:
                    self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            self._stop.wait(0.2)

    def check(self) -> float:
        """The slowest normal call; fails when one failed or none ran."""
        assert not self.errors, (len(self.errors), len(self.times), self.errors[:2])
        assert self.times, "the normal client made no call"
        return max(self.times)


@pytest.fixture(scope="session")
def servers(model_dir: Path) -> Iterator[dict[str, Server]]:
    """Servers by gRPC implementation, started when first asked for, shared by the suite."""
    started: dict[str, Server] = {}

    class Pool(dict[str, Server]):
        def __missing__(self, key: str) -> Server:
            started[key] = self[key] = Server(model_dir, key)
            return started[key]

    yield Pool()
    for proc in started.values():
        proc.stop()


@pytest.fixture(params=["native", "grpcio"])
def server(request: pytest.FixtureRequest, servers: dict[str, Server]) -> Server:
    """The server under a gRPC attack, once per gRPC implementation."""
    return servers[request.param]


@pytest.fixture
def rest_server(servers: dict[str, Server]) -> Server:
    """The server under a REST attack (the REST port does not depend on the gRPC server)."""
    return servers["native"]


class Budget:
    """RSS before an attack, checked after it; prints the figures (``pytest -s``)."""

    def __init__(self, server: Server, name: str) -> None:
        self.server = server
        self.name = name
        self.before = server.rss_mb()

    def check(self, liveness: Liveness | None = None, **figures: Any) -> None:
        after = self.server.rss_mb()
        slowest = liveness.check() if liveness is not None else None
        print(
            f"\n[hostile] {self.name} on {self.server.grpc_server}: RSS {self.before:.0f} -> "
            f"{after:.0f} MB; slowest normal call "
            f"{'-' if slowest is None else f'{slowest * 1000:.0f} ms'}; {figures}"
        )
        assert after - self.before < RSS_BUDGET_MB, (self.before, after)
        if slowest is not None:
            assert slowest < SERVED_WITHIN_S
