"""Model cache benchmark: a model reaching NodeDownloaded on N simulated nodes vs a plain
sequential download per node, and the agents' memory while they download. A script, not a test.

Run::

    .venv/bin/python bench/cache.py [--mib 256] [--nodes 4] [--write-results]

Everything runs on this machine, on loopback: SeaweedFS (the S3 source, one object of ``--mib``
MiB uploaded multipart), the Kubernetes API stand-in (``../shared/testing/kmock_apiserver.py``,
needs ``kmock==0.8``), ``moorage-cache controller`` and one ``moorage-cache agent`` per simulated
node, each with its own model root.

* **sequential**: ``python -m moorage.storage <uri> <dir>`` once per node, one after another
  (what N init containers or N download jobs cost back to back), wall time in total.
* **cache**: controller and agents already running (a DaemonSet is); the clock starts when the
  LocalModelCache is created and stops when its ``status.copies.available`` equals N.

Memory: every 0.1 s, the RSS of each agent process and of its download child processes
(``/proc``); the table gives the peaks. ``--write-results`` replaces the "## Model cache"
section of bench/RESULTS.md. All nodes share one disk, one network stack and the cores, so the
cache's figure is the cost of N copies made at once on one machine, not of N machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for package in ("core", "storage", "cache"):
    sys.path.insert(0, str(ROOT / "packages" / package / "src"))

from moorage.cache._kube import CACHES, CONFIGMAPS, GROUPS, NODES, Kube, KubeConfig  # noqa: E402
from moorage.storage.testing import ServerProcess, free_port, seaweedfs  # noqa: E402

KMOCK = Path(
    os.environ.get("MOORAGE_KMOCK_APISERVER", ROOT.parent / "shared/testing/kmock_apiserver.py")
)
LABEL = "bench.moorage/cache"


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            kids = [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            found.append(kid)
            found.extend(_children(kid))
    return found


class RssSampler:
    """Peak RSS of the agents (alone) and of their download children, sampled every 0.1 s."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.agent_peak = 0
        self.child_peak = 0
        self.node_peak = 0  # agent + its children at one instant
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for pid in self.pids:
                agent = _rss_kib(pid)
                kids = [_rss_kib(k) for k in _children(pid)]
                self.agent_peak = max(self.agent_peak, agent)
                self.child_peak = max([self.child_peak, *kids])
                self.node_peak = max(self.node_peak, agent + sum(kids))
            await asyncio.sleep(0.1)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


def _sequential(uri: str, env: dict[str, str], work: Path, nodes: int) -> tuple[float, float]:
    """Total wall time, and the first node's (one download alone)."""
    started = time.perf_counter()
    first = 0.0
    for i in range(nodes):
        dest = work / f"seq-{i}" / "model"
        subprocess.run(
            [sys.executable, "-m", "moorage.storage", "-q", uri, str(dest)],
            env={**os.environ, **env},
            check=True,
        )
        first = first or time.perf_counter() - started
    return time.perf_counter() - started, first


