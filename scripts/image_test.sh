#!/usr/bin/env bash
# Builds the image (unless SKIP_BUILD=1), runs it with its ports on 127.0.0.1 only, waits for the
# grpc.health.v1 HEALTHCHECK, transcribes a recording through the SDK's CLI, then `docker stop` (SIGTERM)
# and checks the server drained and exited 0.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
IMAGE="${1:-pipelined-server:latest}"
AUDIO="${AUDIO:-$root/../shared/data/audio/jfk.flac}"
PIPELINED="${PIPELINED:-$root/.venv/bin/pipelined}"
PORT="${PORT:-50151}"
METRICS_PORT="${METRICS_PORT:-19464}"
name="pipelined-image-test-$$"

"$root/scripts/dockerd_up.sh"
[ "${SKIP_BUILD:-0}" = 1 ] || "$root/scripts/image_build.sh" "$IMAGE"
docker image inspect "$IMAGE" --format 'image size: {{.Size}} bytes'

cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
docker run -d --name "$name" -p "127.0.0.1:$PORT:50051" -p "127.0.0.1:$METRICS_PORT:9464" "$IMAGE" >/dev/null
for i in $(seq 120); do
  status="$(docker inspect -f '{{.State.Health.Status}}' "$name")"
  [ "$status" = healthy ] && break
  [ "$(docker inspect -f '{{.State.Running}}' "$name")" = true ] || { docker logs "$name"; exit 1; }
  sleep 2
done
[ "$status" = healthy ] || { echo "not healthy after $((i * 2)) s: $status" >&2; docker logs "$name"; exit 1; }
echo "healthy after ~$((i * 2)) s"
text="$("$PIPELINED" --target "127.0.0.1:$PORT" --timeout 120 transcribe "$AUDIO")"
echo "transcript: $text"
echo "$text" | grep -qi "ask not what your country can do for you" || { echo "unexpected transcript" >&2; exit 1; }
curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | grep -q '^# HELP' && echo "metrics: ok"
docker stop -t 45 "$name" >/dev/null
code="$(docker inspect -f '{{.State.ExitCode}}' "$name")"
docker logs "$name" 2>&1 | tail -3
[ "$code" = 0 ] || { echo "exit code after SIGTERM: $code" >&2; exit 1; }
echo "image-test: ok (SIGTERM exit code 0)"
