#!/usr/bin/env bash
# Build the peer servers' virtual environments: what the interoperability tests
# (packages/client/tests/integration) and the benchmarks (bench/) run moorage against.
#
#   kserve    kserve==0.14.1 + scikit-learn/joblib (its model server, InferenceRESTClient/GRPCClient)
#   mlserver  mlserver==1.7.1 + mlserver-sklearn (uvloop pinned to 0.21.0: 0.23 breaks its worker)
#   triton    tritonclient[all] (bench only)
#
# Each venv lives OUTSIDE the repository, in ${MOORAGE_PEERS:-${PEERS_DIR:-~/.cache/moorage-peers}}/<name>,
# so that no peer's pins leak into moorage's .venv and no linter walks them. The versions are
# here only. Cached: a venv whose stamp (.moorage-peer-ok) records the same package list is
# left alone, a changed list is installed over it, --force deletes and recreates it.
# --compile also byte-compiles each venv once (bench/server.py times cold starts).
# scikit-learn is the version in moorage's .venv, so one joblib file loads in every server.
#
# Usage: bash scripts/peers.sh [--force] [--compile] [kserve|mlserver|triton ...]
#        (no name: kserve and mlserver, what the tests need). Prints each venv's path.
set -euo pipefail

PEERS="${MOORAGE_PEERS:-${PEERS_DIR:-$HOME/.cache/moorage-peers}}"
PYTHON="${PEERS_PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3

SKLEARN="scikit-learn==1.9.1"
KSERVE=("kserve==0.14.1" "$SKLEARN" "joblib")
MLSERVER=("mlserver==1.7.1" "mlserver-sklearn==1.7.1" "uvloop==0.21.0" "$SKLEARN" "joblib")
TRITON=("tritonclient[all]" "numpy<2.3")

FORCE=0
COMPILE=0
WANTED=()
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --compile) COMPILE=1 ;;
    kserve | mlserver | triton) WANTED+=("$arg") ;;
    *) echo "peers: unknown argument: $arg" >&2; exit 2 ;;
  esac
done
[ ${#WANTED[@]} -gt 0 ] || WANTED=(kserve mlserver)

# venv NAME CHECK PACKAGES...: CHECK is Python code that must run in the finished venv.
venv() {
  local name="$1" check="$2"
  shift 2
  local dir="$PEERS/$name"
  local stamp="$dir/.moorage-peer-ok"
  local want="$*"
  [ "$FORCE" -eq 0 ] || rm -rf "$dir"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$dir/bin/python" ]; then
    :
  else
    echo "peers: installing $want into $dir" >&2
    local started=$SECONDS
    mkdir -p "$PEERS"
    rm -f "$stamp" "$dir/.moorage-compiled"
    [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >&2
    "$dir/bin/python" -c "$check"
    "$dir/bin/python" -m pip freeze --disable-pip-version-check >"$dir/freeze.txt"
    printf '%s' "$want" >"$stamp"
    echo "peers: $name ready in $((SECONDS - started)) s" >&2
  fi
  if [ "$COMPILE" -eq 1 ] && [ ! -f "$dir/.moorage-compiled" ]; then
    # Where PYTHONDONTWRITEBYTECODE is set nothing writes .pyc files and every server start
    # would recompile scipy and scikit-learn: compile once, so cold starts time the server.
    "$dir/bin/python" -m compileall -q -j 0 "$dir/lib" >/dev/null || true
    touch "$dir/.moorage-compiled"
  fi
  echo "$dir"
}

for name in "${WANTED[@]}"; do
  case "$name" in
    kserve) venv kserve "import kserve, sklearn, joblib" "${KSERVE[@]}" ;;
    mlserver) venv mlserver "import mlserver, mlserver_sklearn" "${MLSERVER[@]}" ;;
    triton) venv triton "import tritonclient.grpc, tritonclient.http" "${TRITON[@]}" ;;
  esac
done
