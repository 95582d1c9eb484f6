#!/usr/bin/env bash
# Benchmark: kaito-runtime (mistral.rs, CPU) against HF transformers (PyTorch, CPU), greedy,
# same ~100M-parameter generated Llama safetensors, same prompt, NEW_TOKENS new tokens, at
# 1, 4 and 16 concurrent streams. Settings: f32 vs f32, and in-situ Q4K / Q8_0 vs transformers f32.
#
#   runtime/bench/bench.sh            # prints JSON lines and a markdown table
#
# Needs: PyPI access for the venv (torch, transformers, safetensors); about 25 minutes for the
# release build of mistral.rs on 2 cores the first time. The binary is built with
# RUSTFLAGS="-C target-cpu=x86-64-v3" (candle picks its quantized CPU kernels at compile time)
# in its own target dir, so the workspace's portable builds are not invalidated.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${BENCH_DIR:-$HOME/.cache/kaito-rs/bench}"
VENV="${BENCH_VENV:-$HOME/.cache/kaito-rs/venv-bench}"
LEVELS="${LEVELS:-1 4 16}"
SETTINGS="${SETTINGS:-f32 q4k q8_0}"
export NEW_TOKENS="${NEW_TOKENS:-64}"
export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$HOME/.cache/kaito-rs/target-bench}"
export RUSTFLAGS="${BENCH_RUSTFLAGS:--C target-cpu=x86-64-v3}"
mkdir -p "$WORK"

if ! "$VENV/bin/python" -c 'import torch, transformers, safetensors' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet torch transformers safetensors
fi
PY="$VENV/bin/python"

(cd "$ROOT" && cargo build --release -p kaito-runtime --bin kaito-runtime)
BIN="$CARGO_TARGET_DIR/release/kaito-runtime"
MODEL="$WORK/llama-100m"
[ -f "$MODEL/model.safetensors" ] || "$BIN" gen-model --arch llama --size bench --out "$MODEL"

RESULTS="$WORK/results.jsonl"
: > "$RESULTS"
for setting in $SETTINGS; do
    args=(--model-dir "$MODEL" --host 127.0.0.1 --port 0 --served-model-name bench
          --dtype f32 --max-running 16 --max-queued 64 --adapters-dir /nonexistent)
    [ "$setting" != f32 ] && args+=(--isq "$setting")
    LOG="$WORK/server-$setting.log"
    "$BIN" "${args[@]}" > "$WORK/server-$setting.out" 2> "$LOG" &
    PID=$!
    trap 'kill $PID 2>/dev/null || true' EXIT
    for _ in $(seq 1 600); do
        ADDR=$(sed -n 's/^kaito-runtime listening on //p' "$WORK/server-$setting.out")
        if [ -n "$ADDR" ] && curl -sf "http://$ADDR/health" >/dev/null; then break; fi
        sleep 0.5
    done
    # shellcheck disable=SC2086
    "$PY" "$ROOT/runtime/bench/bench.py" server "http://$ADDR" "$setting" $LEVELS | tee -a "$RESULTS"
    kill -TERM "$PID"; wait "$PID" || true
done
# shellcheck disable=SC2086
"$PY" "$ROOT/runtime/bench/bench.py" transformers "$MODEL" $LEVELS | tee -a "$RESULTS"

"$PY" - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
base = {r["streams"]: r for r in rows if r["engine"] == "transformers"}
print("| engine | setting | streams | TTFT s | decode tok/s per stream | aggregate tok/s | vs transformers f32 (per stream) |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    b = base.get(r["streams"])
    ratio = f'{r["decode_tok_s_per_stream"] / b["decode_tok_s_per_stream"]:.2f}x' if b else "-"
    print(f'| {r["engine"]} | {r["setting"]} | {r["streams"]} | {r["ttft_s"]} | '
          f'{r["decode_tok_s_per_stream"]} | {r["aggregate_tok_s"]} | {ratio} |')
PY
