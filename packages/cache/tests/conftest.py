"""Fixtures: the Kubernetes API stand-in, the real S3 server, and controller/agent processes."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from moorage.cache._kube import CACHES, CONFIGMAPS, LOCAL_MODEL_NODES, Kind, Kube, KubeConfig
from moorage.storage.testing import ServerProcess, free_port

REPO = Path(__file__).resolve().parents[3]
KMOCK_SCRIPT = Path(
    os.environ.get("MOORAGE_KMOCK_APISERVER", REPO.parent / "shared/testing/kmock_apiserver.py")
)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Cluster:
    """The stand-in API server, a client to it, and the processes a test starts."""

    def __init__(self, tmp: Path, kubeconfig: Path, kube: Kube) -> None:
        self.tmp = tmp
        self.kubeconfig = kubeconfig
        self.kube = kube
        self.processes: dict[str, ServerProcess] = {}

    # -- processes ------------------------------------------------------------------------------
    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
        argv = [sys.executable, "-m", "moorage.cache", *args, "--kubeconfig", str(self.kubeconfig)]
        base = {"POD_NAMESPACE": "kserve", "MOORAGE_CACHE_RESYNC_SECONDS": "2",
                "MOORAGE_CACHE_STATUS_INTERVAL_SECONDS": "0.2"}  # fmt: skip
        proc = ServerProcess(argv, log=self.tmp / f"{name}.log", env={**base, **(env or {})})
        self.processes[name] = proc.start()
        return proc

    def controller(self) -> ServerProcess:
        return self.start("controller", "controller")

    def agent(self, node: str, root: Path, env: dict[str, str] | None = None) -> ServerProcess:
        return self.start(f"agent-{node}", "agent", "--node-name", node, "--root", str(root),
                          env=env)  # fmt: skip

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{proc.log_tail(4000)}" for name, proc in self.processes.items()
        )

    # -- objects --------------------------------------------------------------------------------
    async def enable(self, enabled: bool = True) -> None:
        await self.kube.create(CONFIGMAPS, {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
            "data": {"localModel": json.dumps({"enabled": enabled})},
        })  # fmt: skip

    async def create(self, kind: Kind, obj: dict[str, Any]) -> None:
        await self.kube.create(kind, obj)

    async def wait_for(
        self,
        check: Callable[[], Awaitable[Any]],
        *,
        timeout: float = 30.0,
        what: str = "condition",
    ) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = await check()
            if last:
                return last
            for name, proc in self.processes.items():
                if not proc.alive() and not name.endswith("-killed"):
                    raise AssertionError(f"{name} exited\n{self.logs()}")
            await asyncio.sleep(0.1)
        state = await self.dump()
        raise AssertionError(
            f"timed out waiting for {what} (last: {last!r})\n{state}\n{self.logs()}"
        )

    async def dump(self) -> str:
        """The cache kinds' objects, for failure messages."""
        lines = []
        for kind in (CACHES, LOCAL_MODEL_NODES):
            items, _ = await self.kube.list(kind)
            for obj in items:
                lines.append(json.dumps({k: obj.get(k) for k in ("metadata", "spec", "status")}))
        return "\n".join(lines)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    if not KMOCK_SCRIPT.exists():
        pytest.skip(f"Kubernetes API stand-in not found at {KMOCK_SCRIPT}")
    pytest.importorskip("kmock")
    port = free_port()
    kubeconfig = tmp_path / "kubeconfig"
    api = ServerProcess(
        [sys.executable, str(KMOCK_SCRIPT), str(port), str(kubeconfig)], log=tmp_path / "api.log"
    ).start()
    try:
        deadline = time.monotonic() + 20
        while not (kubeconfig.exists() and _port_open(port)):
            if not api.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"API stand-in did not start:\n{api.log_tail()}")
            await asyncio.sleep(0.05)
        async with Kube(KubeConfig.from_file(kubeconfig)) as kube:
            c = Cluster(tmp_path, kubeconfig, kube)
            try:
                yield c
            finally:
                for proc in c.processes.values():
                    proc.stop()
    finally:
        api.kill()


@pytest.fixture(scope="session")
def s3_model(seaweedfs_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The S3 server with a bucket ``cache-models``."""
    seaweedfs_server.create_bucket("cache-models")
    yield seaweedfs_server
