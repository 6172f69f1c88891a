#!/usr/bin/env python3
"""Copy moorage's built-in ClusterServingRuntimes into the chart.

The runtimes live once, as package data of moorage-core
(``packages/core/src/moorage/core/resources/runtimes/*.yaml``: KServe's ten under KServe's names,
and moorage 0.1's explicit-only aliases). The chart installs the same files from
``charts/moorage/runtimes/`` (``templates/runtimes.yaml`` includes them verbatim, so ``{{.Name}}``
reaches the cluster as KServe writes it). This script makes the chart's copy equal to core's;
``--check`` only says whether it is (``packages/core/tests/test_runtimes.py`` checks it too).

Run: ``.venv/bin/python scripts/gen-runtimes.py [--check]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "packages/core/src/moorage/core/resources/runtimes"
TARGET = ROOT / "charts/moorage/runtimes"


def differences() -> list[str]:
    """File names that differ between core's runtimes and the chart's (missing, stale, changed)."""
    source = {p.name: p.read_text() for p in SOURCE.glob("*.yaml")}
    target = {p.name: p.read_text() for p in TARGET.glob("*.yaml")}
    return sorted(n for n in source.keys() | target.keys() if source.get(n) != target.get(n))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the chart is stale")
    args = parser.parse_args(argv)
    stale = differences()
    if args.check:
        for name in stale:
            print(f"charts/moorage/runtimes/{name} differs from core's", file=sys.stderr)
        return 1 if stale else 0
    TARGET.mkdir(parents=True, exist_ok=True)
    for name in stale:
        source, target = SOURCE / name, TARGET / name
        if source.exists():
            target.write_text(source.read_text())
        else:
            target.unlink()
        print(f"wrote {target.relative_to(ROOT)}" if source.exists() else f"removed {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
