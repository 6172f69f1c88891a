#!/usr/bin/env bash
# Build the sdist and wheel of packages (default: all six) into dist/ (or $OUT), as a release
# does: `uv build` makes the sdist, then the wheel from the sdist (hatchling from PyPI).
#   scripts/build-dists.sh [core server ...]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-dist}
UV=$(command -v uv || echo .venv/bin/uv)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(core storage server client controller cache)
for name in "${names[@]}"; do
  "$UV" build -q -o "$OUT" "packages/$name"
done
ls -1 "$OUT"
