#!/usr/bin/env bash
# Create the peer environments used by bench/server.py and bench/client.py: the venvs
# (kserve, mlserver, triton) come from scripts/peers.sh, which holds the versions and caches
# them in ${MOORAGE_PEERS:-${PEERS_DIR:-$HOME/.cache/moorage-peers}}/<name>, byte-compiled here
# so that cold starts time the servers; plus the C load generators from Debian: wrk,
# hyperfine, h2load (nghttp2-client).
#
# Idempotent: a venv whose stamp records the same package list is left alone; --force
# deletes and recreates it.
# Usage: bash bench/setup-peers.sh [--force] [--no-apt] [kserve|mlserver|triton ...]
set -euo pipefail
cd "$(dirname "$0")/.."

APT=1
ARGS=()
NAMES=0
for arg in "$@"; do
    case "$arg" in
        --no-apt) APT=0 ;;
        --force) ARGS+=("$arg") ;;
        kserve | mlserver | triton) ARGS+=("$arg"); NAMES=1 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done
[ "$NAMES" -eq 1 ] || ARGS+=(kserve mlserver triton)

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

bash scripts/peers.sh --compile "${ARGS[@]}"
