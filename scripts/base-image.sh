#!/usr/bin/env bash
# A local Debian bookworm base image with Python 3.11, for building moorage's images without a
# registry to pull from (tests/ship/test_images.py; ../shared/TEST-INFRA.md "Building images").
# It stands in for docker.io/library/python:3.11-slim-bookworm, the Dockerfiles' default BASE_IMAGE:
# python3 on PATH with the venv module. Built once with debootstrap (~1 min) and imported into
# buildah's vfs storage as $TAG; a second run finds it and does nothing.
#   scripts/base-image.sh [TAG]      (default localhost/moorage-base:bookworm-py311)
set -euo pipefail
TAG=${1:-localhost/moorage-base:bookworm-py311}
STORE=(--storage-driver vfs)
if buildah "${STORE[@]}" inspect --type image "$TAG" >/dev/null 2>&1; then
  echo "base-image: $TAG present"; exit 0
fi
MIRROR=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHE=${MOORAGE_IMAGE_CACHE:-$HOME/.cache/moorage-images}
mkdir -p "$CACHE"
ROOT=$(mktemp -d "$CACHE/rootfs.XXXXXX")
trap 'rm -rf "$ROOT"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$ROOT" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
  || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
# What a slim base leaves out: apt lists, caches, docs.
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
  "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/*
chmod 755 "$ROOT"  # mktemp made it 0700: the image root must be traversable by its users
tar -C "$ROOT" -c . | podman "${STORE[@]}" import - "$TAG" >/dev/null
echo "base-image: built $TAG"
