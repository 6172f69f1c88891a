"""Client libraries side by side: requests/s from one client process, and tensor codec time.

One server (moorage-server when it runs, else KServe's, or the one named by --server) serves
the iris model on core 0.  Each client library runs in its own process on core 1, under its
own venv (bench/peers/client_worker.py does the work):

    moorage       moorage.client InferenceRESTClient / InferenceGRPCClient   (/work/main/.venv)
    moorage-grpcio  the same, InferenceGRPCClient(transport="grpcio")        (/work/main/.venv)
    kserve        kserve 0.14.1 InferenceRESTClient / InferenceGRPCClient    (peer venv)
    tritonclient  tritonclient.http.aio / tritonclient.grpc.aio              (peer venv)

For each library, mode (REST JSON, REST binary extension, gRPC raw contents) and concurrency
(1 and 32 in-flight calls on one client object): requests/s, p50/p99, and the client's own
CPU time per request (the figure that server saturation cannot hide).  Then encode (numpy
array to request bytes) and decode (reply bytes to numpy array) of a 16 MiB FP32 tensor per
library and mode, beside a plain 16 MiB memory copy.

    python bench/client.py                        # everything, 5 s per point
    python bench/client.py --server mlserver      # MLServer: its lack of binary skips rest-binary
    python bench/client.py --libraries kserve,tritonclient --modes grpc -d 2
    python bench/client.py --codec-only
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import server as server_bench  # bench/server.py: the same peers, model and process handling

BENCH = server_bench.BENCH
WORKER = BENCH / "peers" / "client_worker.py"
MODES = ("rest-json", "rest-binary", "grpc")
LIBRARY_PYTHON = {
    "moorage": server_bench.REPO / ".venv" / "bin" / "python",
    "moorage-grpcio": server_bench.REPO / ".venv" / "bin" / "python",
    "kserve": server_bench.PEERS_DIR / "kserve" / "bin" / "python",
    "tritonclient": server_bench.PEERS_DIR / "triton" / "bin" / "python",
}
SERVER_MODES = {  # what each server can answer
    "moorage": set(MODES),
    "kserve": set(MODES),
    "mlserver": {"rest-json", "grpc"},
}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def worker(library: str, argv: list[str], timeout: float) -> dict:
    python = LIBRARY_PYTHON[library]
    if not python.exists():
        return {"unavailable": f"{python} not found (bench/setup-peers.sh)"}
    sub_command, *options = argv
    command = ["taskset", "-c", server_bench.LOADGEN_CPU, str(python), str(WORKER), sub_command]
    command += ["--library", library, *options]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if not lines:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {done.returncode}: {tail[0][:300]}"}
    return json.loads(lines[-1])


def output_name(port: int, payloads: server_bench.Payloads) -> str:
    path, body, headers = payloads.rest("v2-json")
    status, _, reply = server_bench.http_request(
        port, "POST", path, body=body.read_bytes(), headers=headers
    )
    if status != 200:
        raise RuntimeError(f"v2 JSON probe answered {status}: {reply[:200]!r}")
    return json.loads(reply)["outputs"][0]["name"]


def choose_server(args: argparse.Namespace) -> server_bench.Peer:
    peers = {p.name: p for p in server_bench.all_peers(args)}
    if args.server != "auto":
        return peers[args.server]
    why_not = peers["moorage"].available()
    if why_not is None:
        return peers["moorage"]
    log(f"moorage-server unavailable ({why_not}); serving with KServe instead")
    return peers["kserve"]


def run_load(args: argparse.Namespace) -> tuple[str, list[dict]]:
    peer = choose_server(args)
    work = pathlib.Path(tempfile.mkdtemp(prefix="moorage-client-bench-"))
    (work / "logs").mkdir()
    rows: list[dict] = []
    try:
        payloads = server_bench.build_inputs(work, rows=1, grpc_contents="raw")
        with server_bench.running(peer, work, work / "logs", args.ready_timeout) as server:
            name = output_name(server.ports.http, payloads)
            log(f"server {peer.name} ready (output tensor {name!r})")
            for library in args.libraries:
                for mode in args.modes:
                    if mode not in SERVER_MODES[peer.name]:
                        rows.append(
                            {"library": library, "mode": mode, "skipped": f"{peer.name} lacks it"}
                        )
                        continue
                    for concurrency in args.concurrency:
                        argv = ["load", "--mode", mode, "--http-port", str(server.ports.http)]
                        argv += ["--grpc-port", str(server.ports.grpc), "--output-name", name]
                        argv += ["--concurrency", str(concurrency)]
                        argv += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
                        timeout = args.duration + args.warmup + 120
                        result = worker(library, argv, timeout)
                        result.update(library=library, mode=mode, concurrency=concurrency)
                        rows.append(result)
                        log(f"{library} {mode} c={concurrency}: {short(result)}")
                        if "unavailable" in result:
                            break
    finally:
        if args.keep:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return peer.name, rows


def short(result: dict) -> str:
    if "rps" in result:
        text = f"{result['rps']:,.0f} req/s, {result['cpu_us_per_request']:.0f} us CPU/req"
        if result["errors"]:
            text += f", {result['errors']} errors ({result['first_error']})"
        return text
    return result.get("unavailable") or result.get("error") or result.get("skipped", "?")


def run_codec(args: argparse.Namespace) -> list[dict]:
    results = []
    for library in args.libraries:
        argv = ["codec", "--mib", str(args.codec_mib), "--modes", ",".join(args.modes)]
        result = worker(library, argv, timeout=900)
        result["library"] = library
        results.append(result)
        log(f"{library} codec: {'done' if 'modes' in result else short(result)}")
    return results


def report(server_name: str | None, rows: list[dict], codecs: list[dict], args) -> str:
    out: list[str] = server_bench.machine(args.load_before)
    if rows:
        out += [
            f"- Server: {server_name} on core {server_bench.SERVER_CPU}; each client in its own"
            f" process on core {server_bench.LOADGEN_CPU}; {args.duration:g} s per point after"
            f" {args.warmup:g} s warm-up; one iris row per request; client CPU = the worker"
            " process's user+system time / requests.",
            "",
            "| client | mode | conc | req/s | p50 ms | p99 ms | client CPU us/req | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in rows:
            lib, mode = row["library"], row["mode"]
            if "rps" not in row:
                out.append(f"| {lib} | {mode} | {row.get('concurrency', '-')} | {short(row)} |||||")
                continue
            out.append(
                f"| {lib} | {mode} | {row['concurrency']} | {row['rps']:,.0f} | {row['p50_ms']:.2f}"
                f" | {row['p99_ms']:.2f} | {row['cpu_us_per_request']:.0f} | {row['errors']} |"
            )
    if codecs:
        copies = [c["memcpy_ms"] for c in codecs if "memcpy_ms" in c]
        copy_ms = min(copies) if copies else float("nan")
        out += [
            "",
            f"Codec, {args.codec_mib} MiB FP32 tensor (median ms; encode = numpy array to request"
            " bytes, decode = reply bytes to numpy array; a plain memory copy of the same"
            f" tensor takes {copy_ms:.2f} ms):",
            "",
            "| client | mode | encode ms | decode ms | encode+decode ms |",
            "|---|---|---:|---:|---:|",
        ]
        for result in codecs:
            if "modes" not in result:
                out.append(f"| {result['library']} | - | {short(result)} |||")
                continue
            for mode, timing in result["modes"].items():
                total = timing["encode_ms"] + timing["decode_ms"]
                out.append(
                    f"| {result['library']} | {mode} | {timing['encode_ms']:.2f}"
                    f" | {timing['decode_ms']:.2f} | {total:.2f} |"
                )
    return "\n".join(out)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["auto", *SERVER_MODES], default="auto")
    parser.add_argument(
        "--libraries", default=",".join(n for n in LIBRARY_PYTHON if n != "moorage-grpcio")
    )
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--codec-mib", type=int, default=16)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--codec-only", action="store_true")
    group.add_argument("--no-codec", action="store_true")
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--moorage-cmd", default=server_bench.MOORAGE_CMD)
    parser.add_argument("--mlserver-parallel-workers", type=int, default=0)
    parser.add_argument("--json", type=pathlib.Path, help="write the raw figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args()
    args.libraries = [n for n in args.libraries.split(",") if n]
    args.modes = [m for m in args.modes.split(",") if m]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    if set(args.libraries) - set(LIBRARY_PYTHON) or set(args.modes) - set(MODES):
        parser.error(f"libraries are {list(LIBRARY_PYTHON)}, modes {list(MODES)}")
    if not 0 < args.duration <= 120 or not 0 <= args.warmup <= 30:
        parser.error("--duration must be in (0, 120] s and --warmup in [0, 30] s")
    return args


def main() -> int:
    args = parse_args()
    args.load_before = os.getloadavg()
    if shutil.which("taskset") is None:
        sys.exit("taskset not found (util-linux)")
    server_name, rows, codecs = None, [], []
    if not args.codec_only:
        server_name, rows = run_load(args)
    if not args.no_codec:
        codecs = run_codec(args)
    print(report(server_name, rows, codecs, args))
    if args.json:
        args.json.write_text(json.dumps({"server": server_name, "load": rows, "codec": codecs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
