"""Serve one sklearn model with moorage-server, KServe 0.14 and MLServer 1.7; measure each.

Every server loads the same ``model.joblib`` (LogisticRegression on iris, built by
bench/models/build_iris.py), runs one worker pinned to core 0 (``taskset -c 0``) and is
driven by a C load generator pinned to core 1: wrk for REST (HTTP/1.1 keep-alive) and
h2load for gRPC (HTTP/2, one stream per connection).  All servers get byte-identical
request bodies (bench/peers/payloads.py).  For each server the script reports:

* requests/s, p50 and p99 latency at 1, 8 and 64 connections for REST v1, REST v2 JSON,
  REST v2 binary (binary tensor extension) and gRPC v2 ModelInfer;
* cold start: process launch to ``GET /v2/models/<name>/ready`` answering 200 (median);
* RSS of the server's whole process tree once ready (idle) and its peak under load.

Then the ratios of moorage to each peer and the issue's targets.  Peers are created by
bench/setup-peers.sh.  Only 127.0.0.1 is used; every load run is bounded in time.

The machine's speed drifts over minutes, so by default all servers run at once (idle but
for the one under load) and every load point is measured on each server back to back; the
whole sweep is repeated ``--rounds`` times (default 2), the server order reversed every
other round, and each point reports the median of its rounds.  ``--sequential`` measures
one server completely, then the next, each point once (the old order).

    python bench/server.py                       # everything, 5 s per point (~10 min)
    python bench/server.py --only kserve,mlserver --protocols v2-json,grpc -d 2
    python bench/server.py --json out.json       # also keep the raw figures
    python bench/server.py --sequential          # one server after the other (~5 min)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

BENCH = pathlib.Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS_DIR = pathlib.Path(
    os.environ.get("PEERS_DIR", pathlib.Path.home() / ".cache" / "moorage-peers")
)
MODEL_NAME = "sklearn-iris"
SERVER_CPU = "0"
LOADGEN_CPU = "1"
PROTOCOLS = ("v1", "v2-json", "v2-binary", "grpc")
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"

# moorage's server command, in one place.  Placeholders are filled per run; override the
# whole line with --moorage-cmd.  The sklearn runtime is chosen from the model file.
# Full semantics on, as KServe's defaults have them: metrics, request ids and one access log
# line per request (to the server's log file, as KServe's); the inference logger stays off.
MOORAGE_CMD = (
    f"{REPO}/.venv/bin/moorage-server --model_name {{model_name}} --model_dir {{model_dir}}"
    " --http_port {http_port} --grpc_port {grpc_port} --host 127.0.0.1 --workers 1"
    " --enable_access_log true"
)
# The bare-handler ceiling (bench/ceiling.py): parse -> predict -> render on the same stack.
CEILING_CMD = (
    f"{REPO}/.venv/bin/python {BENCH}/ceiling.py --model_name {{model_name}}"
    " --model_dir {model_dir} --http_port {http_port} --host 127.0.0.1"
)
KSERVE_CMD = (
    f"{PEERS_DIR}/kserve/bin/python {BENCH}/peers/kserve_sklearn.py --model_name {{model_name}}"
    " --model_dir {model_dir} --http_port {http_port} --grpc_port {grpc_port} --workers 1"
)
MLSERVER_CMD = f"{PEERS_DIR}/mlserver/bin/mlserver start {{repository}}"
TRITON_PYTHON = PEERS_DIR / "triton" / "bin" / "python"
SKLEARN_PYTHON = PEERS_DIR / "kserve" / "bin" / "python"
PAYLOADS_PY = BENCH / "peers" / "payloads.py"


@dataclasses.dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int


@dataclasses.dataclass
class Peer:
    """One server under test: how to launch it and which protocols it speaks."""

    name: str
    command: str
    protocols: tuple[str, ...]
    lacks: dict[str, str] = dataclasses.field(default_factory=dict)
    prepare: Callable[[Peer, pathlib.Path, Ports], dict[str, str]] | None = None
    settings: dict[str, object] = dataclasses.field(default_factory=dict)

    def argv(self, work: pathlib.Path, ports: Ports) -> list[str]:
        fields = {
            "model_name": MODEL_NAME,
            "model_dir": str(work / "model"),
            "repository": str(work / "mlserver"),
            "http_port": str(ports.http),
            "grpc_port": str(ports.grpc),
        }
        if self.prepare is not None:
            fields.update(self.prepare(self, work, ports))
        return shlex.split(self.command.format(**fields))

    def available(self) -> str | None:
        """None when the peer can run, else why not."""
        program = shlex.split(self.command)[0]
        if not pathlib.Path(program).exists():
            return f"{program} not found (run bench/setup-peers.sh or build moorage)"
        if self.name == "moorage":
            probe = subprocess.run(
                [program, "--help"], capture_output=True, text=True, timeout=60, check=False
            )
            if probe.returncode != 0:
                tail = (probe.stderr or probe.stdout).strip().splitlines()[-1:]
                return f"moorage-server --help failed: {' '.join(tail)}"
        return None


def prepare_mlserver(peer: Peer, work: pathlib.Path, ports: Ports) -> dict[str, str]:
    settings = {
        "host": "127.0.0.1",
        "http_port": ports.http,
        "grpc_port": ports.grpc,
        "metrics_port": ports.metrics,
        **peer.settings,
    }
    (work / "mlserver" / "settings.json").write_text(json.dumps(settings))
    return {}


def all_peers(args: argparse.Namespace) -> list[Peer]:
    return [
        Peer("moorage", args.moorage_cmd, PROTOCOLS),
        Peer("kserve", KSERVE_CMD, PROTOCOLS),
        Peer(
            "mlserver",
            MLSERVER_CMD,
            ("v2-json", "grpc"),
            lacks={
                "v1": "MLServer serves no v1 protocol",
                "v2-binary": "MLServer 1.7 has no binary tensor extension",
            },
            prepare=prepare_mlserver,
            # MLServer's default is one inference worker process beside the front end.
            settings={"parallel_workers": args.mlserver_parallel_workers},
        ),
        Peer(
            "ceiling",
            CEILING_CMD,
            ("v1", "v2-json"),
            lacks={
                "v2-binary": "the ceiling handler parses JSON only",
                "grpc": "the ceiling handler is REST only",
            },
        ),
    ]


# --------------------------------------------------------------------------- payloads


@dataclasses.dataclass(frozen=True)
class Payloads:
    directory: pathlib.Path
    binary_header_length: int
    expected: list[int]

    def rest(self, protocol: str) -> tuple[str, pathlib.Path, dict[str, str]]:
        """(path, body file, headers) of a REST protocol."""
        if protocol == "v1":
            path = f"/v1/models/{MODEL_NAME}:predict"
            return path, self.directory / "v1.json", {"Content-Type": "application/json"}
        path = f"/v2/models/{MODEL_NAME}/infer"
        if protocol == "v2-json":
            return path, self.directory / "v2.json", {"Content-Type": "application/json"}
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(self.binary_header_length),
        }
        return path, self.directory / "v2-binary.bin", headers


def build_inputs(work: pathlib.Path, *, rows: int, grpc_contents: str) -> Payloads:
    """Train the model once and write every body; lay out each server's model directory."""
    repo_model = work / "mlserver" / MODEL_NAME
    subprocess.run(
        [str(SKLEARN_PYTHON), str(BENCH / "models" / "build_iris.py"), str(repo_model)],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=300,
    )
    (work / "model").mkdir()
    # A hard link: moorage, KServe and MLServer open the very same file.
    os.link(repo_model / "model.joblib", work / "model" / "model.joblib")
    payload_dir = work / "payloads"
    options = ["--model", MODEL_NAME, "--rows", str(rows), "--grpc-contents", grpc_contents]
    subprocess.run(
        [str(TRITON_PYTHON), str(PAYLOADS_PY), "write", str(payload_dir), *options],
        check=True,
        timeout=300,
    )
    meta = json.loads((payload_dir / "payloads.json").read_text())
    return Payloads(payload_dir, meta["binary_header_length"], meta["expected_classes"])


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants, in KiB (0 once gone)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        proc = pathlib.Path(f"/proc/{current}")
        with contextlib.suppress(OSError):
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in (proc / "task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(child) for child in children)
    return total


class RssSampler:
    """Peak RSS of a process tree, sampled every 200 ms in a thread while in use."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, tree_rss_kib(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def http_request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


class Server:
    """A peer's process on core 0, in its own session so the whole group can be stopped."""

    def __init__(self, peer: Peer, work: pathlib.Path, log_dir: pathlib.Path) -> None:
        self.peer = peer
        self.ports = Ports(free_port(), free_port(), free_port())
        self.argv = ["taskset", "-c", SERVER_CPU, *peer.argv(work, self.ports)]
        self.log_path = log_dir / f"{peer.name}-{self.ports.http}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.work = work
        self.cold_start = float("nan")

    def start(self, *, timeout: float) -> float:
        """Launch and wait for model readiness; return seconds from launch to ready."""
        log = self.log_path.open("wb")
        cwd = self.work / "mlserver" if self.peer.name == "mlserver" else self.work
        started = time.perf_counter()
        self.process = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
        log.close()
        deadline = started + timeout
        ready_path = f"/v2/models/{MODEL_NAME}/ready"
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.peer.name} exited early:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _, _ = http_request(self.ports.http, "GET", ready_path, timeout=1.0)
                if status == 200:
                    self.cold_start = time.perf_counter() - started
                    return self.cold_start
            time.sleep(0.005)
        raise TimeoutError(f"{self.peer.name} not ready in {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        """The end of the server's log, since the work dir is usually deleted afterwards."""
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(f"    {line[:200]}" for line in text[-lines:])
        return f"    (no log at {self.log_path})"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        group = self.process.pid  # the session leader's pid is the group id
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            self.process.wait(timeout=15)
        # Workers that outlived their parent still carry the group id.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


@contextlib.contextmanager
def running(peer: Peer, work: pathlib.Path, log_dir: pathlib.Path, timeout: float) -> Iterator:
    server = Server(peer, work, log_dir)
    try:
        server.start(timeout=timeout)
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- checks


def check_rest(server: Server, payloads: Payloads, protocol: str) -> str | None:
    """Send one request; None when the predictions are right, else what went wrong."""
    path, body_file, headers = payloads.rest(protocol)
    try:
        status, reply_headers, body = http_request(
            server.ports.http, "POST", path, body=body_file.read_bytes(), headers=headers
        )
    except (OSError, http.client.HTTPException) as error:
        return f"request failed: {error}"
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    lowered = {k.lower(): v for k, v in reply_headers.items()}
    header_length = lowered.get("inference-header-content-length")
    head = body[: int(header_length)] if header_length else body
    try:
        document = json.loads(head)
    except ValueError:
        return f"reply is not JSON: {body[:200]!r}"
    if protocol == "v1":
        got = document.get("predictions")
    else:
        output = document["outputs"][0]
        got = output.get("data")
        if got is None and header_length:
            raw = body[int(header_length) :]
            width = {"INT64": 8, "INT32": 4}.get(output.get("datatype"), 8)
            got = [
                int.from_bytes(raw[i : i + width], "little", signed=True)
                for i in range(0, len(raw), width)
            ]
    flat = [int(v[0]) if isinstance(v, list) else int(v) for v in got or []]
    if flat != payloads.expected:
        return f"wrong predictions {got!r}, expected {payloads.expected}"
    return None


def check_grpc(server: Server, payloads: Payloads) -> str | None:
    port = str(server.ports.grpc)
    result = subprocess.run(
        [
            str(TRITON_PYTHON),
            str(PAYLOADS_PY),
            "check-grpc",
            str(payloads.directory),
            "--port",
            port,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        return (result.stdout or result.stderr).strip()[-300:]
    outputs = json.loads(result.stdout)["outputs"]
    if [int(v) for v in outputs[0]["data"]] != payloads.expected:
        return f"wrong predictions {outputs}"
    return None


# --------------------------------------------------------------------------- load


@dataclasses.dataclass
class Point:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    # Interleaved runs: the point of each round; the figures above are their medians
    # (errors and requests their sums).  Empty for a --sequential run.
    rounds: list[Point] = dataclasses.field(default_factory=list)


def median_point(runs: list[Point]) -> Point:
    """One point from the rounds of a load point: median figures, summed counts."""
    return Point(
        rps=statistics.median(r.rps for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        errors=sum(r.errors for r in runs),
        requests=sum(r.requests for r in runs),
        rounds=list(runs),
    )


class LoadFailed(RuntimeError):
    """A load generator run that produced no figures."""


WRK_LUA = """wrk.method = "POST"
{headers}
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def wrk_script(work: pathlib.Path, payloads: Payloads, protocol: str) -> tuple[str, pathlib.Path]:
    path, body_file, headers = payloads.rest(protocol)
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    script = work / f"{protocol}.lua"
    script.write_text(WRK_LUA.format(headers=lines, body=body_file))
    return path, script


def parse_duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unparsed wrk duration {text!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


def run_wrk(port: int, path: str, script: pathlib.Path, conns: int, seconds: float) -> Point:
    argv = ["taskset", "-c", LOADGEN_CPU, "wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s"]
    argv += ["--latency", "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    if "50" not in percentiles or "99" not in percentiles:
        raise LoadFailed(f"wrk printed no latency distribution: {out.strip()[-400:]!r}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    ):
        errors += sum(int(g) for g in match.groups())
    return Point(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        p50_ms=parse_duration_ms(percentiles["50"]),
        p99_ms=parse_duration_ms(percentiles["99"]),
        errors=errors,
        requests=requests,
    )


def h2load_argv(port: int, body: pathlib.Path, conns: int) -> list[str]:
    argv = ["taskset", "-c", LOADGEN_CPU, "h2load", "-t1", f"-c{conns}", "-m1"]
    argv += ["-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body)]
    return [*argv, f"http://127.0.0.1:{port}{GRPC_PATH}"]


def h2load_data_bytes(out: str) -> int:
    return int(re.search(r"\(\d+\) headers.*?, [\d.]+\w*B \((\d+)\) data", out).group(1))


def grpc_reply_size(port: int, payloads: Payloads) -> int:
    """DATA bytes of one good reply: under load every reply must be this size."""
    argv = [*h2load_argv(port, payloads.directory / "grpc.bin", 1), "-n1"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    return h2load_data_bytes(out)


def run_h2load(
    port: int, body: pathlib.Path, conns: int, seconds: float, warmup: float, reply_size: int
) -> Point:
    with tempfile.NamedTemporaryFile(suffix=".tsv") as log:
        argv = h2load_argv(port, body, conns)
        argv[-1:-1] = ["-D", f"{seconds:g}", "--warm-up-time", f"{warmup:g}"]
        argv[-1:-1] = ["--log-file", log.name]
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + warmup + 60, check=True
        ).stdout
        rows = [line.split("\t") for line in pathlib.Path(log.name).read_text().splitlines()]
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    succeeded = int(done.group(2))
    errors = int(done.group(1)) - succeeded
    # h2load sees HTTP 200 even for a gRPC error (the status is in the trailers, which
    # carry no DATA): DATA short of what good replies add up to means failed calls.
    expected = reply_size * succeeded
    data = h2load_data_bytes(out)
    if reply_size and data < 0.95 * expected:
        errors += round((expected - data) / reply_size)
    # h2load logs only the requests of the measured period, not the warm-up's.
    latencies = sorted(int(r[2]) / 1000 for r in rows)
    if not latencies:  # like wrk without a latency distribution: no figures to keep
        raise LoadFailed(
            f"h2load logged no request in {seconds:g} s ({succeeded} succeeded, {errors} errors)"
        )
    return Point(
        rps=float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1)),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        errors=errors,
        requests=succeeded,
    )


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(pct / 100 * (len(sorted_values) - 1)))
    return sorted_values[index]


# --------------------------------------------------------------------------- one peer


@dataclasses.dataclass
class PeerResult:
    name: str
    cold_start_s: list[float] = dataclasses.field(default_factory=list)
    idle_rss_kib: int = 0
    loaded_rss_kib: int = 0
    points: dict[str, dict[int, Point]] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    failures: list[str] = dataclasses.field(default_factory=list)


def bench_peer(peer: Peer, args: argparse.Namespace, work: pathlib.Path, payloads: Payloads):
    """--sequential: one server alone from its cold start to its last point."""
    result = PeerResult(peer.name)
    logs = work / "logs"
    for _ in range(max(args.cold_runs - 1, 0)):
        with running(peer, work, logs, args.ready_timeout) as server:
            result.cold_start_s.append(server.cold_start)
    with running(peer, work, logs, args.ready_timeout) as server:
        result.cold_start_s.append(server.cold_start)
        log(f"{peer.name}: ready in {server.cold_start:.2f} s (pid {server.process.pid})")
        time.sleep(1.0)
        result.idle_rss_kib = tree_rss_kib(server.process.pid)
        with RssSampler(server.process.pid) as sampler:
            for protocol in args.protocols:
                if protocol not in peer.protocols:
                    result.skipped[protocol] = peer.lacks.get(protocol, "not supported")
                    continue
                bench_protocol(server, protocol, args, work, payloads, result)
        result.loaded_rss_kib = max(sampler.peak, result.idle_rss_kib)
    return result


def check(server: Server, payloads: Payloads, protocol: str) -> str | None:
    """check_grpc or check_rest; a check that raises is a failed check, not a failed run."""
    try:
        if protocol == "grpc":
            return check_grpc(server, payloads)
        return check_rest(server, payloads, protocol)
    except (subprocess.SubprocessError, OSError, ValueError, LookupError, TypeError) as error:
        return f"check raised {error!r}"[:300]


LoadRunner = Callable[[int], Point]  # connections -> the measured point (warm-up included)


def load_runner(server: Server, protocol: str, args, work, payloads: Payloads) -> LoadRunner:
    """How to measure one point of a protocol on a server, after checking it answers right.

    Raises LoadFailed when the check fails or the gRPC reply size cannot be read."""
    problem = check(server, payloads, protocol)
    if problem:
        raise LoadFailed(f"check failed: {problem}")
    if protocol == "grpc":
        try:
            reply_size = grpc_reply_size(server.ports.grpc, payloads)
        except (subprocess.SubprocessError, AttributeError, ValueError) as error:
            raise LoadFailed(f"no gRPC reply size: {error}") from error
        body = payloads.directory / "grpc.bin"

        def run_grpc(conns: int) -> Point:
            port = server.ports.grpc
            return run_h2load(port, body, conns, args.duration, args.warmup, reply_size)

        return run_grpc
    path, script = wrk_script(work, payloads, protocol)

    def run_rest(conns: int) -> Point:
        if args.warmup > 0:
            run_wrk(server.ports.http, path, script, conns, args.warmup)
        return run_wrk(server.ports.http, path, script, conns, args.duration)

    return run_rest


def bench_protocol(server, protocol, args, work, payloads, result: PeerResult) -> None:
    name = server.peer.name
    try:
        runner = load_runner(server, protocol, args, work, payloads)
    except LoadFailed as problem:
        result.skipped[protocol] = str(problem)
        log(f"{name} {protocol}: skipped, {problem}")
        return
    points: dict[int, Point] = {}
    for conns in args.connections:
        with point_errors(name, protocol, conns, result):
            points[conns] = runner(conns)
            log(f"{name} {protocol} c={conns}: {fmt_point(points[conns])}")
    problem = check(server, payloads, protocol)
    if problem:
        log(f"{name} {protocol}: failed its check after load: {problem}")
    result.points[protocol] = points


# --------------------------------------------------------------------------- all peers


def bench_interleaved(
    peers: list[Peer], args: argparse.Namespace, work: pathlib.Path, payloads: Payloads
) -> list[PeerResult]:
    """The default: every server up at once, each load point run on all of them back to back.

    Cold starts are timed first, one server at a time with nothing else running, in rounds:
    each round times the bare model load (the floor) and then one launch of every server, so
    that the floor and the servers' medians come from the same minutes.  Then all servers are
    started (each on its own ports, all on the server core; an idle one costs
    nothing) and the sweep (protocol, connections, server) is repeated ``args.rounds``
    times, the server order reversed every other round.  A point's figures are the medians
    of its rounds, so the ratios compare measurements taken seconds apart, not a whole
    server's run apart."""
    logs = work / "logs"
    results = {peer.name: PeerResult(peer.name) for peer in peers}
    floor: list[tuple[float, int]] = []
    for run in range(max(args.cold_runs, 1)):
        floor.append(model_load_once(work))
        for peer in peers:
            if peer.name not in results:
                continue
            try:
                with running(peer, work, logs, args.ready_timeout) as server:
                    results[peer.name].cold_start_s.append(server.cold_start)
                    log(
                        f"{peer.name}: cold start {run + 1}/{args.cold_runs}"
                        f" {server.cold_start:.2f} s (floor {floor[-1][0]:.2f} s)"
                    )
            except (RuntimeError, TimeoutError, subprocess.SubprocessError) as error:
                log(f"{peer.name}: failed: {error}")
                del results[peer.name]
    args.model_load_s = [seconds for seconds, _ in floor]
    args.model_load_rss_kib = int(statistics.median(kib for _, kib in floor))
    log_floor(args.model_load_s, args.model_load_rss_kib)
    with contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}
        for peer in peers:
            name = peer.name
            if name not in results:
                continue
            try:
                server = stack.enter_context(running(peer, work, logs, args.ready_timeout))
            except (RuntimeError, TimeoutError, subprocess.SubprocessError) as error:
                log(f"{name}: failed: {error}")
                del results[name]
                continue
            servers[name] = server
            log(
                f"{name}: up for the sweep (ready in {server.cold_start:.2f} s,"
                f" pid {server.process.pid})"
            )
        if not servers:
            return []
        time.sleep(1.0)
        for name, server in servers.items():
            results[name].idle_rss_kib = tree_rss_kib(server.process.pid)
        with contextlib.ExitStack() as sampling:
            samplers = {
                name: sampling.enter_context(RssSampler(server.process.pid))
                for name, server in servers.items()
            }
            sweep(servers, results, args, work, payloads)
        for name, sampler in samplers.items():
            result = results[name]
            result.loaded_rss_kib = max(sampler.peak, result.idle_rss_kib)
    return list(results.values())


def sweep(
    servers: dict[str, Server],
    results: dict[str, PeerResult],
    args: argparse.Namespace,
    work: pathlib.Path,
    payloads: Payloads,
) -> None:
    """Check every (server, protocol), run the rounds, check again, keep the medians."""
    runners: dict[str, dict[str, LoadRunner]] = {}  # protocol -> server -> runner
    for protocol in args.protocols:
        for name, server in servers.items():
            peer, result = server.peer, results[name]
            if protocol not in peer.protocols:
                result.skipped[protocol] = peer.lacks.get(protocol, "not supported")
                continue
            try:
                runners.setdefault(protocol, {})[name] = load_runner(
                    server, protocol, args, work, payloads
                )
            except LoadFailed as problem:
                result.skipped[protocol] = str(problem)
                log(f"{name} {protocol}: skipped, {problem}")
    runs: dict[tuple[str, str, int], list[Point]] = {}  # (server, protocol, conns) -> rounds
    order = list(servers)
    for round_index in range(args.rounds):
        label = f"round {round_index + 1}/{args.rounds}"
        names = order if round_index % 2 == 0 else order[::-1]
        for protocol, by_server in runners.items():
            for conns in args.connections:
                for name in names:
                    if name not in by_server:
                        continue
                    with point_errors(name, protocol, conns, results[name], label):
                        point = by_server[name](conns)
                        runs.setdefault((name, protocol, conns), []).append(point)
                        log(f"{name} {protocol} c={conns} {label}: {fmt_point(point)}")
    for protocol, by_server in runners.items():
        for name in by_server:
            problem = check(servers[name], payloads, protocol)
            if problem:
                log(f"{name} {protocol}: failed its check after load: {problem}")
            points = results[name].points.setdefault(protocol, {})
            for conns in args.connections:
                if (name, protocol, conns) in runs:
                    points[conns] = median_point(runs[name, protocol, conns])


@contextlib.contextmanager
def point_errors(
    name: str, protocol: str, conns: int, result: PeerResult, label: str = ""
) -> Iterator[None]:
    """A failed point is logged and noted; the other points still run."""
    try:
        yield
    except (LoadFailed, subprocess.SubprocessError, AttributeError, ValueError) as error:
        where = f"{protocol} c={conns}" + (f" {label}" if label else "")
        note = f"{where}: {error}"[:500]
        result.failures.append(note)
        log(f"{name} {note}")


# --------------------------------------------------------------------------- report

VERSIONS = {  # venv -> distributions whose versions the report names
    "kserve": ("kserve", "scikit-learn", "numpy", "uvicorn", "fastapi", "grpcio"),
    "mlserver": ("mlserver", "mlserver-sklearn", "scikit-learn", "uvicorn", "uvloop", "grpcio"),
    "triton": ("tritonclient", "grpcio", "aiohttp"),
}
MOORAGE_DISTS = ("moorage-server", "moorage-client", "moorage-core", "scikit-learn", "uvicorn")


def machine(load_before: tuple[float, ...]) -> list[str]:
    """Lines naming the machine, the tools and the package versions of this run."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    tools = []
    for argv in (["wrk", "--version"], ["h2load", "--version"]):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            tools.append((done.stdout or done.stderr).splitlines()[0].split(" Copyright")[0])
    lines = [
        f"- Machine: {os.cpu_count()} cores (`nproc`), {cpu}, Linux {os.uname().release},"
        f" Python {sys.version.split()[0]}; load average {load_before[0]:.2f} at start,"
        f" {os.getloadavg()[0]:.2f} at end",
        f"- Tools: {'; '.join(tools)}",
    ]
    for venv, names in VERSIONS.items():
        freeze = PEERS_DIR / venv / "freeze.txt"
        if freeze.exists():
            pins = dict(
                line.split("==", 1) for line in freeze.read_text().splitlines() if "==" in line
            )
            found = [f"{n}=={pins[n]}" for n in names if n in pins]
            lines.append(f"- Peer venv `{venv}`: {', '.join(found)}")
    python = REPO / ".venv" / "bin" / "python"
    if python.exists():
        probe = (
            "import importlib.metadata as m\n"
            f"for n in {MOORAGE_DISTS!r}:\n"
            "    try: print(f'{n}=={m.version(n)}')\n"
            "    except m.PackageNotFoundError: pass"
        )
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False
            )
            lines.append(f"- moorage `.venv`: {', '.join(done.stdout.split())}")
    return lines


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def fmt_point(point: Point) -> str:
    return f"{point.rps:,.0f} req/s  p50 {point.p50_ms:.2f} ms  p99 {point.p99_ms:.2f} ms" + (
        f"  ERRORS {point.errors}" if point.errors else ""
    )


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


MODEL_LOAD = "import joblib, sys; joblib.load(sys.argv[1])"
# The same, printing its resident memory once the model is in (VmRSS, KiB).
_MODEL_LOAD_RSS = (
    MODEL_LOAD + "; print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0]"
    ".split()[1])"
)


def model_load_once(work: pathlib.Path) -> tuple[float, int]:
    """Seconds for a bare Python on the server core to import scikit-learn and unpickle the
    model, and its RSS in KiB then: what any server's cold start and idle memory contain,
    whatever the server does around it."""
    python = REPO / ".venv" / "bin" / "python"
    model = work / "model" / "model.joblib"
    argv = ["taskset", "-c", SERVER_CPU, str(python), "-c", _MODEL_LOAD_RSS, str(model)]
    started = time.perf_counter()
    done = subprocess.run(argv, check=True, timeout=120, capture_output=True, text=True)
    return time.perf_counter() - started, int(done.stdout.split()[-1])


def model_load_floor(work: pathlib.Path, runs: int) -> tuple[list[float], int]:
    """:func:`model_load_once` ``runs`` times in a row: the times and the median RSS."""
    measured = [model_load_once(work) for _ in range(max(runs, 1))]
    times = [seconds for seconds, _ in measured]
    rss = int(statistics.median(kib for _, kib in measured))
    log_floor(times, rss)
    return times, rss


def log_floor(times: list[float], rss_kib: int) -> None:
    log(
        "model load alone (python + scikit-learn + joblib.load): "
        f"{fmt_runs(times)}, RSS {rss_kib / 1024:.0f} MiB"
    )


def fmt_runs(times: list[float]) -> str:
    runs = ", ".join(f"{t:.2f}" for t in times)
    return f"{statistics.median(times):.2f} s ({runs})" if times else "-"


def report(results: list[PeerResult], args: argparse.Namespace) -> str:
    if args.sequential:
        order = "sequential: one server at a time, one run per point"
    else:
        order = (
            f"interleaved: all servers up, each point run on every server back to back,"
            f" {args.rounds} round(s) alternating the server order; req/s, p50 and p99 are"
            f" the median of the rounds, errors their sum"
        )
    out = [
        *machine(args.load_before),
        f"- Load: {args.duration:g} s per point after {args.warmup:g} s warm-up; server on core"
        f" {SERVER_CPU}, wrk/h2load on core {LOADGEN_CPU}; {args.rows} row(s) of 4 FP32 per"
        f" request; gRPC {args.grpc_contents} contents; {order}.",
        "",
        "| server | protocol | conns | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        for protocol in args.protocols:
            if protocol in res.skipped:
                out.append(f"| {res.name} | {protocol} | - | skipped: {res.skipped[protocol]} |||")
                continue
            for conns, p in res.points.get(protocol, {}).items():
                out.append(
                    f"| {res.name} | {protocol} | {conns} | {p.rps:,.0f} | {p.p50_ms:.2f}"
                    f" | {p.p99_ms:.2f} | {p.errors} |"
                )
    out += [
        "",
        "| server | cold start s (median of runs) | idle RSS MiB | loaded RSS MiB (peak) |",
        "|---|---|---:|---:|",
    ]
    for res in results:
        runs = ", ".join(f"{s:.2f}" for s in res.cold_start_s)
        median = statistics.median(res.cold_start_s) if res.cold_start_s else float("nan")
        out.append(
            f"| {res.name} | {median:.2f} ({runs}) | {res.idle_rss_kib / 1024:.0f}"
            f" | {res.loaded_rss_kib / 1024:.0f} |"
        )
    floor = getattr(args, "model_load_s", [])
    if floor:
        out += [
            "",
            f"Model load alone (bare `python -c '{MODEL_LOAD}'` on the server core, moorage's"
            f" venv): {fmt_runs(floor)}, RSS {getattr(args, 'model_load_rss_kib', 0) / 1024:.0f}"
            " MiB.",
        ]
    failures = [f"- {res.name} {note}" for res in results for note in res.failures]
    if failures:
        out += ["", "Points that failed:", "", *failures]
    by_name = {res.name: res for res in results}
    if "moorage" in by_name and len(by_name) > 1:
        out += ["", *ratios(by_name, args)]
    return "\n".join(out)


TARGETS = {  # protocol -> peer -> minimum throughput ratio of moorage over the peer
    "v2-json": {"kserve": 3.5, "mlserver": 1.5},
    "v2-binary": {"kserve": 2.0, "mlserver": 1.5},
    "grpc": {"kserve": 3.5, "mlserver": 1.5},
}
#: Issue 17: cold start and idle RSS within this much of the bare model-load floor.
COLD_START_OVER_FLOOR_S = 0.1
IDLE_RSS_OVER_FLOOR_MIB = 30
P99_MUST_NOT_WORSEN = ("v2-json", "v2-binary")


def ratios(by_name: dict[str, PeerResult], args: argparse.Namespace) -> list[str]:
    moorage = by_name["moorage"]
    others = [name for name in by_name if name != "moorage"]
    head = "| protocol | conns | " + " | ".join(f"req/s vs {n} | p99 vs {n}" for n in others)
    out = [
        "Ratios (moorage / peer; req/s higher is better, p99 lower is better):",
        "",
        head + " |",
        "|---|---:|" + "---:|---:|" * len(others),
    ]
    verdicts: list[str] = []
    for protocol in args.protocols:
        for conns, mine in moorage.points.get(protocol, {}).items():
            cells = []
            for name in others:
                theirs = by_name[name].points.get(protocol, {}).get(conns)
                if theirs is None:
                    cells.append("- | -")
                    continue
                cells.append(f"{ratio(mine.rps, theirs.rps)} | {ratio(mine.p99_ms, theirs.p99_ms)}")
                need = TARGETS.get(protocol, {}).get(name)
                if need is not None:
                    ok = mine.rps >= need * theirs.rps
                    if protocol in P99_MUST_NOT_WORSEN:
                        ok = ok and mine.p99_ms <= theirs.p99_ms
                    detail = f"req/s {ratio(mine.rps, theirs.rps)} (need {need}x)"
                    if protocol in P99_MUST_NOT_WORSEN:
                        detail += f", p99 {ratio(mine.p99_ms, theirs.p99_ms)} (need <= 1x)"
                    verdicts.append(
                        f"{'PASS' if ok else 'FAIL'} {protocol} c={conns} vs {name}: {detail}"
                    )
            out.append(f"| {protocol} | {conns} | " + " | ".join(cells) + " |")
    ceiling = by_name.get("ceiling")
    if ceiling is not None:
        for protocol, points in moorage.points.items():
            for conns, mine in points.items():
                limit = ceiling.points.get(protocol, {}).get(conns)
                if limit is not None and limit.rps:
                    verdicts.append(
                        f"INFO {protocol} c={conns}: moorage at {100 * mine.rps / limit.rps:.0f}%"
                        f" of the bare-handler ceiling ({mine.rps:,.0f} of {limit.rps:,.0f}"
                        " req/s)"
                    )
    floor = getattr(args, "model_load_s", [])
    floor_rss = getattr(args, "model_load_rss_kib", 0) / 1024
    if moorage.cold_start_s and floor:
        cold = statistics.median(moorage.cold_start_s)
        alone = statistics.median(floor)
        ok = cold <= alone + COLD_START_OVER_FLOOR_S
        verdicts.append(
            f"{'PASS' if ok else 'FAIL'} cold start {cold:.2f} s, model load alone {alone:.2f} s"
            f" (need <= +{COLD_START_OVER_FLOOR_S} s: {cold - alone:+.2f} s)"
        )
    if moorage.idle_rss_kib and floor_rss:
        idle = moorage.idle_rss_kib / 1024
        ok = idle <= floor_rss + IDLE_RSS_OVER_FLOOR_MIB
        verdicts.append(
            f"{'PASS' if ok else 'FAIL'} idle RSS {idle:.0f} MiB, model load alone"
            f" {floor_rss:.0f} MiB (need <= +{IDLE_RSS_OVER_FLOOR_MIB} MiB:"
            f" {idle - floor_rss:+.0f} MiB)"
        )
    return [*out, "", "Targets:", "", *(f"- {v}" for v in verdicts)]


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        default="moorage,kserve,mlserver,ceiling",
        help="servers to run (ceiling: bench/ceiling.py, the bare-handler limit)",
    )
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help=",".join(PROTOCOLS))
    parser.add_argument("--connections", default="1,8,64", help="connection counts")
    # wrk takes whole seconds only.
    parser.add_argument("-d", "--duration", type=int, default=5, help="seconds per point")
    parser.add_argument("--warmup", type=int, default=1, help="seconds before each point")
    parser.add_argument("--cold-runs", type=int, default=5, help="launches timed per server")
    parser.add_argument(
        "--rounds", type=int, help="sweeps over all servers, median kept (default 2)"
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="old order: one server at a time, all its points, then the next (one round)",
    )
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--rows", type=int, default=1, help="iris rows per request")
    parser.add_argument("--grpc-contents", choices=["raw", "typed"], default="raw")
    parser.add_argument("--mlserver-parallel-workers", type=int, default=0)
    parser.add_argument("--moorage-cmd", default=MOORAGE_CMD, help="placeholders as default")
    parser.add_argument("--json", type=pathlib.Path, help="write the raw figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args(argv)
    args.only = [n for n in args.only.split(",") if n]
    args.protocols = [p for p in args.protocols.split(",") if p]
    args.connections = [int(c) for c in args.connections.split(",") if c]
    unknown = set(args.protocols) - set(PROTOCOLS)
    if unknown:
        parser.error(f"unknown protocols {sorted(unknown)}")
    if not 0 < args.duration <= 120 or not 0 <= args.warmup <= 30:
        parser.error("--duration must be in (0, 120] s and --warmup in [0, 30] s")
    if args.sequential and args.rounds not in (None, 1):
        parser.error("--sequential measures each point once; --rounds is for the interleaved run")
    if args.rounds is None:
        args.rounds = 1 if args.sequential else 2
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be in [1, 20]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.load_before = os.getloadavg()
    for tool in ("taskset", "wrk", "h2load"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: run bench/setup-peers.sh (it installs wrk and h2load)")
    # The driver itself stays off the server's core.
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {int(LOADGEN_CPU)})
    # A plain kill of the driver unwinds like Ctrl-C, so every server gets stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    peers = []
    for peer in all_peers(args):
        if peer.name not in args.only:
            continue
        why_not = peer.available()
        if why_not:
            log(f"{peer.name}: skipped, {why_not}")
        else:
            peers.append(peer)
    work = pathlib.Path(tempfile.mkdtemp(prefix="moorage-bench-"))
    (work / "logs").mkdir()
    results: list[PeerResult] = []
    try:
        payloads = build_inputs(work, rows=args.rows, grpc_contents=args.grpc_contents)
        if args.sequential:  # the interleaved run times the floor between its cold starts
            args.model_load_s, args.model_load_rss_kib = model_load_floor(work, args.cold_runs)
        if not args.sequential:
            results = bench_interleaved(peers, args, work, payloads)
        else:
            for peer in peers:
                try:
                    results.append(bench_peer(peer, args, work, payloads))
                except (RuntimeError, TimeoutError, subprocess.SubprocessError) as error:
                    log(f"{peer.name}: failed: {error}")
    finally:
        if args.keep:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(report(results, args))
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    return 0 if results else 1


if __name__ == "__main__":
    raise SystemExit(main())
