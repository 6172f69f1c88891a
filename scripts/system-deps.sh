#!/usr/bin/env bash
# System packages that the integration tests start as real components. Installed with apt when
# missing and we are root; otherwise the tests that need them skip and say why.
set -uo pipefail
need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
# Image builds without a daemon (tests/ship/test_images.py): buildah, podman (imports the
# debootstrap-made base), debootstrap.
command -v buildah >/dev/null || need+=(buildah)
command -v podman >/dev/null || need+=(podman)
command -v debootstrap >/dev/null || need+=(debootstrap)
# Azurite (Azure Blob emulator for the storage tests) comes from npm, when npm is there.
if ! command -v azurite-blob >/dev/null; then
  if command -v npm >/dev/null; then
    npm install -g --silent azurite >/dev/null 2>&1 \
      || echo "system-deps: npm install -g azurite failed; Azure tests will skip" >&2
  else
    echo "system-deps: azurite-blob missing and no npm; Azure tests will skip" >&2
  fi
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "system-deps: missing ${need[*]} (not root or no apt); tests needing them will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
  || echo "system-deps: apt-get install ${need[*]} failed; tests needing them will skip" >&2
exit 0
