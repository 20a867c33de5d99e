#!/usr/bin/env bash
# Makes a Docker engine answer: an engine already running is used as it is; otherwise, as root, Debian's
# docker.io is installed when dockerd is missing and dockerd is started in the background, its PID written to
# $DOCKERD_PIDFILE so that the caller stops exactly that process (scripts/dockerd_down.sh).
# Exit codes: 0 an engine answers; 77 no engine can run here (the reason on stderr: callers skip); 1 error.
set -euo pipefail
PIDFILE="${DOCKERD_PIDFILE:-/tmp/pipelined-dockerd.pid}"
skip() { echo "no Docker engine can run here: $*" >&2; exit 77; }

docker info >/dev/null 2>&1 && exit 0
[ "$(id -u)" = 0 ] || skip "no engine answers and starting dockerd needs root"
if ! command -v dockerd >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/tmp/pipelined-docker-install.log 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io \
      >/tmp/pipelined-docker-install.log 2>&1; } \
    || skip "apt-get install docker.io failed (see /tmp/pipelined-docker-install.log)"
fi
command -v docker >/dev/null || skip "docker.io installed no docker client"
nohup dockerd >/tmp/pipelined-dockerd.log 2>&1 &
echo $! >"$PIDFILE"
for _ in $(seq 60); do
  docker info >/dev/null 2>&1 && exit 0
  kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { rm -f "$PIDFILE"; skip "dockerd exited: $(tail -2 /tmp/pipelined-dockerd.log)"; }
  sleep 1
done
echo "dockerd did not answer within 60 s (see /tmp/pipelined-dockerd.log)" >&2
exit 1
