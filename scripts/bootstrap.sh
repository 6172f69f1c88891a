#!/usr/bin/env bash
# Create .venv and install every moorage package (editable) with its test extras, plus the
# system tools the integration tests start (OCI registry, ...). Safe to re-run: it skips work
# whose inputs did not change. Needs only python3 and pip (and apt for the system tools).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MOORAGE_VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    echo "bootstrap: python3 -m venv failed; installing python3-venv with apt" >&2
    rm -rf "$VENV"
    apt-get update -qq && apt-get install -y -qq python3-venv
    python3 -m venv "$VENV"
  fi
fi

stamp="$VENV/.moorage-stamp"
want=$(cat requirements-dev.txt packages/*/pyproject.toml scripts/bootstrap.sh scripts/system-deps.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check uv
  # torch only ever from pip, pinned, before anything that depends on it: uv (and an unpinned
  # torch) would resolve a multi-GB CUDA build. uv then keeps the installed one.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check torch==2.13.0
  editable=()
  for spec in "core[grpc,test]" "storage[s3,gcs,azure,hf,oci,test]" "server[sklearn,xgboost,lightgbm,huggingface,test]" \
              "client[test]" "controller[operator,test]" "cache[operator,test]"; do
    editable+=(-e "packages/$spec")
  done
  "$VENV/bin/uv" pip install --python "$VENV/bin/python" -q "${editable[@]}" -r requirements-dev.txt
  bash scripts/system-deps.sh
  echo "$want" > "$stamp"
fi
