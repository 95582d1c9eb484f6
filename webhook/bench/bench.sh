#!/usr/bin/env bash
# Load benchmark of kaito-webhook: admissions/s and latency percentiles of POST /mutate and
# POST /validate over TLS on loopback, with wrk (Debian package `wrk`), and the webhook's RSS.
#
#   webhook/bench/bench.sh                 # 15 s per endpoint, 8 connections, 1 wrk thread
#   DURATION=30s CONNECTIONS=16 webhook/bench/bench.sh
#   SKIP_BUILD=1 webhook/bench/bench.sh     # use the release binary already built
#
# Builds the release binary (CARGO_TARGET_DIR respected), starts it with a self-signed
# certificate on 127.0.0.1, runs wrk against each endpoint with a recorded AdmissionReview
# (tests/fixtures/create-seed-phi-3-v1alpha1.json: /mutate answers with a JSONPatch, /validate
# allows), prints wrk's report and the webhook's VmRSS/VmHWM, and stops it with SIGTERM.
# Only 127.0.0.1 is contacted.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-8}
THREADS=${THREADS:-1}
PORT=${PORT:-19443}
HEALTH_PORT=${HEALTH_PORT:-19080}
FIXTURE=${FIXTURE:-$here/../tests/fixtures/create-seed-phi-3-v1alpha1.json}

command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$root" && cargo build --release -p kaito-webhook --bin kaito-webhook) >&2
fi
target=${CARGO_TARGET_DIR:-$root/target}
bin="$target/release/kaito-webhook"
[ -x "$bin" ] || { echo "$bin is missing (build: cargo build --release -p kaito-webhook; CARGO_TARGET_DIR?)" >&2; exit 1; }

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/post.lua" <<LUA
local f = assert(io.open("$FIXTURE", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
LUA

RUST_LOG=warn "$bin" --bind-address 127.0.0.1 --port "$PORT" \
  --health-bind-address 127.0.0.1 --health-port "$HEALTH_PORT" \
  --tls-self-signed-for 127.0.0.1,localhost --tls-ca-out "$work/ca.pem" \
  2> "$work/webhook.log" &
pid=$!
for _ in $(seq 100); do
  if curl -fsS "http://127.0.0.1:$HEALTH_PORT/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$HEALTH_PORT/readyz" >/dev/null

rss() { awk '/^VmRSS|^VmHWM/ {printf "%s %s %s  ", $1, $2, $3} END {print ""}' "/proc/$pid/status"; }
echo "== kaito-webhook $(date -u +%FT%TZ), $(nproc) cores; idle: $(rss)"

for endpoint in mutate validate; do
  # Check the answer first: an error response would make a meaningless benchmark.
  answer=$(curl -fsS --cacert "$work/ca.pem" -H 'Content-Type: application/json' \
    --data-binary "@$FIXTURE" "https://127.0.0.1:$PORT/$endpoint")
  case "$answer" in *'"allowed":true'*) ;; *) echo "unexpected /$endpoint answer: $answer" >&2; exit 1;; esac
  echo "== POST /$endpoint: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/post.lua" \
    "https://127.0.0.1:$PORT/$endpoint"
  echo "== after /$endpoint: $(rss)"
done
echo "== admissions counted by the webhook:"
curl -fsS "http://127.0.0.1:$HEALTH_PORT/metrics" | grep '^kaito_webhook_admissions_total' || true
