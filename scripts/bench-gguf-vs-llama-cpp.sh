#!/usr/bin/env bash
# llama.cpp and Indus side by side on one GGUF file, on this machine's CPU, in one run:
#
#   eval "$(bash scripts/fetch-test-models.sh)"      # SmolLM2-135M-Instruct Q4_1
#   bash scripts/build-llama-cpp.sh                  # llama-server, llama-bench
#   RUSTFLAGS="-C target-cpu=native" cargo build --release
#   bash scripts/bench-gguf-vs-llama-cpp.sh [FILE.gguf]
#
# Every figure goes through the same client (`indus bench serve`, streaming /v1/completions with
# token-id prompts and ignore_eos) against `llama-server -np 16` and `indus serve`, one server at a
# time, THREADS threads each:
#   decode   batch-1 tok/s: 128 tokens after a 32-token prompt (1 / TPOT p50)
#   prefill  tok/s of a 512-token prompt (512 / TTFT p50, 1 output token)
#   c1, c16  output tok/s at concurrency 1 and 16 (input 128, output 64)
# plus llama-bench's own pp512 / tg128 for llama.cpp's engine-level figures.
# Results: $OUT/*.json and $OUT/summary.md (ratios Indus / llama.cpp).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GGUF=${1:-${INDUS_TEST_SMOLLM2_GGUF:?pass a .gguf file or set INDUS_TEST_SMOLLM2_GGUF}}
INDUS=${INDUS_BIN:-$repo/target/release/indus}
LLAMA=${LLAMA_BIN:-$(bash "$repo/scripts/build-llama-cpp.sh" --print-dir)/bin}
OUT=${OUT:-/tmp/bench-gguf}
THREADS=${THREADS:-2}
VOCAB=${VOCAB:-49152}
mkdir -p "$OUT"
log() { printf '[bench-gguf %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

wait_ready() { # url
  for _ in $(seq 600); do
    curl -sf "$1/health" >/dev/null 2>&1 && curl -sf "$1/v1/models" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "server at $1 never became ready" >&2
  return 1
}

bench() { # label url model name input output prompts concurrency
  "$INDUS" bench serve --base-url "$2" --model "$3" --label "$1" --no-progress \
    --input-len "$5" --output-len "$6" --num-prompts "$7" --max-concurrency "$8" \
    --warmup 2 --ignore-eos --vocab-size "$VOCAB" --seed 1 \
    --output-json "$OUT/$1-$4.json" >"$OUT/$1-$4.txt"
}

run_all() { # label url model
  log "$1: decode (32 in, 128 out, c1)"
  bench "$1" "$2" "$3" decode 32 128 4 1
  log "$1: prefill (512 in, 1 out, c1)"
  bench "$1" "$2" "$3" prefill 512 1 4 1
  log "$1: c1 (128 in, 64 out)"
  bench "$1" "$2" "$3" c1 128 64 8 1
  log "$1: c16 (128 in, 64 out)"
  bench "$1" "$2" "$3" c16 128 64 64 16
}

log "llama-bench (pp512, tg128, $THREADS threads, 3 repetitions)"
"$LLAMA/llama-bench" -m "$GGUF" -t "$THREADS" -p 512 -n 128 -r 3 --repack 0 -o json \
  >"$OUT/llama-bench.json" 2>"$OUT/llama-bench.log"

# --no-repack: llama.cpp's AMX/AVX-512 repacking segfaults on this CPU (0.3.36).
log "llama-server -np 16"
"$LLAMA/llama-server" -m "$GGUF" -t "$THREADS" -tb "$THREADS" -np 16 -c 16384 --no-repack \
  --host 127.0.0.1 --port 8091 >"$OUT/llama-server.log" 2>&1 &
lpid=$!
trap 'kill $lpid 2>/dev/null || true' EXIT
wait_ready http://127.0.0.1:8091
run_all llama.cpp http://127.0.0.1:8091 smollm2
kill $lpid; wait $lpid 2>/dev/null || true

log "indus serve"
# RAYON_NUM_THREADS also sizes candle's worker pool, where the CPU kernels run (CANDLE_NUM_THREADS wins if set).
RAYON_NUM_THREADS=$THREADS "$INDUS" serve "$GGUF" --served-model-name smollm2 --port 8092 \
  --max-num-seqs 16 >"$OUT/indus-serve.log" 2>&1 &
ipid=$!
trap 'kill $ipid 2>/dev/null || true' EXIT
wait_ready http://127.0.0.1:8092
run_all indus http://127.0.0.1:8092 smollm2
kill $ipid; wait $ipid 2>/dev/null || true

python3 - "$OUT" <<'EOF'
import json, sys, os
out = sys.argv[1]
def s(label, name):
    return json.load(open(os.path.join(out, f"{label}-{name}.json")))["summary"]
rows = []
def fig(label):
    d, p, c1, c16 = (s(label, n) for n in ("decode", "prefill", "c1", "c16"))
    return {
        "decode tok/s (batch 1, 128 after 32)": 1000.0 / d["tpot"]["p50_ms"],
        "prefill tok/s (512-token prompt)": 512 * 1000.0 / p["ttft"]["p50_ms"],
        "c1 output tok/s (128 in, 64 out)": c1["output_throughput"],
        "c16 output tok/s (128 in, 64 out)": c16["output_throughput"],
        "failed requests": sum(x["failed"] for x in (d, p, c1, c16)),
    }
l, i = fig("llama.cpp"), fig("indus")
bench = json.load(open(os.path.join(out, "llama-bench.json")))
lines = ["| figure | llama.cpp | Indus | Indus / llama.cpp |", "| --- | --- | --- | --- |"]
for k in l:
    ratio = "" if k == "failed requests" else f"{i[k] / l[k]:.2f}"
    lines.append(f"| {k} | {l[k]:.1f} | {i[k]:.1f} | {ratio} |")
for b in bench:
    kind = f"pp{b['n_prompt']}" if b["n_prompt"] else f"tg{b['n_gen']}"
    lines.append(f"| llama-bench {kind} (llama.cpp's own, {b['n_threads']} threads) | {b['avg_ts']:.1f} ± {b['stddev_ts']:.1f} | | |")
text = "\n".join(lines)
open(os.path.join(out, "summary.md"), "w").write(text + "\n")
print(text)
EOF
