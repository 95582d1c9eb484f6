"""Decode tokens/s and time to first token: kaito-runtime (mistral.rs) vs HF transformers.

Both run greedy on the same generated safetensors, the same prompt and the same number of new
tokens (the generated model never emits EOS, so every stream produces exactly NEW_TOKENS).

  python bench.py server URL LABEL CONCURRENCY...   # streams /v1/completions over HTTP
  python bench.py transformers MODEL_DIR CONCURRENCY...  # batched model.generate in-process

Prints one JSON line per concurrency level:
  {"engine", "setting", "streams", "ttft_s" (mean), "decode_tok_s_per_stream" (mean),
   "aggregate_tok_s" (all streams' tokens / wall time)}
"""

import json
import os
import sys
import threading
import time
import urllib.request

PROMPT = ("The quick brown fox jumps over the lazy dog while the cat watches from the warm "
          "windowsill, ")  # 96 bytes = 96 byte-level tokens
NEW_TOKENS = int(os.environ.get("NEW_TOKENS", "64"))
# The server's name in the output, and extra fields of each request (llama.cpp's server gets
# {"ignore_eos": true}, so that a real model also yields exactly NEW_TOKENS tokens).
ENGINE = os.environ.get("BENCH_ENGINE", "kaito-runtime")
EXTRA = json.loads(os.environ.get("BENCH_EXTRA", "{}"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def stream_once(url, results, idx):
    body = json.dumps({"prompt": PROMPT, "max_tokens": NEW_TOKENS, "temperature": 0,
                       "stream": True, **EXTRA}).encode()
    req = urllib.request.Request(f"{url}/v1/completions", data=body,
                                 headers={"content-type": "application/json"})
    start = time.perf_counter()
    first = last = None
    tokens = 0
    with urllib.request.urlopen(req, timeout=600) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            text = chunk["choices"][0].get("text") or ""
            if text:
                now = time.perf_counter()
                tokens += 1
                first = first or now
                last = now
    results[idx] = (start, first, last, tokens)


def bench_server(url, label, levels):
    stream_once(url, [None], 0)  # warm-up
    for n in levels:
        results = [None] * n
        threads = [threading.Thread(target=stream_once, args=(url, results, i)) for i in range(n)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        ttft = sum(r[1] - r[0] for r in results) / n
        per_stream = sum((r[3] - 1) / (r[2] - r[1]) for r in results) / n
        total = sum(r[3] for r in results)
        print(json.dumps({"engine": ENGINE, "setting": label, "streams": n,
                          "ttft_s": round(ttft, 4), "decode_tok_s_per_stream": round(per_stream, 2),
                          "aggregate_tok_s": round(total / wall, 2), "tokens": total}), flush=True)


def bench_transformers(model_dir, levels):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor

    torch.set_num_threads(THREADS)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    model.eval()

    class Clock(LogitsProcessor):
        def __init__(self):
            self.stamps = []

        def __call__(self, input_ids, scores):
            self.stamps.append(time.perf_counter())
            return scores

    def run(n):
        batch = tok([PROMPT] * n, return_tensors="pt")
        clock = Clock()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                 do_sample=False, logits_processor=[clock],
                                 pad_token_id=tok.eos_token_id)
        t_end = time.perf_counter()
        new = out.shape[1] - batch["input_ids"].shape[1]
        return t0, clock.stamps, t_end, new

    run(1)  # warm-up
    for n in levels:
        t0, stamps, t_end, new = run(n)
        ttft = stamps[0] - t0
        per_stream = (new - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
        print(json.dumps({"engine": "transformers", "setting": "f32", "streams": n,
                          "ttft_s": round(ttft, 4), "decode_tok_s_per_stream": round(per_stream, 2),
                          "aggregate_tok_s": round(n * new / (t_end - t0), 2),
                          "tokens": n * new}), flush=True)


def main():
    mode = sys.argv[1]
    if mode == "server":
        bench_server(sys.argv[2], sys.argv[3], [int(x) for x in sys.argv[4:]])
    elif mode == "transformers":
        bench_transformers(sys.argv[2], [int(x) for x in sys.argv[3:]])
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
