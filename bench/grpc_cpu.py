"""Server CPU per gRPC ModelInfer call, for one or more source trees of moorage, interleaved.

A load-robust A/B measure for a shared machine: each tree's moorage-server is pinned to core
0 (``taskset -c 0``), h2load to core 1 sends a fixed number of calls (iris model, one row, the
bodies of bench/peers/payloads.py), and the server's CPU time (utime + stime from
``/proc/<pid>/stat``, its child processes included) is read before and after. CPU seconds per
call hardly move when other processes compete for the cores, unlike requests per second
(printed beside it, with the load average, for what it is worth).

Trees are measured in turn, round after round (the order reversed every other round); each
point reports the median of its rounds. A tree is a checkout of this repository: its
``packages/*/src`` go first on ``PYTHONPATH``, so the same ``.venv`` runs old and new code::

    git worktree add /tmp/base HEAD~3
    python3 bench/grpc_cpu.py --tree base=/tmp/base --tree new=. -n 20000 -c 1,8,64

Needs h2load and the kserve and triton peer venvs (bench/setup-peers.sh) to build the model
and the request body. Extra server flags go after ``--server-args`` (e.g.
``--server-args=--enable_access_log=true``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = pathlib.Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS_DIR = pathlib.Path(
    os.environ.get("PEERS_DIR", pathlib.Path.home() / ".cache" / "moorage-peers")
)
MODEL_NAME = "sklearn-iris"
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                text = pathlib.Path(f"/proc/{current}/task/{task}/children").read_text()
                queue += [int(child) for child in text.split()]
    return pids


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its descendants."""
    total = 0
    for current in tree_pids(pid):
        with contextlib.suppress(OSError):
            fields = pathlib.Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / TICKS


def h2load(port: int, body: pathlib.Path, conns: int, requests: int) -> tuple[float, int, str]:
    argv = ["taskset", "-c", "1", "h2load", "-t1", f"-c{conns}", "-m1", f"-n{requests}"]
    argv += ["-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body)]
    argv.append(f"http://127.0.0.1:{port}{GRPC_PATH}")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    return rps, int(done.group(1)), out


class Server:
    def __init__(self, name: str, tree: pathlib.Path, model_dir: pathlib.Path, extra: list[str]):
        self.name = name
        self.http, self.grpc = free_port(), free_port()
        src = [str(p) for p in sorted((tree / "packages").glob("*/src"))]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(src))
        argv = ["taskset", "-c", "0", str(REPO / ".venv" / "bin" / "python"), "-m"]
        argv += ["moorage.server", "--model_name", MODEL_NAME, "--model_dir", str(model_dir)]
        argv += ["--http_port", str(self.http), "--grpc_port", str(self.grpc)]
        argv += ["--host", "127.0.0.1", "--workers", "1", *extra]
        self.log = pathlib.Path(tempfile.gettempdir()) / f"grpc-cpu-{name}-{self.grpc}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait(self, body: pathlib.Path) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"{self.name} exited:\n{self.log.read_text()}")
            with contextlib.suppress(subprocess.SubprocessError, AttributeError):
                if h2load(self.grpc, body, 1, 1)[1] == 1:
                    return
            time.sleep(0.3)
        sys.exit(f"{self.name} not ready in 60 s")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


def prepare(work: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    model = work / "model"
    payloads = work / "payloads"
    if not (model / "model.joblib").exists():
        python = PEERS_DIR / "kserve" / "bin" / "python"
        subprocess.run(
            [str(python), str(BENCH / "models" / "build_iris.py"), str(model)],
            check=True, stdout=subprocess.DEVNULL, timeout=300,
        )  # fmt: skip
    if not (payloads / "grpc.bin").exists():
        python = PEERS_DIR / "triton" / "bin" / "python"
        subprocess.run(
            [str(python), str(BENCH / "peers" / "payloads.py"), "write", str(payloads),
             "--model", MODEL_NAME, "--rows", "1", "--grpc-contents", "raw"],
            check=True, stdout=subprocess.DEVNULL, timeout=300,
        )  # fmt: skip
    return model, payloads / "grpc.bin"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH")
    parser.add_argument("-n", "--requests", type=int, default=20000)
    parser.add_argument("-c", "--connections", default="8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=pathlib.Path, default=None, help="model/payload cache")
    parser.add_argument("--server-args", default="", help="extra moorage-server flags")
    args = parser.parse_args()
    work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="grpc-cpu-"))
    work.mkdir(parents=True, exist_ok=True)
    model, body = prepare(work)
    trees = []
    for spec in args.tree:
        name, _, path = spec.partition("=")
        trees.append((name, pathlib.Path(path).resolve()))
    conns = [int(c) for c in args.connections.split(",")]
    extra = shlex.split(args.server_args)
    servers = [Server(name, tree, model, extra) for name, tree in trees]
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    try:
        for server in servers:
            server.wait(body)
            h2load(server.grpc, body, 8, 2000)  # warm-up
        for round_ in range(args.rounds):
            order = servers if round_ % 2 == 0 else servers[::-1]
            for c in conns:
                for server in order:
                    before = cpu_seconds(server.process.pid)
                    rps, ok, out = h2load(server.grpc, body, c, args.requests)
                    spent = cpu_seconds(server.process.pid) - before
                    if ok != args.requests:
                        print(f"{server.name}: {args.requests - ok} failed\n{out}")
                    us = spent / max(ok, 1) * 1e6
                    results.setdefault((server.name, c), []).append((us, rps))
                    load = os.getloadavg()[0]
                    print(f"round {round_ + 1} {server.name:>8} c={c:<3} {us:7.1f} us/call "
                          f"{rps:8.0f} req/s  (load {load:.2f})", flush=True)  # fmt: skip
    finally:
        for server in servers:
            server.stop()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\nmedian of {args.rounds} rounds, {args.requests} calls each ({uptime})")
    for c in conns:
        for server in servers:
            runs = results[(server.name, c)]
            us = statistics.median(r[0] for r in runs)
            rps = statistics.median(r[1] for r in runs)
            print(f"  c={c:<3} {server.name:>8}: {us:7.1f} us/call server CPU  {rps:8.0f} req/s")


if __name__ == "__main__":
    main()
