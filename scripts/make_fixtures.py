#!/usr/bin/env python3
"""Build the tiny random-weight test models and golden logits under tests/fixtures/.

Usage (from the repository root):

    python3 -m venv /work/venv-fixtures
    /work/venv-fixtures/bin/pip install -r scripts/requirements-fixtures.txt
    /work/venv-fixtures/bin/python scripts/make_fixtures.py

Options:
    --tokenizer-dir DIR   where tokenizer.json / tokenizer_config.json are read from
                          (default: ../shared/models/llama2-tokenizer next to the repo,
                          falling back to /work/shared/models/llama2-tokenizer)
    --out DIR             output root (default: tests/fixtures)
    --only NAME           build only one fixture (tiny-llama, tiny-llama3, tiny-qwen2,
                          tiny-qwen3, tiny-gemma2, tiny-gemma3, tiny-phi3, tiny-mixtral,
                          tiny-qwen2-moe, tiny-qwen3-moe)
    --check-only          do not write anything, only print the statistics
    --search-seed START   try seeds START, START+1, ... and print the first whose model
                          meets the acceptance criteria (GOLDEN_MIN_GAP etc. below);
                          this is how the hard-coded seeds were picked

Each fixture directory gets config.json, model.safetensors (bf16, written by
transformers' save_pretrained so tensor names and layout match real HF checkpoints),
tokenizer.json, tokenizer_config.json (verbatim copies, so tests never read ../shared),
generation_config.json and golden.safetensors (f32 reference logits computed by
transformers from exactly the bf16 weights upcast to f32).

The weights are re-drawn with a fixed seed and scaled so that the logits are well
separated (std of the logits over the vocabulary ~4-8 per position, top1-top2 gap
typically >> 0.05), so greedy decoding is stable under tiny rounding differences
(e.g. batched vs single-sequence runs).  The script checks that greedy generations
differ between prompts and are not degenerate single-token loops.

Everything is deterministic: rerunning reproduces byte-identical files given the
same pinned package versions (see requirements-fixtures.txt).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import tokenizers
from safetensors.torch import load_file, save_file
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    MixtralConfig,
    MixtralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

# Prompts whose golden logits are stored (index i -> *_i tensors).
GOLDEN_PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "پاکستان ایک خوبصورت ملک ہے",
    "你好，世界 🌍🚀",
]

# Extra prompts used only for the sanity checks (diversity / gap statistics).
CHECK_PROMPTS = GOLDEN_PROMPTS + [
    "Once upon a time",
    "def fibonacci(n):",
    "The capital of France is",
    "1, 2, 3, 4, 5,",
    "Rust is a systems programming language",
    "Hola, ¿cómo estás?",
    "I like to eat apples and",
    "Translate to German: good morning",
]

GREEDY_NEW_TOKENS = 24
GEMMA2_SEED = 4  # found with --search-seed 1
GEMMA3_SEED = 2  # seed 1 fails the gap criteria
QWEN3_SEED = 70  # seeds 1-69 fail the gap criteria (checked on the saved, reloaded model)
PHI3_SEED = 25  # found with --search-seed 1
MIXTRAL_SEED = 34  # the first seed from 1 whose saved model passes the checks
QWEN2_MOE_SEED = 6  # the first seed from 1 whose saved model passes the checks
QWEN3_MOE_SEED = 86  # the first seed from 1 whose saved model passes the checks
HEAD_VOCAB = 512

COMMON = dict(
    vocab_size=32000,
    hidden_size=64,
    intermediate_size=176,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=2048,
    bos_token_id=1,
    eos_token_id=2,
    hidden_act="silu",
    initializer_range=0.02,
    use_cache=True,
    dtype="bfloat16",
)

FIXTURES = {
    "tiny-llama": dict(
        cls=LlamaForCausalLM,
        config_cls=LlamaConfig,
        seed=15,  # found with --search-seed 1
        scales=dict(row_lognorm=0.2),  # untied lm_head: a heavier tail is harmless
        config=dict(
            COMMON,
            num_key_value_heads=2,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            tie_word_embeddings=False,
            attention_bias=False,
            mlp_bias=False,
        ),
        generation_config={"bos_token_id": 1, "eos_token_id": 2},
    ),
    "tiny-llama3": dict(
        cls=LlamaForCausalLM,
        config_cls=LlamaConfig,
        seed=29,  # found with --search-seed 1
        config=dict(
            COMMON,
            eos_token_id=[2, 31999],
            num_key_value_heads=1,
            rms_norm_eps=1e-5,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 256,
            },
            tie_word_embeddings=True,
            attention_bias=False,
            mlp_bias=False,
        ),
        generation_config={"bos_token_id": 1, "eos_token_id": [2, 31999]},
    ),
    "tiny-qwen2": dict(
        cls=Qwen2ForCausalLM,
        config_cls=Qwen2Config,
        seed=11,  # found with --search-seed 1
        config=dict(
            COMMON,
            num_key_value_heads=2,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
            use_sliding_window=False,
            max_window_layers=2,
        ),
        generation_config={"bos_token_id": 1, "eos_token_id": 2},
    ),
    # head_dim 32 with 4 heads: q is 128 wide while hidden is 64, so a loader that derives
    # head_dim from hidden / heads fails; the q/k norms are jittered like every norm.
    "tiny-qwen3": dict(
        cls=Qwen3ForCausalLM,
        config_cls=Qwen3Config,
        seed=QWEN3_SEED,
        config=dict(
            COMMON,
            num_key_value_heads=2,
            head_dim=32,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
            attention_bias=False,
            use_sliding_window=False,
            max_window_layers=2,
        ),
        generation_config={"bos_token_id": 1, "eos_token_id": 2},
    ),
    # Gemma 2: 4 layers alternating sliding (window 8, shorter than the test prompts) and
    # global; the score soft-cap set low enough that it changes the logits (published: 50),
    # the logit cap 80 (published: 30) over logits of std ~12, so it bends the top logits
    # without crowding them together (caps of 12-50 over std 8 left no seed in 150 with the
    # gap criteria); query_pre_attn_scalar 24 != head_dim 32, one rope for all.
    "tiny-gemma2": dict(
        cls=Gemma2ForCausalLM,
        config_cls=Gemma2Config,
        seed=GEMMA2_SEED,
        scales=dict(norm_center=0.0, post_norm_center=3.0, final_norm_center=12.0, embed=0.1),
        config=dict(
            {k: v for k, v in COMMON.items() if k != "hidden_act"},
            num_hidden_layers=4,
            num_key_value_heads=2,
            head_dim=32,
            hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=24,
            rms_norm_eps=1e-6,
            rope_theta=10000.0,
            sliding_window=8,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=80.0,
            tie_word_embeddings=True,
            attention_bias=False,
        ),
        generation_config={"bos_token_id": 1, "eos_token_id": 2},
    ),
    # Gemma 3 text-only, 6 layers so the default pattern (5 sliding : 1 global) holds one
    # global layer; a window of 8 tokens, shorter than the test prompts, so the window
    # changes the logits; query_pre_attn_scalar 24 != head_dim 32 so the scale is checked;
    # linear rope scaling on the global layers only.
    "tiny-gemma3": dict(
        cls=Gemma3ForCausalLM,
        config_cls=Gemma3TextConfig,
        seed=GEMMA3_SEED,
        # Gemma norms multiply by (1 + w): centre w at 0, make the post-attention /
        # post-feed-forward norms large and the embedding small (it is scaled by √hidden)
        # so the sub-layers dominate the residual stream (else tied embeddings loop
        # greedily), and the final norm large so the tied logits are well separated.
        scales=dict(norm_center=0.0, post_norm_center=3.0, final_norm_center=9.0, embed=0.1),
        config=dict(
            {k: v for k, v in COMMON.items() if k != "hidden_act"},
            num_hidden_layers=6,
            num_key_value_heads=2,
            head_dim=32,
            hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=24,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            rope_local_base_freq=10000.0,
            rope_scaling={"rope_type": "linear", "factor": 2.0},
            sliding_window=8,
            tie_word_embeddings=True,
            attention_bias=False,
            final_logit_softcapping=None,
            attn_logit_softcapping=None,
        ),
        generation_config={"bos_token_id": 1, "eos_token_id": 2},
    ),
    # Phi-3 as published: q/k/v in one qkv_proj, gate/up in one gate_up_proj (gate rows
    # first), LongRoPE, untied lm_head; plus Phi-4-mini's partial rotary (0.75 of a 16-wide
    # head: 12 rotated dimensions, 6 factors). original_max_position_embeddings 2 is below
    # every prompt, so transformers takes the long factors in every forward pass, as Indus
    # does for any checkpoint whose max_position_embeddings exceeds the original (see
    # models/src/rope.rs); the attention factor sqrt(1 + ln(1024) / ln(2)) = 3.3 scales q
    # and k, so their weights are drawn smaller.
    "tiny-phi3": dict(
        cls=Phi3ForCausalLM,
        config_cls=Phi3Config,
        seed=PHI3_SEED,
        scales=dict(qk=0.5),
        config=dict(
            COMMON,
            num_key_value_heads=2,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            partial_rotary_factor=0.75,
            original_max_position_embeddings=2,
            rope_scaling={
                "type": "longrope",
                "short_factor": [1.0, 1.02, 1.1, 1.3, 1.7, 2.5],
                "long_factor": [1.0, 1.4, 2.6, 4.9, 9.7, 19.0],
            },
            sliding_window=None,
            tie_word_embeddings=False,
            pad_token_id=0,
        ),
        generation_config={"bos_token_id": 1, "eos_token_id": 2},
    ),
    # Mixtral: every layer's MLP is 4 experts, top 2, weights renormalized to sum to one.
    "tiny-mixtral": dict(
        cls=MixtralForCausalLM,
        config_cls=MixtralConfig,
        seed=MIXTRAL_SEED,
        config=dict(
            COMMON,
            intermediate_size=96,
            num_key_value_heads=2,
            num_local_experts=4,
            num_experts_per_tok=2,
            router_jitter_noise=0.0,
            rms_norm_eps=1e-5,
            rope_theta=1000000.0,
            sliding_window=None,
            tie_word_embeddings=False,
        ),
        generation_config={"bos_token_id": 1, "eos_token_id": 2},
    ),
    # Qwen2-MoE: q/k/v bias, 4 experts top 2 without renormalization, a shared expert behind
    # a sigmoid gate; layer 1 is a dense MLP (mlp_only_layers), as Qwen's configs allow.
    "tiny-qwen2-moe": dict(
        cls=Qwen2MoeForCausalLM,
        config_cls=Qwen2MoeConfig,
        seed=QWEN2_MOE_SEED,
        config=dict(
            COMMON,
            num_key_value_heads=2,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=64,
            shared_expert_intermediate_size=96,
            norm_topk_prob=False,
            decoder_sparse_step=1,
            mlp_only_layers=[1],
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            use_sliding_window=False,
            tie_word_embeddings=False,
        ),
        generation_config={"bos_token_id": 1, "eos_token_id": 2},
    ),
    # Qwen3-MoE: Qwen3's per-head q/k norm and head_dim 32, 8 experts top 2 renormalized
    # (norm_topk_prob, as Qwen3-30B-A3B), no shared expert.
    "tiny-qwen3-moe": dict(
        cls=Qwen3MoeForCausalLM,
        config_cls=Qwen3MoeConfig,
        seed=QWEN3_MOE_SEED,
        config=dict(
            COMMON,
            num_key_value_heads=2,
            head_dim=32,
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=48,
            norm_topk_prob=True,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            attention_bias=False,
            use_sliding_window=False,
            tie_word_embeddings=False,
        ),
        generation_config={"bos_token_id": 1, "eos_token_id": 2},
    ),
}

# Standard deviations of the re-drawn weights.  Matrices are N(0, std^2) with std
# given relative to 1/sqrt(fan_in); norms are 1 + N(0, 0.1^2) so that a loader that
# ignores norm weights is caught; q/k/v biases (Qwen2) are N(0, 0.3^2).  The
# attention / MLP outputs (o, down) are large relative to the embeddings so the
# residual stream is dominated by mixed context rather than the current token
# (with tied embeddings a dominant current-token component makes every token
# predict itself: a degenerate greedy loop).  Fixtures may override entries.
SCALES = dict(
    embed=0.95,     # absolute std of the embedding (also the lm_head when tied)
    lm_head=0.95,   # absolute std of an untied lm_head
    qk=1.6,         # x 1/sqrt(hidden): sharp-ish attention
    v=1.0,
    o=4.0,
    gate_up=1.2,
    down=8.0,
    row_lognorm=0.1,  # sigma of a log-normal per-row scale of embed / lm_head
    norm_jitter=0.1,
    norm_center=1.0,       # norms are centre + jitter (Gemma's (1 + w) norms: centre 0)
    post_norm_center=None,  # Gemma's post-attention / post-feed-forward norms, if set
    final_norm_center=None,  # model.norm, if set (Gemma: sharpens the tied logits)
    bias=0.3,
    router=2.0,     # x 1/sqrt(hidden): MoE routers and Qwen2-MoE's shared-expert gate
)

# Acceptance criteria; --search-seed looks for the first seed meeting them.
GOLDEN_MIN_GAP = 0.05  # top1-top2 logit gap at every prompt position and every
                       # greedy step of the GOLDEN prompts
CHECK_MIN_GAP = 0.01   # ... at every greedy step of the other CHECK prompts
MIN_DISTINCT = 8     # distinct ids in each 24-token greedy generation


def scales_for(spec: dict) -> dict:
    return dict(SCALES, **spec.get("scales", {}))


def init_weights(model: torch.nn.Module, seed: int, s: dict) -> None:
    """Overwrite every parameter deterministically (sorted by name)."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    for name in sorted(params):
        p = params[name]
        shape = p.shape
        if name.endswith("norm.weight"):
            centre = s["norm_center"]
            if s["post_norm_center"] is not None and (
                "post_attention_layernorm" in name or "post_feedforward_layernorm" in name
            ):
                centre = s["post_norm_center"]
            if s["final_norm_center"] is not None and name == "model.norm.weight":
                centre = s["final_norm_center"]
            val = centre + s["norm_jitter"] * torch.randn(shape, generator=gen)
        elif name.endswith(".bias"):
            val = s["bias"] * torch.randn(shape, generator=gen)
        elif "embed_tokens" in name or name == "lm_head.weight":
            std = s["embed"] if "embed_tokens" in name else s["lm_head"]
            val = torch.randn(shape, generator=gen)
            # Log-normal per-row norms give a slightly heavier-tailed logit
            # distribution, i.e. larger top1-top2 gaps than i.i.d. Gaussian rows.
            sigma = s["row_lognorm"]
            rows = torch.exp(sigma * torch.randn((shape[0], 1), generator=gen))
            val = std * val * rows / math.exp(sigma * sigma)
        elif name.endswith(".gate.weight") or name.endswith("shared_expert_gate.weight"):
            val = (s["router"] / math.sqrt(shape[1])) * torch.randn(shape, generator=gen)
        elif "qkv_proj" in name:
            # Phi-3's fused q/k/v: q and k rows at the qk scale, v rows at the v scale.
            cfg = model.config
            hd = cfg.hidden_size // cfg.num_attention_heads
            v_rows = cfg.num_key_value_heads * hd
            fan_in = shape[1]
            k = torch.full((shape[0], 1), s["qk"])
            k[shape[0] - v_rows:] = s["v"]
            val = (k / math.sqrt(fan_in)) * torch.randn(shape, generator=gen)
        else:
            fan_in = shape[1]
            if "q_proj" in name or "k_proj" in name:
                k = s["qk"]
            elif "v_proj" in name:
                k = s["v"]
            elif "o_proj" in name:
                k = s["o"]
            elif "gate_proj" in name or "up_proj" in name or name.endswith((".w1.weight", ".w3.weight")):
                # also Phi-3's gate_up_proj and Mixtral's experts' w1 (gate) and w3 (up)
                k = s["gate_up"]
            elif "down_proj" in name or name.endswith(".w2.weight"):
                k = s["down"]
            else:
                raise ValueError(f"unexpected parameter {name}")
            val = (k / math.sqrt(fan_in)) * torch.randn(shape, generator=gen)
        with torch.no_grad():
            p.copy_(val.to(p.dtype))


