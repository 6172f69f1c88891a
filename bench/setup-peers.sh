#!/usr/bin/env bash
# Create the peer environments used by bench/server.py and bench/client.py.
#
# Each peer gets its own virtual environment OUTSIDE the repository, under
#   ${PEERS_DIR:-$HOME/.cache/moorage-peers}/<name>
# so that no peer's dependencies leak into moorage's .venv:
#   kserve   kserve==0.14.1 + scikit-learn/joblib (also its InferenceRESTClient/GRPCClient)
#   mlserver mlserver==1.7.1 + mlserver-sklearn (uvloop pinned to 0.21.0)
#   triton   tritonclient[all] (HTTP aio and gRPC aio clients)
# plus the C load generators from Debian: wrk, hyperfine, h2load (nghttp2-client).
#
# Idempotent: an environment whose marker file records the same package list is left alone;
# a changed list is installed over it; --force deletes and recreates it.
# Usage: bash bench/setup-peers.sh [--force] [--no-apt] [kserve|mlserver|triton ...]
set -euo pipefail

PEERS_DIR="${PEERS_DIR:-$HOME/.cache/moorage-peers}"
PYTHON="${PEERS_PYTHON:-python3.11}"
FORCE=0
APT=1
WANTED=()
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        --no-apt) APT=0 ;;
        kserve | mlserver | triton) WANTED+=("$arg") ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done
if [ ${#WANTED[@]} -eq 0 ]; then
    WANTED=(kserve mlserver triton)
fi

# Versions in one place.  scikit-learn is the same in every server (and matches the one in
# moorage's .venv) so that one joblib file loads everywhere without version warnings.
SKLEARN="scikit-learn==1.9.1"
KSERVE_PKGS=("kserve==0.14.1" "$SKLEARN" "joblib")
MLSERVER_PKGS=("mlserver==1.7.1" "mlserver-sklearn==1.7.1" "uvloop==0.21.0" "$SKLEARN" "joblib")
TRITON_PKGS=("tritonclient[all]" "numpy<2.3")

if [ "$APT" -eq 1 ]; then
    missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v hyperfine >/dev/null || missing+=(hyperfine)
    command -v h2load >/dev/null || missing+=(nghttp2-client)
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    fi
fi

make_venv() {
    local name="$1"
    shift
    local dir="$PEERS_DIR/$name"
    local marker="$dir/.moorage-peer-ok"
    local wanted="$*"
    if [ "$FORCE" -eq 1 ]; then
        rm -rf "$dir"
    fi
    if [ -f "$marker" ] && [ "$(cat "$marker")" = "$wanted" ]; then
        echo "peer $name: ready in $dir"
        return
    fi
    echo "peer $name: installing $wanted into $dir"
    mkdir -p "$PEERS_DIR"
    if [ ! -x "$dir/bin/python" ]; then
        "$PYTHON" -m venv "$dir"
        "$dir/bin/python" -m pip install --quiet --upgrade pip
    fi
    "$dir/bin/python" -m pip install --quiet "$@"
    # Where PYTHONDONTWRITEBYTECODE is set nothing writes .pyc files, and every server launch
    # would recompile scipy/scikit-learn: compile once so cold starts measure the server.
    "$dir/bin/python" -m compileall -q -j 0 "$dir/lib" >/dev/null || true
    "$dir/bin/python" -m pip freeze >"$dir/freeze.txt"
    printf '%s' "$wanted" >"$marker"
    echo "peer $name: done"
}

for name in "${WANTED[@]}"; do
    case "$name" in
        kserve) make_venv kserve "${KSERVE_PKGS[@]}" ;;
        mlserver) make_venv mlserver "${MLSERVER_PKGS[@]}" ;;
        triton) make_venv triton "${TRITON_PKGS[@]}" ;;
    esac
done
echo "peers in $PEERS_DIR: ${WANTED[*]}"
