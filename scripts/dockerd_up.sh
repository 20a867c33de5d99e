#!/usr/bin/env bash
# Starts dockerd in the background (as root) unless a daemon already answers.
set -euo pipefail
docker info >/dev/null 2>&1 && exit 0
[ "$(id -u)" = 0 ] || { echo "dockerd is not running; start it as root" >&2; exit 3; }
nohup dockerd >/tmp/dockerd.log 2>&1 &
for _ in $(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done
echo "dockerd did not start (see /tmp/dockerd.log)" >&2; exit 1