def build_model(spec: dict, seed: int | None = None) -> torch.nn.Module:
    """The bf16 model as it will be saved."""
    seed = spec["seed"] if seed is None else seed
    config = spec["config_cls"](**spec["config"])
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = spec["cls"](config)
    model.eval()
    init_weights(model, seed, scales_for(spec))
    if config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model.to(torch.bfloat16)


def fix_config_json(path: Path) -> None:
    """transformers >= 4.56 writes "dtype"; real checkpoints use "torch_dtype"."""
    cfg = json.loads(path.read_text())
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def top2_gaps(logits: torch.Tensor) -> torch.Tensor:
    v = torch.topk(logits, 2, dim=-1).values
    return v[..., 0] - v[..., 1]


def greedy_manual(model, ids: list[int], n: int):
    """Greedy decode with full recompute; returns (tokens, per-step top1-top2 gaps)."""
    seq = list(ids)
    out, gaps = [], []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([seq])).logits[0, -1]
            gaps.append(float(top2_gaps(logits)))
            t = int(logits.argmax())
            out.append(t)
            seq.append(t)
    return out, gaps


def greedy_generate(model, ids: list[int], n: int) -> list[int]:
    """transformers' own greedy generation (KV cache), never stopping on EOS."""
    gc = GenerationConfig(
        do_sample=False,
        max_new_tokens=n,
        min_new_tokens=0,
        eos_token_id=None,
        bos_token_id=1,
        pad_token_id=0,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    saved = model.generation_config
    model.generation_config = gc  # so nothing falls back to the model's eos id
    try:
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                generation_config=gc,
            )
    finally:
        model.generation_config = saved
    new = out[0, len(ids):].tolist()
    assert len(new) == n, (len(new), n)
    return new