async def _cache_run(
    uri: str, env: dict[str, str], work: Path, nodes: int, mib: int
) -> tuple[float, float, RssSampler]:
    port = free_port()
    kubeconfig = work / "kubeconfig"
    procs: list[ServerProcess] = []
    api = ServerProcess([sys.executable, str(KMOCK), str(port), str(kubeconfig)],
                        log=work / "api.log").start()  # fmt: skip
    try:
        while not kubeconfig.exists():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        async with Kube(KubeConfig.from_file(kubeconfig)) as kube:
            await kube.create(CONFIGMAPS, {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
                "data": {"localModel": json.dumps({"enabled": True})},
            })  # fmt: skip
            selector = {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": LABEL, "operator": "Exists"}]}]}  # fmt: skip
            limit = f"{mib * 2}Mi"
            pv_spec = {
                "capacity": {"storage": limit},
                "local": {"path": "/models"},
                "nodeAffinity": {"required": selector},
            }
            pvc_spec = {"resources": {"requests": {"storage": limit}}}
            await kube.create(GROUPS, {
                "apiVersion": "serving.kserve.io/v1alpha1", "kind": "LocalModelNodeGroup",
                "metadata": {"name": "bench"},
                "spec": {"storageLimit": limit, "persistentVolumeSpec": pv_spec,
                         "persistentVolumeClaimSpec": pvc_spec},
            })  # fmt: skip
            names = [f"node-{i}" for i in range(nodes)]
            for name in names:
                await kube.create(NODES, {
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": {LABEL: "yes"}},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                })  # fmt: skip
            base = [sys.executable, "-m", "moorage.cache"]
            common = {**env, "POD_NAMESPACE": "kserve", "MOORAGE_CACHE_RESYNC_SECONDS": "5",
                      "MOORAGE_CACHE_STATUS_INTERVAL_SECONDS": "0.2"}  # fmt: skip
            controller = [*base, "controller", "--kubeconfig", str(kubeconfig)]
            procs.append(ServerProcess(controller, log=work / "controller.log", env=common).start())
            for name in names:
                procs.append(ServerProcess(
                    [*base, "agent", "--kubeconfig", str(kubeconfig), "--node-name", name,
                     "--root", str(work / name)],
                    log=work / f"{name}.log", env=common).start())  # fmt: skip
            await asyncio.sleep(3.0)  # both are running before the cache exists
            with RssSampler([p.pid for p in procs[1:]]) as sampler:
                started = time.perf_counter()
                first = 0.0
                await kube.create(CACHES, {
                    "apiVersion": "serving.kserve.io/v1alpha1", "kind": "LocalModelCache",
                    "metadata": {"name": "bench-model"},
                    "spec": {"sourceModelUri": uri, "modelSize": f"{mib}Mi",
                             "nodeGroups": ["bench"]},
                })  # fmt: skip
                while True:
                    cache = await kube.get(CACHES, "bench-model")
                    copies = ((cache or {}).get("status") or {}).get("copies") or {}
                    if copies.get("available") and not first:
                        first = time.perf_counter() - started
                    if copies.get("available") == nodes:
                        break
                    if copies.get("failed"):
                        raise RuntimeError(f"download failed: {cache['status']}")
                    await asyncio.sleep(0.05)
                elapsed = time.perf_counter() - started
            return elapsed, first, sampler
    finally:
        for proc in procs:
            proc.stop()
        api.kill()


def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="model size (MiB)")
    parser.add_argument("--nodes", type=int, default=4, help="simulated nodes")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    if not KMOCK.exists():
        print(f"Kubernetes API stand-in not found: {KMOCK}", file=sys.stderr)
        return 2
    load_start = _load()
    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    try:
        with seaweedfs(work / "weed") as s3:
            s3.create_bucket("bench")
            blob = work / "model.bin"
            with blob.open("wb") as f:
                for _ in range(args.mib):
                    f.write(os.urandom(1 << 20))
            s3.upload_file("bench", "model/model.bin", blob, part_size=64 << 20)
            blob.unlink()
            uri = "s3://bench/model"
            env = s3.env()
            sequential, seq_first = _sequential(uri, env, work, args.nodes)
            shutil.rmtree(work / "seq-0", ignore_errors=True)
            cached, cache_first, rss = asyncio.run(_cache_run(uri, env, work, args.nodes, args.mib))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end = _load()
    total_mb = args.mib * (1 << 20) * args.nodes / 1e6
    rows = [
        ("sequential `moorage-storage` per node", seq_first, sequential),
        (f"cache: controller + {args.nodes} agents at once", cache_first, cached),
    ]
    lines = [
        f"`bench/cache.py --mib {args.mib} --nodes {args.nodes}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {load_start} at "
        f"start and {load_end} at end.",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ", SeaweedFS and the API stand-in on loopback; all nodes share one disk.",
        "",
        f"| {args.nodes} nodes x {args.mib} MiB | first copy s | all copies s | MB/s (all) |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {one:.2f} | {secs:.2f} | {total_mb / secs:.1f} |"
            for name, one, secs in rows
        ),
        "",
        "| agent memory while downloading | peak RSS MiB |",
        "|---|---:|",
        f"| agent process | {rss.agent_peak / 1024:.0f} |",
        f"| one download child | {rss.child_peak / 1024:.0f} |",
        f"| agent + its children (one node) | {rss.node_peak / 1024:.0f} |",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write_results:
        results = ROOT / "bench" / "RESULTS.md"
        current = results.read_text()
        section = f"## Model cache\n\n{text}\n"
        if "## Model cache\n" in current:
            head, _, tail = current.partition("## Model cache\n")
            rest = tail.split("\n## ", 1)
            current = head + section + ("\n## " + rest[1] if len(rest) > 1 else "")
        else:
            current = current.rstrip("\n") + "\n\n" + section
        results.write_text(current)
    return 0


if __name__ == "__main__":
    sys.exit(main())
