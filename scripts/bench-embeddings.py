#!/usr/bin/env python3
"""Embeddings side by side in one run: Indus (`indus serve MODEL`, over HTTP) vs
sentence-transformers (PyTorch CPU, in process) on the same all-MiniLM-L6-v2, plus chat TPOT
at concurrency 8 with and without an embedding flood on the same Indus process.

    /work/venv-embed/bin/python scripts/bench-embeddings.py \
        --indus target/release/indus --minilm "$INDUS_TEST_MINILM_DIR" \
        [--chat-model "$INDUS_TEST_SMOLLM2_GGUF"] [--out docs/benchmarks/embeddings] [--amx-off-too] \
        [--baseline OLD_BUILD/indus] [--encoder-nice N]

Rows: 2000 sentences of ~32 tokens at client batches of 32 and 1 (one client, sequential),
and batch 1 from 8 concurrent clients; embeddings/s and per-request p50 latency. Indus'
figures include the HTTP round trip and JSON; sentence-transformers' are model.encode() calls
in process (no server at all), so the comparison favours sentence-transformers.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sentences(tokenizer, n: int, target: int = 32) -> list[str]:
    """n distinct inputs of about `target` tokens from the fixture sentences."""
    base = json.loads((ROOT / "tests/fixtures/encoders/sentences.json").read_text())[:40]
    rng = random.Random(1)
    out = []
    while len(out) < n:
        words = rng.choice(base).split()
        rng.shuffle(words)
        pool = words + [w for t in rng.sample(base, 3) for w in t.split()]
        text = ""
        for w in pool:  # one word at a time until the target length
            text = f"{text} {w}".strip()
            if len(tokenizer(text)["input_ids"]) >= target:
                break
        out.append(text)
    return out


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def start_server(cmd: list[str], env: dict | None = None) -> tuple[subprocess.Popen, str, Path]:
    log = Path(tempfile.mkstemp(suffix=".log")[1])
    proc = subprocess.Popen(cmd + ["--port", "0"], stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            env={**os.environ, **(env or {})})
    for _ in range(600):
        m = re.search(r"ready addr=([0-9.:]+)", log.read_text())
        if m:
            return proc, f"http://{m.group(1)}", log
        if proc.poll() is not None:
            sys.exit(f"server exited:\n{log.read_text()}")
        time.sleep(0.5)
    proc.kill()
    sys.exit("server never became ready")


def timed(fn, batches) -> tuple[float, list[float]]:
    lat = []
    t0 = time.perf_counter()
    for b in batches:
        s = time.perf_counter()
        fn(b)
        lat.append(time.perf_counter() - s)
    return time.perf_counter() - t0, lat


def chunks(xs, n):
    return [xs[i:i + n] for i in range(0, len(xs), n)]


def row(name, n, wall, lat):
    return {"row": name, "embeddings_per_s": n / wall, "p50_ms": 1e3 * statistics.median(lat),
            "p99_ms": 1e3 * sorted(lat)[int(0.99 * (len(lat) - 1))], "n": n}


def floor(model_dir: str, mean_tokens: float) -> dict:
    """The compute floor: FLOPs per sentence (linears 2·params·tokens, attention 4·l²·h per
    layer) over the sgemm rate measured here, now, on a layer-shaped GEMM (torch/MKL)."""
    import torch
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    lin = 4 * h * h + 2 * h * inter
    flops = layers * (2 * lin * mean_tokens + 4 * mean_tokens * mean_tokens * h)
    a, w = torch.randn(1024, h), torch.randn(inter, h)
    for _ in range(3):
        a @ w.T
    t0, n = time.perf_counter(), 40
    for _ in range(n):
        a @ w.T
    gflops = 2 * 1024 * h * inter * n / (time.perf_counter() - t0) / 1e9
    return {"gflop_per_sentence": flops / 1e9, "sgemm_gflops": gflops,
            "floor_embeddings_per_s": gflops * 1e9 / flops}


def bench_st(model_dir: str, texts: list[str], single: list[str]) -> list[dict]:
    import torch
    from sentence_transformers import SentenceTransformer
    torch.set_num_threads(os.cpu_count() or 1)
    st = SentenceTransformer(model_dir, device="cpu")
    st.encode(texts[:64], batch_size=32)  # warm-up
    rows = []
    wall, lat = timed(lambda b: st.encode(b, batch_size=32), chunks(texts, 32))
    rows.append(row("batch 32", len(texts), wall, lat))
    wall, lat = timed(lambda b: st.encode(b, batch_size=1), [[t] for t in single])
    rows.append(row("batch 1", len(single), wall, lat))
    return rows


def bench_indus(url: str, texts: list[str], single: list[str]) -> list[dict]:
    emb = url + "/v1/embeddings"
    call = lambda b: post(emb, {"model": "minilm", "input": b})
    call(texts[:64])  # warm-up
    rows = []
    wall, lat = timed(call, chunks(texts, 32))
    rows.append(row("batch 32", len(texts), wall, lat))
    wall, lat = timed(call, [[t] for t in single])
    rows.append(row("batch 1", len(single), wall, lat))
    lat8 = []
    def one(t):
        s = time.perf_counter()
        call([t])
        lat8.append(time.perf_counter() - s)
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(8) as ex:
        list(ex.map(one, texts[:800]))
    rows.append(row("batch 1, 8 clients", 800, time.perf_counter() - t0, lat8))
    return rows


def chat_tpot(indus: str, url: str, model: str, out: Path, label: str) -> float:
    js = out / f"chat-{label}.json"
    subprocess.run([indus, "bench", "serve", "--base-url", url, "--model", model, "--label", label,
                    "--no-progress", "--input-len", "64", "--output-len", "64", "--num-prompts", "48",
                    "--max-concurrency", "8", "--warmup", "2", "--ignore-eos", "--vocab-size", "49152",
                    "--seed", "1", "--output-json", str(js)], check=True, stdout=subprocess.DEVNULL)
    return json.loads(js.read_text())["summary"]["tpot"]["mean_ms"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--indus", required=True)
    ap.add_argument("--minilm", required=True)
    ap.add_argument("--chat-model", help="a GGUF/HF chat model for the TPOT-under-flood rows")
    ap.add_argument("--num", type=int, default=2000)
    ap.add_argument("--amx-off-too", action="store_true",
                    help="also run Indus with INDUS_AMX=off (candle's f32 GEMM) in the same run")
    ap.add_argument("--baseline", help="another indus binary (an earlier commit's build) measured "
                    "in the same run, so a change's gain is not mixed with run-to-run noise")
    ap.add_argument("--encoder-nice", type=int,
                    help="the chat + embedding server's --encoder-nice (its default otherwise)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/embeddings")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(args.minilm)
    texts = sentences(tok, args.num)
    single = texts[:400]
    mean_tokens = statistics.mean(len(tok(t)["input_ids"]) for t in texts)
    result = {"sentences": len(texts), "mean_tokens": mean_tokens, "cpus": os.cpu_count()}

    serve = [args.indus, "serve", args.minilm, "--served-model-name", "minilm"]
    proc, url, log = start_server(serve)
    try:
        result["indus"] = bench_indus(url, texts, single)
    finally:
        proc.terminate(); proc.wait()
    if args.amx_off_too:
        proc, url, log = start_server(serve, {"INDUS_AMX": "off"})
        try:
            result["indus_amx_off"] = bench_indus(url, texts, single)
        finally:
            proc.terminate(); proc.wait()
    if args.baseline:
        proc, url, log = start_server([args.baseline] + serve[1:])
        try:
            result["indus_baseline"] = bench_indus(url, texts, single)
        finally:
            proc.terminate(); proc.wait()
    result["sentence_transformers"] = bench_st(args.minilm, texts, single)
    result["floor"] = floor(args.minilm, mean_tokens)

    f = result["floor"]
    print(f"floor: {f['gflop_per_sentence']:.3f} GFLOP a sentence at the measured sgemm rate "
          f"{f['sgemm_gflops']:.0f} GFLOP/s = {f['floor_embeddings_per_s']:.0f} embeddings/s")
    if args.chat_model:
        nice = [] if args.encoder_nice is None else ["--encoder-nice", str(args.encoder_nice)]
        proc, url, log = start_server([args.indus, "serve", args.chat_model, "--served-model-name", "chat",
                                       "--embedding-model", f"minilm={args.minilm}"] + nice)
        try:
            alone = chat_tpot(args.indus, url, "chat", args.out, "alone")
            stop = threading.Event()
            flooded = [0]
            def flood():
                while not stop.is_set():
                    post(url + "/v1/embeddings", {"model": "minilm", "input": random.sample(texts, 32)})
                    flooded[0] += 32
            threads = [threading.Thread(target=flood) for _ in range(4)]
            for t in threads: t.start()
            t0 = time.perf_counter()
            under = chat_tpot(args.indus, url, "chat", args.out, "flood")
            secs = time.perf_counter() - t0
            stop.set()
            for t in threads: t.join()
            result["chat_tpot"] = {"alone_ms": alone, "with_flood_ms": under, "ratio": under / alone,
                                   "flood_embeddings_per_s": flooded[0] / secs}
        finally:
            proc.terminate(); proc.wait()

    (args.out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"{len(texts)} sentences, mean {mean_tokens:.1f} tokens, {os.cpu_count()} CPUs")
    print("| row | Indus emb/s | sentence-transformers emb/s | ratio | Indus p50 ms | ST p50 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    st_rows = {r["row"]: r for r in result["sentence_transformers"]}
    for r in result["indus"]:
        s = st_rows.get(r["row"]) or st_rows["batch 1"]
        print(f"| {r['row']} | {r['embeddings_per_s']:.1f} | {s['embeddings_per_s']:.1f} | "
              f"{r['embeddings_per_s'] / s['embeddings_per_s']:.2f}x | {r['p50_ms']:.2f} | {s['p50_ms']:.2f} |")
    for key, label in [("indus_amx_off", "INDUS_AMX=off"), ("indus_baseline", "baseline build")]:
        for r in result.get(key, []):
            s = st_rows.get(r["row"]) or st_rows["batch 1"]
            print(f"| {r['row']}, {label} | {r['embeddings_per_s']:.1f} | {s['embeddings_per_s']:.1f} | "
                  f"{r['embeddings_per_s'] / s['embeddings_per_s']:.2f}x | {r['p50_ms']:.2f} | {s['p50_ms']:.2f} |")
    if "chat_tpot" in result:
        c = result["chat_tpot"]
        print(f"chat TPOT c8: alone {c['alone_ms']:.2f} ms, with embedding flood {c['with_flood_ms']:.2f} ms "
              f"({c['ratio']:.2f}x; flood ran {c['flood_embeddings_per_s']:.0f} embeddings/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