def load_tokenizers(tok_dir: Path):
    tok = AutoTokenizer.from_pretrained(tok_dir, legacy=True)
    raw = tokenizers.Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    return tok, raw


def encode(tok, raw: tokenizers.Tokenizer, text: str) -> list[int]:
    ids = tok(text)["input_ids"]
    # tokenizer.json has no post-processor: the BOS comes from add_bos_token in
    # tokenizer_config.json.  Cross-check against the raw `tokenizers` library.
    raw_ids = raw.encode(text, add_special_tokens=False).ids
    assert ids == [1] + raw_ids, (text, ids, raw_ids)
    return ids


def evaluate(model, tok, raw, early_exit: bool = False):
    """Run the checks; returns (ok, report dict).  `model` must be f32."""
    report = dict(prompts=[], problems=[])
    gen_gaps, prompt_gaps, stds = [], [], []
    outputs = []
    for i, text in enumerate(CHECK_PROMPTS):
        ids = encode(tok, raw, text)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        stds.extend(logits.std(dim=-1).tolist())
        pg = top2_gaps(logits).tolist()
        gen, gg = greedy_manual(model, ids, GREEDY_NEW_TOKENS)
        entry = dict(
            text=text, ids=ids, logits=logits, gen=gen, gen_gaps=gg, prompt_gaps=pg
        )
        report["prompts"].append(entry)
        gen_gaps.extend(gg)
        if i < len(GOLDEN_PROMPTS):
            prompt_gaps.extend(pg)
        outputs.append(tuple(gen))
        problems = []
        if len(set(gen)) < MIN_DISTINCT:
            problems.append(f"prompt {i}: only {len(set(gen))} distinct tokens")
        golden = i < len(GOLDEN_PROMPTS)
        if min(gg) < (GOLDEN_MIN_GAP if golden else CHECK_MIN_GAP):
            problems.append(f"prompt {i}: greedy gap {min(gg):.4f}")
        if golden and min(pg) < GOLDEN_MIN_GAP:
            problems.append(f"prompt {i}: prompt-position gap {min(pg):.4f}")
        report["problems"].extend(problems)
        if problems and early_exit:
            return False, report
    if len(set(outputs)) != len(outputs):
        report["problems"].append("identical generations for different prompts")
    g = torch.tensor(gen_gaps)
    st = torch.tensor(stds)
    report["stats"] = dict(
        logit_std_min=round(float(st.min()), 3),
        logit_std_mean=round(float(st.mean()), 3),
        logit_std_max=round(float(st.max()), 3),
        greedy_gap_min=round(float(g.min()), 4),
        greedy_gap_median=round(float(g.median()), 3),
        greedy_gap_frac_below_0_05=round(float((g < 0.05).float().mean()), 4),
        golden_prompt_position_gap_min=round(min(prompt_gaps), 4),
        min_distinct=min(len(set(o)) for o in outputs),
    )
    return not report["problems"], report


