#!/usr/bin/env bash
# Serve examples/sklearn-iris on this machine with `moorage run`, setting up what it needs first:
# a virtual environment (.venv, shared with scripts/bootstrap.sh) holding only what serving needs
# (moorage-core, -storage, -server[sklearn], -controller), installed with uv, and the example
# model, trained here because a joblib pickle only loads with the scikit-learn that wrote it.
# Needs python3 with pip. Safe to re-run: each step is skipped when its inputs did not change.
# Arguments go to `moorage run` (e.g. --port 9090 --grpc-port 9091).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MOORAGE_VENV:-.venv}
EXAMPLE=examples/sklearn-iris

say() { printf 'serve-example: %s\n' "$*" >&2; }

# The venv scripts/bootstrap.sh also uses, created without pip (ensurepip costs seconds): uv comes
# from the system pip, and pip itself is added by uv below, since bootstrap.sh runs `python -m pip`.
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  if ! python3 -m venv --without-pip "$VENV" 2>/dev/null; then
    say "python3 -m venv failed; installing python3-venv with apt"
    rm -rf "$VENV"
    apt-get update -qq && apt-get install -y -qq python3-venv
    python3 -m venv --without-pip "$VENV"
  fi
fi

install_uv() {
  local quiet=(-q --disable-pip-version-check)
  if [ -x "$VENV/bin/pip" ]; then
    "$VENV/bin/python" -m pip install "${quiet[@]}" uv && return
  fi
  # pip >= 22.3 installs into another interpreter's environment.
  python3 -m pip --python "$VENV/bin/python" install "${quiet[@]}" uv 2>/dev/null && return
  "$VENV/bin/python" -m ensurepip -q 2>/dev/null || {
    apt-get update -qq && apt-get install -y -qq python3-venv && "$VENV/bin/python" -m ensurepip -q
  }
  "$VENV/bin/python" -m pip install "${quiet[@]}" uv
}

stamp="$VENV/.moorage-serve-stamp"
want=$(cat packages/{core,storage,server,controller}/pyproject.toml scripts/serve-example.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$VENV/bin/moorage" ]; then
  say "installing moorage-core, -storage, -server[sklearn], -controller into $VENV"
  [ -x "$VENV/bin/uv" ] || install_uv
  # No --compile-bytecode: compiling all of scipy and scikit-learn costs more than compiling,
  # on first import, the modules that serving actually loads.
  "$VENV/bin/uv" pip install --python "$VENV/bin/python" -q pip \
    -e "packages/core[grpc]" -e packages/storage -e "packages/server[sklearn]" \
    -e "packages/controller[local]"
  echo "$want" > "$stamp"
fi

model="$EXAMPLE/model/model.joblib"
built_with=$(cat "$EXAMPLE/model/sklearn-version" 2>/dev/null || true)
# The installed scikit-learn's version, from its dist-info name (no interpreter start-up).
have=""
for info in "$VENV"/lib/python*/site-packages/scikit_learn-*.dist-info; do
  [ -d "$info" ] && have=${info##*/scikit_learn-} && have=${have%.dist-info}
done
if [ ! -f "$model" ] || [ "$built_with" != "$have" ]; then
  say "training the example model ($EXAMPLE/train.py)"
  "$VENV/bin/python" "$EXAMPLE/train.py" >/dev/null
fi

# Write bytecode for what serving imports (some environments set PYTHONDONTWRITEBYTECODE, which
# makes every start recompile scikit-learn and scipy): the first run pays once, later ones start warm.
exec env -u PYTHONDONTWRITEBYTECODE "$VENV/bin/moorage" run -f "$EXAMPLE/isvc.yaml" "$@"
