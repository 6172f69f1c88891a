#!/usr/bin/env bash
# The one test command: sets everything up, lints, and runs every package's tests and the
# integration tests. `.ci/run` calls exactly this. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
VENV=${MOORAGE_VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"

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
