#!/usr/bin/env bash
# The one test command: sets everything up, lints, and runs every package's tests and the
# integration tests. `.ci/run` calls exactly this. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
VENV=${MOORAGE_VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"

echo "== peers"
# KServe 0.14.1 and MLServer 1.7.1 for the client's interoperability tests, each in its own
# venv outside the checkout, cached by stamp (scripts/peers.sh). In CI (CI=true) a peer the
# tests cannot find fails them instead of skipping.
export MOORAGE_PEERS="${MOORAGE_PEERS:-${PEERS_DIR:-$HOME/.cache/moorage-peers}}"
bash scripts/peers.sh kserve mlserver

echo "== lint"
ruff check packages tests bench
ruff format --check packages tests bench
lint-imports --no-cache
mypy packages/*/src

echo "== tests"
set +e
pytest packages/*/tests tests "$@"
rc=$?
set -e
# pytest exits 5 when it collected nothing; an empty selection is not a failure here.
if [ "$rc" -eq 5 ]; then echo "no tests collected"; rc=0; fi
exit "$rc"
