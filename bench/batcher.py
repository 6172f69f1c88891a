"""moorage-server with and without its in-process batcher, on a 100-tree random forest.

    .venv/bin/python bench/batcher.py                    # 2 rounds, 10 s per point
    .venv/bin/python bench/batcher.py -d 5 --rounds 3 --json out.json

The model: scikit-learn's RandomForestClassifier (100 trees) trained on ``make_classification``
(64 rows x 20 features, seed 0), served by moorage-server's sklearn runtime. Two servers run at
once on their own ports, both pinned to core 0 (the idle one uses no CPU): one plain, one with
``--enable_batcher --max_batchsize 32 --max_latency 10``. wrk (pinned to core 1) drives each in
turn with 16 keep-alive connections, each request one row (v2 JSON REST); the points alternate
(plain, batched, batched, plain, ...) so that drift of the machine's speed falls on both.
Figures are medians over the rounds.

Printed: req/s, p50 and p99 of each; the server's CPU seconds per request (from
``/proc/<pid>/stat``, robust to other load on the machine); rows per batched predict (from the
batcher's histogram on ``/metrics``); and the time of one batch's predict measured alone (the
runtime's ``predict`` on 16 and on 32 rows, in this process, pinned to core 0). Then the bars:

* batched req/s >= 2 x plain req/s;
* batched p99 <= max_latency + 2 x one batch's predict (16 rows, the largest batch 16
  connections can form).

Needs the moorage venv (scikit-learn, joblib) and wrk on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass

SERVER_CPU, LOADGEN_CPU = "0", "1"
CONNECTIONS = 16
MAX_BATCHSIZE = 32
MAX_LATENCY_MS = 10.0
FEATURES = 20
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}
WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
"""


@dataclass
class Point:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_ms_per_request: float


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_model(work: pathlib.Path) -> tuple[pathlib.Path, list[list[float]]]:
    import joblib
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    x, y = make_classification(n_samples=64, n_features=FEATURES, random_state=0)
    model_dir = work / "forest"
    model_dir.mkdir()
    forest = RandomForestClassifier(n_estimators=100, random_state=0).fit(x, y)
    joblib.dump(forest, model_dir / "model.joblib")
    return model_dir, x.astype("float32").tolist()