def search_seed(name: str, spec: dict, tok_dir: Path, start: int, count: int) -> int | None:
    tok, raw = load_tokenizers(tok_dir)
    for seed in range(start, start + count):
        model = build_model(spec, seed).float()
        ok, rep = evaluate(model, tok, raw, early_exit=True)
        print(f"  {name} seed {seed}: {'OK' if ok else rep['problems'][0]}", flush=True)
        if ok:
            return seed
    return None


def build_fixture(name: str, spec: dict, tok_dir: Path, out_root: Path, check_only: bool):
    print(f"=== {name} (seed {spec['seed']})")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_model(spec)
        model.save_pretrained(tmp, safe_serialization=True)
        fix_config_json(tmp / "config.json")
        (tmp / "generation_config.json").write_text(
            json.dumps(spec["generation_config"], indent=2) + "\n"
        )
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(tok_dir / f, tmp / f)

        # Reload exactly the saved bf16 weights, upcast to f32.
        ref = spec["cls"].from_pretrained(tmp, dtype=torch.float32, attn_implementation="eager")
        ref.eval()
        assert next(ref.parameters()).dtype == torch.float32
        sd_saved = load_file(str(tmp / "model.safetensors"))
        ref_sd = ref.state_dict()
        for k, v in sd_saved.items():
            assert v.dtype == torch.bfloat16, (k, v.dtype)
            assert torch.equal(ref_sd[k], v.float()), k

        tok, raw = load_tokenizers(tmp)
        ok, rep = evaluate(ref, tok, raw)
        golden = {}
        for i, e in enumerate(rep["prompts"]):
            gen = greedy_generate(ref, e["ids"], GREEDY_NEW_TOKENS)
            assert gen == e["gen"], (name, e["text"], gen, e["gen"])
            print(
                f"  prompt {i:2d} len={len(e['ids']):2d} distinct={len(set(gen)):2d} "
                f"min_gap_greedy={min(e['gen_gaps']):.4f} greedy={gen}"
            )
            if i < len(GOLDEN_PROMPTS):
                logits = e["logits"]
                golden[f"input_ids_{i}"] = torch.tensor(e["ids"], dtype=torch.int64)
                golden[f"last_logits_{i}"] = logits[-1].contiguous()
                golden[f"all_logits_head_{i}"] = logits[:, :HEAD_VOCAB].contiguous()
                golden[f"argmax_{i}"] = logits.argmax(dim=-1).to(torch.int64)
                golden[f"greedy_{i}"] = torch.tensor(gen, dtype=torch.int64)
        print("  stats:", json.dumps(rep["stats"]))
        if not ok:
            raise SystemExit(f"{name}: checks failed: {rep['problems']}")
        eos = spec["generation_config"]["eos_token_id"]
        eos = set(eos if isinstance(eos, list) else [eos])
        for i in range(len(GOLDEN_PROMPTS)):
            hit = [t for t in golden[f"greedy_{i}"].tolist() if t in eos]
            if hit:
                print(f"  NOTE: greedy_{i} contains an EOS id {hit}")

        save_file(golden, str(tmp / "golden.safetensors"), metadata={"format": "pt"})

        if not check_only:
            dest = out_root / name
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            for f in FIXTURE_FILES:
                shutil.copyfile(tmp / f, dest / f)
                os.chmod(dest / f, 0o644)
            print(f"  wrote {dest}")
        return rep["stats"]


FIXTURE_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "golden.safetensors",
)


def default_tokenizer_dir() -> Path:
    for cand in (
        REPO_ROOT.parent / "shared" / "models" / "llama2-tokenizer",
        Path("/work/shared/models/llama2-tokenizer"),
    ):
        if (cand / "tokenizer.json").exists():
            return cand
    raise SystemExit("llama2 tokenizer not found; pass --tokenizer-dir")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "tests" / "fixtures")
    ap.add_argument("--only", choices=sorted(FIXTURES), default=None)
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument(
        "--search-seed",
        type=int,
        metavar="START",
        default=None,
        help="try seeds START, START+1, ... and print the first meeting the criteria",
    )
    ap.add_argument("--search-count", type=int, default=500)
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    tok_dir = args.tokenizer_dir or default_tokenizer_dir()
    names = [args.only] if args.only else list(FIXTURES)
    if args.search_seed is not None:
        for name in names:
            seed = search_seed(name, FIXTURES[name], tok_dir, args.search_seed, args.search_count)
            print(f"{name}: first good seed = {seed}")
        return 0
    summary = {}
    for name in names:
        summary[name] = build_fixture(name, FIXTURES[name], tok_dir, args.out, args.check_only)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
