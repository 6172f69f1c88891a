"""Import time of moorage's packages: what every process start (a worker, a CLI call, a
client script) pays before doing anything.

Each module is imported in a fresh interpreter, ``--runs`` times (the interpreter's own start,
``python -c pass``, is timed the same way and reported beside them); the figures are the
median and the best of the runs, in milliseconds, measured inside the process around the
``import`` alone. ``--top N`` adds the N slowest modules of one ``-X importtime`` run of each,
to see what a regression pulled in. Figures go to bench/RESULTS.md; the unit test
(packages/core/tests/test_import_time.py) only checks that no heavy module loads eagerly.

    .venv/bin/python bench/import_time.py
    .venv/bin/python bench/import_time.py --runs 20 --top 5 moorage.core moorage.client
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

DEFAULT_MODULES = [
    "moorage.core",
    "moorage.core.protocol",
    "moorage.client",
    "moorage.server",
    "moorage.storage",
    "moorage.controller",
]

TIMED = """
import time
t = time.perf_counter()
import {module}
print(time.perf_counter() - t)
"""


def time_import(python: str, module: str, runs: int) -> list[float]:
    """Seconds to import ``module`` in ``runs`` fresh interpreters."""
    command = [python, "-c", TIMED.format(module=module)]
    return [
        float(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        for _ in range(runs)
    ]


def time_interpreter(python: str, runs: int) -> list[float]:
    """Seconds for ``python -c pass`` from spawn to exit (the floor of any process start)."""
    import time

    out = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([python, "-c", "pass"], check=True)
        out.append(time.perf_counter() - started)
    return out


def _importtime(python: str, code: str) -> list[tuple[int, str]]:
    """(cumulative µs, module) for every import ``-X importtime`` reports while running ``code``."""
    err = subprocess.run(
        [python, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    ).stderr
    rows = []
    for line in err.splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            _self, cumulative, name = (part.strip() for part in line[12:].split("|"))
            rows.append((int(cumulative), name))
    return rows


def slowest(python: str, module: str, top: int) -> list[tuple[int, str]]:
    """The ``top`` modules with the largest cumulative import time (µs) under ``module``,
    leaving out what the interpreter imports at start-up."""
    startup = {name for _, name in _importtime(python, "pass")}
    rows = [row for row in _importtime(python, f"import {module}") if row[1] not in startup]
    return sorted((row for row in rows if row[1] != module), reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=DEFAULT_MODULES)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--top", type=int, default=0, help="slowest imported modules to list")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()

    floor = time_interpreter(args.python, args.runs)
    print(f"Import times, {args.runs} fresh interpreters each ({sys.version.split()[0]}):\n")
    print("| module | median ms | best ms |")
    print("|---|---:|---:|")
    print(f"| (`python -c pass`, whole process) | {statistics.median(floor) * 1e3:.1f} "
          f"| {min(floor) * 1e3:.1f} |")  # fmt: skip
    for module in args.modules:
        try:
            times = time_import(args.python, module, args.runs)
        except subprocess.CalledProcessError as exc:
            print(f"| `{module}` | not importable ({exc.returncode}) | |")
            continue
        print(f"| `{module}` | {statistics.median(times) * 1e3:.1f} | {min(times) * 1e3:.1f} |")
        if args.top:
            for cumulative, name in slowest(args.python, module, args.top):
                print(f"|   {name} | {cumulative / 1e3:.1f} (cumulative, one run) | |")


if __name__ == "__main__":
    main()
