#!/usr/bin/env bash
# Benchmark on the real model: kaito-runtime (mistral.rs, CPU, release) against llama.cpp's
# own server on the same GGUF file — SmolLM2-135M-Instruct Q4_1 (scripts/fetch-model.sh) —
# in one run: same prompt, NEW_TOKENS new tokens, greedy, streamed /v1/completions, at 1, 4
# and 16 concurrent streams. Prints JSON lines and a markdown table with the ratio.
#
#   runtime/bench/gguf-bench.sh
#
# Builds, once and cached: kaito-runtime --release with -C target-cpu=x86-64-v3 (its own target
# dir, as runtime/bench/bench.sh) and llama-server for the same instruction set
# (runtime/bench/build-llama-server.sh). Both servers get THREADS threads (default: all cores).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${BENCH_DIR:-$HOME/.cache/kaito-rs/bench-gguf}"
LEVELS="${LEVELS:-1 4 16}"
THREADS="${THREADS:-$(nproc)}"
export NEW_TOKENS="${NEW_TOKENS:-64}"
export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$HOME/.cache/kaito-rs/target-bench}"
export RUSTFLAGS="${BENCH_RUSTFLAGS:--C target-cpu=x86-64-v3}"
mkdir -p "$WORK"
GGUF=$("$ROOT/scripts/fetch-model.sh")
LLAMA=$("$ROOT/runtime/bench/build-llama-server.sh")
(cd "$ROOT" && cargo build --release --locked -p kaito-runtime --bin kaito-runtime)
BIN="$CARGO_TARGET_DIR/release/kaito-runtime"
PY=python3
MODEL="$WORK/model"
mkdir -p "$MODEL"
ln -sf "$GGUF" "$MODEL/$(basename "$GGUF")"
free_port() { $PY -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_ready() { # URL PID
  for _ in $(seq 1 600); do
    curl -sf "$1/health" >/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "server exited" >&2; return 1; }
    sleep 0.5
  done
  return 1
}
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
RESULTS="$WORK/results.jsonl"
: > "$RESULTS"

port=$(free_port)
RAYON_NUM_THREADS=$THREADS "$BIN" --model-dir "$MODEL" --host 127.0.0.1 --port "$port" \
  --served-model-name smollm2 --max-running 16 --max-queued 64 --adapters-dir /nonexistent \
  > "$WORK/kaito-runtime.out" 2> "$WORK/kaito-runtime.log" &
PIDS+=($!)
wait_ready "http://127.0.0.1:$port" "${PIDS[-1]}"
# shellcheck disable=SC2086
BENCH_ENGINE=kaito-runtime $PY "$ROOT/runtime/bench/bench.py" server "http://127.0.0.1:$port" q4_1-gguf $LEVELS | tee -a "$RESULTS"
kill -TERM "${PIDS[-1]}"; wait "${PIDS[-1]}" || true

port=$(free_port)
# 16 slots of 1024 tokens each (the prompt plus NEW_TOKENS fit); continuous batching on.
"$LLAMA" -m "$GGUF" --host 127.0.0.1 --port "$port" --threads "$THREADS" --threads-batch "$THREADS" \
  --parallel 16 --ctx-size 16384 --cont-batching --no-webui \
  > "$WORK/llama-server.out" 2> "$WORK/llama-server.log" &
PIDS+=($!)
wait_ready "http://127.0.0.1:$port" "${PIDS[-1]}"
# shellcheck disable=SC2086
BENCH_ENGINE=llama.cpp BENCH_EXTRA='{"ignore_eos": true}' $PY "$ROOT/runtime/bench/bench.py" server "http://127.0.0.1:$port" q4_1-gguf $LEVELS | tee -a "$RESULTS"
kill -TERM "${PIDS[-1]}"; wait "${PIDS[-1]}" || true

$PY - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ref = {r["streams"]: r for r in rows if r["engine"] == "llama.cpp"}
print("| engine | streams | TTFT s | decode tok/s per stream | aggregate tok/s | tokens | aggregate vs llama.cpp |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    b = ref.get(r["streams"])
    ratio = f'{r["aggregate_tok_s"] / b["aggregate_tok_s"]:.2f}x' if b else "-"
    print(f'| {r["engine"]} | {r["streams"]} | {r["ttft_s"]} | {r["decode_tok_s_per_stream"]} | '
          f'{r["aggregate_tok_s"]} | {r["tokens"]} | {ratio} |')
PY
