#!/usr/bin/env python3
"""Golden logits and greedy tokens for Gemma 3 270M Q4_K_M (issue 15), like the SmolLM2 ones.

Usage (from the repository root):

    eval "$(bash scripts/fetch-test-models.sh)"     # INDUS_TEST_GEMMA3_GGUF
    /work/venv-fixtures/bin/python scripts/make_gemma3_goldens.py

Writes tests/fixtures/gemma3/golden.safetensors (same tensor names as
tests/fixtures/smollm2/golden.safetensors) and tests/fixtures/gemma3/golden.json.

Reference: transformers loads the GGUF itself (dequantized to f32, eager attention, float32;
its Gemma tensor processor turns llama.cpp's `1 + w` norms back into `w`). The paragraph prompt
is longer than the model's 512-token sliding window, so local layers cut its context.
The model is never committed. No llama.cpp comparison (not built here).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))
import make_fixtures as mf  # noqa: E402
import make_smollm2_goldens as sg  # noqa: E402  (prompts, leading_agree)

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
DEFAULT_GGUF = Path.home() / ".cache/indus/models/gemma3/gemma-3-270m-q4_k_m.gguf"
OUT = REPO_ROOT / "tests" / "fixtures" / "gemma3"
GREEDY = 32
TOPK = 8
N_SAMPLE = 512
SAMPLE_SEED = 20240901

PROMPTS = [
    ("english", "The capital of Pakistan is"),
    # Twice the SmolLM2 paragraph: ~600 tokens, past the 512-token window.
    ("paragraph", sg.PARAGRAPH + "\n\n" + sg.PARAGRAPH + "\n\nIn short, the procedure"),
    ("urdu", "پاکستان کا دارالحکومت اسلام آباد ہے۔ یہ شہر اپنی خوبصورتی کے لیے مشہور ہے اور"),
    ("code", "def fibonacci(n: int) -> list[int]:\n    \"\"\"Return the first n Fibonacci numbers.\"\"\"\n"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=Path(os.environ.get("INDUS_TEST_GEMMA3_GGUF", DEFAULT_GGUF)))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256(args.gguf.read_bytes()).hexdigest()
    if h != GGUF_SHA256:
        raise SystemExit(f"{args.gguf}: sha256 {h}, expected {GGUF_SHA256}")
    tok = AutoTokenizer.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name)
    model = AutoModelForCausalLM.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name,
                                                 dtype=torch.float32, attn_implementation="eager")
    model.eval()
    cfg = model.config
    print("config:", dict(layer_types=cfg.layer_types, sliding_window=cfg.sliding_window,
                          query_pre_attn_scalar=cfg.query_pre_attn_scalar,
                          rope_local_base_freq=cfg.rope_local_base_freq, rope_theta=cfg.rope_theta,
                          rope_scaling=cfg.rope_scaling, vocab=cfg.vocab_size))
    vocab = cfg.vocab_size
    gen = torch.Generator().manual_seed(SAMPLE_SEED)
    sample_ids = torch.randperm(vocab, generator=gen)[:N_SAMPLE].sort().values.to(torch.int64)
    golden: dict[str, torch.Tensor] = {"sample_ids": sample_ids}
    report = dict(gguf=args.gguf.name, gguf_sha256=GGUF_SHA256, sample_seed=SAMPLE_SEED,
                  transformers_config=dict(sliding_window=cfg.sliding_window,
                                           query_pre_attn_scalar=cfg.query_pre_attn_scalar,
                                           layer_types=cfg.layer_types), prompts=[])
    for i, (kind, text) in enumerate(PROMPTS):
        ids = tok(text)["input_ids"]  # the tokenizer adds Gemma's BOS
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        greedy = mf.greedy_generate(model, ids, GREEDY)
        top = torch.topk(logits, TOPK, dim=-1)
        golden[f"input_ids_{i}"] = torch.tensor(ids, dtype=torch.int64)
        golden[f"last_logits_{i}"] = logits[-1].contiguous()
        golden[f"sampled_logits_{i}"] = logits[:, sample_ids].contiguous()
        golden[f"topk_ids_{i}"] = top.indices.to(torch.int64).contiguous()
        golden[f"topk_vals_{i}"] = top.values.contiguous()
        golden[f"argmax_{i}"] = logits.argmax(dim=-1).to(torch.int64)
        golden[f"greedy_{i}"] = torch.tensor(greedy, dtype=torch.int64)
        gaps = top.values[:, 0] - top.values[:, 1]
        entry = dict(index=i, kind=kind, text=text, n_tokens=len(ids), greedy=greedy,
                     greedy_text=tok.decode(greedy), min_prompt_top2_gap=round(float(gaps.min()), 5))
        report["prompts"].append(entry)
        print(f"prompt {i} ({kind}) len={len(ids)}: {entry['greedy_text']!r}", flush=True)
    save_file(golden, str(OUT / "golden.safetensors"), metadata={"format": "pt"})
    (OUT / "golden.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