def predict_alone_ms(
    model_dir: pathlib.Path, rows: list[list[float]], sizes: tuple[int, ...]
) -> dict[int, tuple[float, float]]:
    """Per batch size: the median (wall ms, CPU ms) of the sklearn runtime's ``predict`` on that
    many rows, in this process. The sizes are interleaved so that drift falls on all of them;
    the CPU time (the forest predicts in the calling thread) is robust to other load."""
    import numpy as np

    from moorage.core.protocol import InferRequest, InferTensor
    from moorage.server.runtimes.sklearn import SKLearnModel

    model = SKLearnModel("forest", model_dir)
    model.load()
    requests = {}
    for n in sizes:
        batch = np.asarray((rows * (n // len(rows) + 1))[:n], dtype=np.float32)
        requests[n] = InferRequest("forest", [InferTensor.from_numpy("input-0", batch)])
        for _ in range(5):
            model.predict(requests[n])
    wall: dict[int, list[float]] = {n: [] for n in sizes}
    cpu: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(60):
        for n in sizes:
            t0, c0 = time.perf_counter(), time.thread_time()
            model.predict(requests[n])
            cpu[n].append((time.thread_time() - c0) * 1000)
            wall[n].append((time.perf_counter() - t0) * 1000)
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in sizes}


class Server:
    def __init__(self, name: str, model_dir: pathlib.Path, extra: list[str], logs: pathlib.Path):
        self.name = name
        self.http = free_port()
        argv = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "moorage.server"]
        argv += ["--model_name", "forest", "--model_dir", str(model_dir), "--host", "127.0.0.1"]
        argv += ["--http_port", str(self.http), "--grpc_port", str(free_port()), *extra]
        argv += ["--enable_latency_logging", "false"]
        self.log = logs / f"{name}.log"
        self.process = subprocess.Popen(
            argv, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=False
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url("/v2/models/forest/ready"), timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{name} did not start:\n{self.log.read_text()[-2000:]}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}{path}"

    def cpu_seconds(self) -> float:
        fields = pathlib.Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1]
        utime, stime = fields.split()[11:13]
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    def infer(self, row: list[float]) -> list[int]:
        body = {
            "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, FEATURES], "data": row}]
        }
        request = urllib.request.Request(
            self.url("/v2/models/forest/infer"),
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            return list(json.loads(r.read())["outputs"][0]["data"])

    def batch_rows(self) -> tuple[float, float]:
        """(batched predict calls, rows in them) from the batcher's histogram."""
        with urllib.request.urlopen(self.url("/metrics"), timeout=5) as r:
            text = r.read().decode()
        count = total = 0.0
        for line in text.splitlines():
            if line.startswith('moorage_server_batch_rows_count{model="forest"}'):
                count = float(line.split()[-1])
            elif line.startswith('moorage_server_batch_rows_sum{model="forest"}'):
                total = float(line.split()[-1])
        return count, total

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def parse_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unparsed wrk duration {text!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


def run_wrk(server: Server, script: pathlib.Path, seconds: float) -> Point:
    argv = ["taskset", "-c", LOADGEN_CPU, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s"]
    argv += ["--latency", "--timeout", "10s", "-s", str(script)]
    argv.append(server.url("/v2/models/forest/infer"))
    cpu = server.cpu_seconds()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    cpu = server.cpu_seconds() - cpu
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    found = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if "50" not in pct or "99" not in pct or found is None or rps is None:
        raise RuntimeError(f"wrk printed no figures: {out.strip()[-400:]!r}")
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(match.group(1))
    socket_errors = r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
    if match := re.search(socket_errors, out):
        errors += sum(int(g) for g in match.groups())
    requests = int(found.group(1))
    return Point(
        rps=float(rps.group(1)),
        p50_ms=parse_ms(pct["50"]),
        p99_ms=parse_ms(pct["99"]),
        errors=errors,
        requests=requests,
        cpu_ms_per_request=cpu * 1000 / max(requests, 1),
    )


def median_point(points: list[Point]) -> Point:
    return Point(
        rps=statistics.median(p.rps for p in points),
        p50_ms=statistics.median(p.p50_ms for p in points),
        p99_ms=statistics.median(p.p99_ms for p in points),
        errors=sum(p.errors for p in points),
        requests=sum(p.requests for p in points),
        cpu_ms_per_request=statistics.median(p.cpu_ms_per_request for p in points),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each point")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=pathlib.Path, help="write the figures here too")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        log("wrk is not installed (apt-get install wrk, or bash bench/setup-peers.sh)")
        return 2
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="moorage-batcher-") as tmp:
        work = pathlib.Path(tmp)
        model_dir, rows = build_model(work)
        os.sched_setaffinity(0, {int(SERVER_CPU)})
        timed = predict_alone_ms(model_dir, rows, (1, CONNECTIONS, MAX_BATCHSIZE))
        alone = {n: wall for n, (wall, _) in timed.items()}
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        body = work / "body.json"
        body.write_text(
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "input-0",
                            "datatype": "FP32",
                            "shape": [1, FEATURES],
                            "data": rows[0],
                        }
                    ]
                }
            )
        )
        script = work / "infer.lua"
        script.write_text(WRK_LUA.format(body=body))
        batched_flags = [
            "--enable_batcher",
            "--max_batchsize",
            str(MAX_BATCHSIZE),
            "--max_latency",
            f"{MAX_LATENCY_MS:g}",
        ]
        servers = {
            "plain": Server("plain", model_dir, [], work),
            "batched": Server("batched", model_dir, batched_flags, work),
        }
        try:
            want = servers["plain"].infer(rows[0])
            assert servers["batched"].infer(rows[0]) == want, "the two servers disagree"
            runs: dict[str, list[Point]] = {name: [] for name in servers}
            before = servers["batched"].batch_rows()
            for r in range(args.rounds):
                order = ["plain", "batched"] if r % 2 == 0 else ["batched", "plain"]
                for name in order:
                    server = servers[name]
                    run_wrk(server, script, args.warmup)
                    point = run_wrk(server, script, args.duration)
                    runs[name].append(point)
                    log(
                        f"round {r + 1} {name}: {point.rps:.0f} req/s, p50 {point.p50_ms:.2f} "
                        f"ms, p99 {point.p99_ms:.2f} ms, errors {point.errors}"
                    )
            for server in servers.values():
                assert server.infer(rows[0]) == want, f"{server.name} answers wrong after load"
            calls, total = servers["batched"].batch_rows()
            calls, total = calls - before[0], total - before[1]
        finally:
            for server in servers.values():
                server.stop()
    load_after = os.getloadavg()
    plain, batched = median_point(runs["plain"]), median_point(runs["batched"])
    rows_per_batch = total / calls if calls else 0.0
    print(
        f"moorage-server, sklearn RandomForestClassifier (100 trees, 20 features), v2 JSON REST, "
        f"{CONNECTIONS} connections x 1 row, wrk on core {LOADGEN_CPU}, server on core "
        f"{SERVER_CPU}, {args.rounds} rounds x {args.duration:g} s (medians)"
    )
    print(
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f}, after "
        f"{load_after[0]:.2f} {load_after[1]:.2f}; {os.cpu_count()} CPUs"
    )
    print()
    print("| server | req/s | p50 ms | p99 ms | server CPU ms/req | errors |")
    print("|---|---|---|---|---|---|")
    label = f"batched ({MAX_BATCHSIZE} rows, {MAX_LATENCY_MS:g} ms)"
    for name, p in (("plain", plain), (label, batched)):
        print(
            f"| {name} | {p.rps:.0f} | {p.p50_ms:.2f} | {p.p99_ms:.2f} | "
            f"{p.cpu_ms_per_request:.3f} | {p.errors} |"
        )
    print()
    sizes = ", ".join(
        f"{n} row{'s' if n > 1 else ''} {wall:.2f} ms ({cpu:.2f} ms CPU)"
        for n, (wall, cpu) in timed.items()
    )
    print(f"one predict alone (the runtime's predict, core {SERVER_CPU}, median): {sizes}")
    print(f"rows per batched predict under load: {rows_per_batch:.1f}")
    speedup = batched.rps / plain.rps if plain.rps else 0.0
    p99_bar = MAX_LATENCY_MS + 2 * alone[CONNECTIONS]
    bars = [
        (f"batched req/s >= 2 x plain ({speedup:.2f}x)", speedup >= 2),
        (
            f"batched p99 {batched.p99_ms:.2f} ms <= max_latency + 2 x predict"
            f"({CONNECTIONS} rows) = {p99_bar:.2f} ms",
            batched.p99_ms <= p99_bar,
        ),
        ("no errors", plain.errors == 0 and batched.errors == 0),
    ]
    for text, ok in bars:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "plain": asdict(plain),
                    "batched": asdict(batched),
                    "rounds": {k: [asdict(p) for p in v] for k, v in runs.items()},
                    "predict_alone_ms": {n: {"wall": w, "cpu": c} for n, (w, c) in timed.items()},
                    "rows_per_batch": rows_per_batch,
                    "load_before": load_before,
                    "load_after": load_after,
                },
                indent=2,
            )
        )
    return 0 if all(ok for _, ok in bars) else 1


if __name__ == "__main__":
    raise SystemExit(main())
