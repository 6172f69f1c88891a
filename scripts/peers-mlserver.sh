#!/usr/bin/env bash
# Build the MLServer peer used by moorage-client's integration tests, in its own virtual
# environment OUTSIDE the repository (MLServer's pins must not leak into moorage's .venv):
#
#   ${MOORAGE_PEERS:-${PEERS_DIR:-$HOME/.cache/moorage-peers}}/mlserver
#
# Same versions and marker as bench/setup-peers.sh, so either script leaves the venv the other
# expects: mlserver 1.7.1 + mlserver-sklearn, uvloop pinned to 0.21.0 (0.23 breaks its worker),
# the scikit-learn of moorage's .venv. Idempotent; --force rebuilds. Prints the venv path last.
#
# Usage: bash scripts/peers-mlserver.sh [--force]
set -euo pipefail

PEERS="${MOORAGE_PEERS:-${PEERS_DIR:-$HOME/.cache/moorage-peers}}"
DIR="$PEERS/mlserver"
PYTHON="${PEERS_PYTHON:-python3.11}"
PKGS=("mlserver==1.7.1" "mlserver-sklearn==1.7.1" "uvloop==0.21.0" "scikit-learn==1.9.1" "joblib")
MARKER="$DIR/.moorage-peer-ok"
WANTED="${PKGS[*]}"

if [ "${1:-}" = "--force" ]; then
    rm -rf "$DIR"
elif [ -n "${1:-}" ]; then
    echo "unknown argument: $1" >&2
    exit 2
fi

if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$WANTED" ] \
    && [ -x "$DIR/bin/mlserver" ]; then
    echo "$DIR"
    exit 0
fi

command -v "$PYTHON" >/dev/null || PYTHON=python3
echo "peer mlserver: installing ${WANTED} into $DIR" >&2
mkdir -p "$PEERS"
if [ ! -x "$DIR/bin/python" ]; then
    "$PYTHON" -m venv "$DIR"
fi
"$DIR/bin/python" -m pip install --quiet --disable-pip-version-check "${PKGS[@]}" >&2
"$DIR/bin/python" -c "import mlserver, mlserver_sklearn"
"$DIR/bin/python" -m pip freeze >"$DIR/freeze.txt"
printf '%s' "$WANTED" >"$MARKER"
echo "$DIR"
