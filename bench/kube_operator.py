"""``moorage operator`` at scale on the kmock stand-in: N InferenceServices created at once.

(Not ``bench/operator.py``: a script of that name in ``bench/`` shadows the standard library's
``operator`` module for every bench script run from this directory.)

Starts the stand-in of the controller's tests (``packages/controller/tests/kube/standin.py``
over ``../shared/testing/kmock_apiserver.py``), installs moorage's built-in
ClusterServingRuntimes, starts ``moorage operator`` as a process, then creates N
InferenceServices (mixed formats, a transformer on every fourth) as fast as the stand-in takes
them and measures:

* the time from the first create until every InferenceService has its objects (Deployment,
  Service and HPA per component, the Ingress) and a status for its current generation;
* the operator's peak RSS (``VmHWM``) and its RSS at the end.

The issue's bar: 1,000 in under 30 s, RSS under 150 MB. The stand-in is single-threaded Python;
its share of the time is reported as the time to create the InferenceServices alone.
Run: ``.venv/bin/python bench/kube_operator.py [--count 1000] [--workers 8]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from moorage.controller.testing import OperatorRunner
from moorage.core.resources import builtin_runtimes

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "packages/controller/tests/kube/standin.py"
SHARED = ROOT.parent / "shared/testing/kmock_apiserver.py"
FORMATS = ["sklearn", "xgboost", "lightgbm", "tensorflow", "pytorch", "onnx"]
TRANSFORMER = {"containers": [{"name": "kserve-container", "image": "me/transformer:1"}]}
OWNED = {
    "deployments": "/apis/apps/v1/namespaces/default/deployments",
    "services": "/api/v1/namespaces/default/services",
    "hpas": "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers",
    "ingresses": "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
}
ISVCS = "/apis/serving.kserve.io/v1beta1/namespaces/default/inferenceservices"


def _isvc(i: int) -> dict[str, Any]:
    fmt = FORMATS[i % len(FORMATS)]
    model = {"modelFormat": {"name": fmt}, "storageUri": f"gs://b/m{i}"}
    if fmt == "onnx":
        model["protocolVersion"] = "v2"  # Triton speaks v2 only
    spec: dict[str, Any] = {"predictor": {"model": model}}
    if i % 4 == 0:
        spec["transformer"] = TRANSFORMER
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": f"isvc-{i}", "namespace": "default"},
        "spec": spec,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _counters(text: str) -> dict[str, int]:
    """Prometheus text: each ``*_total`` summed over its labels."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("#") or "_total" not in line:
            continue
        name, value = line.rsplit(" ", 1)
        base = name.split("{", 1)[0]
        out[base] = out.get(base, 0) + int(float(value))
    return out


async def _count(session: aiohttp.ClientSession, base: str, path: str) -> int:
    async with session.get(base + path) as response:
        return len((await response.json())["items"])


async def _settled(session: aiohttp.ClientSession, base: str, count: int) -> dict[str, int]:
    async with session.get(base + ISVCS) as response:
        items = (await response.json())["items"]
    done = sum(
        1
        for o in items
        if (o.get("status") or {}).get("observedGeneration") == o["metadata"].get("generation")
    )
    return {"status": done}


async def bench(count: int, workers: int) -> dict[str, Any]:
    port = _free_port()
    tmp = Path(tempfile.mkdtemp(prefix="moorage-bench-operator-"))
    kubeconfig = tmp / "kubeconfig"
    log = (tmp / "standin.log").open("wb")
    standin = subprocess.Popen(
        [sys.executable, str(STANDIN), str(SHARED), str(port), str(kubeconfig)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    transformers = len(range(0, count, 4))
    expected = {
        "deployments": count + transformers,
        "services": count + transformers,
        "hpas": count + transformers,
        "ingresses": count,
    }
    metrics_port = _free_port()
    runner = OperatorRunner(
        ["--kubeconfig", str(kubeconfig), "--metrics-port", str(metrics_port),
         "--no-leader-election", "--workers", str(workers)]
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                if kubeconfig.exists():
                    break
                await asyncio.sleep(0.1)
            for runtime in builtin_runtimes():
                async with session.post(
                    base + "/apis/serving.kserve.io/v1alpha1/clusterservingruntimes",
                    json=runtime.to_dict(),
                ) as response:
                    response.raise_for_status()
            runner.start()
            await asyncio.sleep(3)  # kopf lists and watches everything
            idle_rss = _rss(runner.pid or 0)
            cpu_before = _cpu(runner.pid or 0), _cpu(standin.pid)
            semaphore = asyncio.Semaphore(64)

            async def create(i: int) -> None:
                async with semaphore, session.post(base + ISVCS, json=_isvc(i)) as response:
                    response.raise_for_status()

            started = time.perf_counter()
            await asyncio.gather(*(create(i) for i in range(count)))
            created = time.perf_counter() - started
            seen: dict[str, int] = {}
            print(f"created {count} in {created:.2f} s", file=sys.stderr, flush=True)
            while True:
                seen = {k: await _count(session, base, p) for k, p in OWNED.items()}
                seen.update(await _settled(session, base, count))
                if all(seen[k] >= v for k, v in expected.items()) and seen["status"] >= count:
                    break
                if time.perf_counter() - started > 600:
                    raise TimeoutError(f"not settled after 600 s: {seen} of {expected}")
                await asyncio.sleep(0.5)
            settled = time.perf_counter() - started
            rss = _rss(runner.pid or 0)
            await asyncio.sleep(2)  # what it still writes once settled
            async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                counters = _counters(await response.text())
            cpu = _cpu(runner.pid or 0) - cpu_before[0], _cpu(standin.pid) - cpu_before[1]
    finally:
        runner.stop()
        standin.terminate()
        standin.wait(10)
        log.close()
    return {
        "count": count,
        "workers": workers,
        "objects": expected,
        "create_s": round(created, 2),
        "settled_s": round(settled, 2),
        "operator_rss_idle_mb": round(idle_rss.get("VmRSS", 0), 1),
        "operator_rss_end_mb": round(rss.get("VmRSS", 0), 1),
        "operator_rss_peak_mb": round(rss.get("VmHWM", 0), 1),
        "operator_cpu_s": round(cpu[0], 1),
        "standin_cpu_s": round(cpu[1], 1),
        "reconciles": counters.get("moorage_controller_reconciles_total", 0),
        "applied_objects": counters.get("moorage_controller_applied_objects_total", 0),
        "status_writes": counters.get("moorage_controller_status_writes_total", 0),
        "operator_exit_code": runner.exit_code,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args.count, args.workers)), indent=2))


if __name__ == "__main__":
    main()
