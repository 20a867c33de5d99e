#!/usr/bin/env bash
# Stops the dockerd that scripts/dockerd_up.sh started (by the PID it wrote), and nothing else.
set -uo pipefail
PIDFILE="${DOCKERD_PIDFILE:-/tmp/pipelined-dockerd.pid}"
[ -f "$PIDFILE" ] || exit 0
pid="$(cat "$PIDFILE")"
rm -f "$PIDFILE"
kill -TERM "$pid" 2>/dev/null || exit 0
for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 1; done
echo "dockerd $pid still running after 30 s; killing it" >&2
kill -KILL "$pid" 2>/dev/null || true
