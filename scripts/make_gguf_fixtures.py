#!/usr/bin/env python3
"""Build the small GGUF test fixtures under tests/fixtures/gguf/ (see its README.md).

Usage (from the repository root, after scripts/build-llama-cpp.sh and scripts/fetch-test-models.sh):

    /work/venv-fixtures/bin/python scripts/make_gguf_fixtures.py

The GGUF files are written by llama.cpp's own converter (convert_hf_to_gguf.py from the
llama.cpp vendored in the llama-cpp-python 0.3.36 sdist, unpacked by build-llama-cpp.sh) and
K-quants by its llama-quantize, so Q/K permutation, rope_freqs, tokenizer metadata and tensor
layout are exactly those of real files. Goldens beside each file are computed by transformers
loading the GGUF itself (dequantized to f32, eager attention), same tensor names as
tests/fixtures/*/golden.safetensors (see scripts/make_fixtures.py).

Options: --llama-cpp DIR (default $HOME/.cache/indus/llama.cpp-0.3.36),
         --smollm2-gguf FILE (default $INDUS_TEST_SMOLLM2_GGUF or the fetch script's cache path),
         --out DIR (default tests/fixtures/gguf), --only NAME.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))
import make_fixtures as mf  # noqa: E402  (prompts, weight init, greedy helpers)

import gguf  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: E402

FIX = REPO_ROOT / "tests" / "fixtures"
DEFAULT_LLAMA = Path.home() / ".cache" / "indus" / "llama.cpp-0.3.36"

# name -> (source, [(outtype, how)])   how: "convert" (convert_hf_to_gguf --outtype) or
# "quantize:<src outtype>" (llama-quantize from that file)
FIXTURES = {
    "tiny-llama3": ("tiny-llama3", [("f16", "convert"), ("q8_0", "convert"), ("Q4_K_M", "quantize:f16")]),
    "tiny-qwen2": ("tiny-qwen2", [("q8_0", "convert")]),
    "tiny-smollm2-tok": ("build:smollm2", [("q8_0", "convert")]),
}

# Llama 2 SentencePiece model (the tokenizer.json in the fixtures is its HF conversion)
LLAMA2_SPM_SHA256 = "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347"
SMOL_SEED = 7  # weight seed of the gpt2-tokenizer fixture (fixed; checked by mf.evaluate-like stats)


def gguf_meta(path: Path) -> dict:
    r = gguf.GGUFReader(str(path))
    out = {}
    for k, f in r.fields.items():
        if k.startswith("tokenizer.ggml.") and k in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                                                      "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
            out[k] = f"[{len(f.data)} entries]"
            continue
        try:
            v = f.contents()
        except Exception:  # noqa: BLE001
            v = "?"
        if isinstance(v, str) and len(v) > 80:
            v = v[:80] + "..."
        out[k] = v
    types = {}
    for t in r.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    out["_tensor_types"] = types
    out["_n_tensors"] = len(r.tensors)
    return out


def run(cmd: list[str], **kw) -> None:
    print("  $", " ".join(str(c) for c in cmd), flush=True)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        print(r.stdout[-4000:])
        raise SystemExit(f"command failed ({r.returncode})")


def build_smollm2_tok_model(dst: Path, smol_gguf: Path) -> None:
    """A tiny random LlamaForCausalLM with SmolLM2's byte-level BPE tokenizer (from its GGUF)."""
    from make_smollm2_goldens import smollm_tokenizer  # SmolLM's real pre-tokenizer restored

    tok, _ = smollm_tokenizer(smol_gguf)
    tok.save_pretrained(dst)
    # LlamaTokenizerFast.save_pretrained also writes a tokenizer.model that is no SentencePiece
    # model; without it the converter takes its BPE (gpt2) path, as for the real SmolLM2 repo.
    (dst / "tokenizer.model").unlink(missing_ok=True)
    # transformers' GGUF conversion also leaves Llama/SentencePiece traces in tokenizer.json
    # (byte_fallback, a ByteFallback/Replace("▁") decoder, a post-processor that prepends
    # <|im_start|> as BOS although the GGUF says add_bos_token=false) and names the class
    # LlamaTokenizer. Put them back as SmolLM2's own tokenizer files have them (plain byte-level
    # BPE, GPT2Tokenizer), so the converter writes tokenizer.ggml.model = gpt2.
    tj = json.loads((dst / "tokenizer.json").read_text())
    tj["model"]["byte_fallback"] = False
    tj["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    tj["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    tj["normalizer"] = None
    (dst / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=2) + "\n")
    tc = json.loads((dst / "tokenizer_config.json").read_text())
    tc["tokenizer_class"] = "GPT2Tokenizer"
    # transformers reads eos as <|im_start|> from the GGUF; the file says eos = pad = 2 (<|im_end|>)
    tc["eos_token"] = "<|im_end|>"
    tc["pad_token"] = "<|im_end|>"
    stm = dst / "special_tokens_map.json"
    if stm.exists():
        sm = json.loads(stm.read_text())
        sm["eos_token"] = "<|im_end|>"
        sm["pad_token"] = "<|im_end|>"
        stm.write_text(json.dumps(sm, ensure_ascii=False, indent=2) + "\n")
    tc["add_bos_token"] = False
    tc.pop("legacy", None)
    (dst / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=2) + "\n")
    spec = dict(
        cls=LlamaForCausalLM,
        config_cls=LlamaConfig,
        seed=SMOL_SEED,
        config=dict(
            mf.COMMON,
            vocab_size=49152,
            num_key_value_heads=2,
            rms_norm_eps=1e-5,
            rope_theta=100000.0,
            tie_word_embeddings=True,
            attention_bias=False,
            mlp_bias=False,
            bos_token_id=1,
            eos_token_id=2,
        ),
    )
    model = mf.build_model(spec)
    model.save_pretrained(dst, safe_serialization=True)
    mf.fix_config_json(dst / "config.json")
    (dst / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}) + "\n")


def encode(tok, text: str, add_bos: bool, bos_id: int | None) -> list[int]:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return ([bos_id] + ids) if add_bos else ids


def golden_for(path: Path, config_dir: Path) -> tuple[dict, dict]:
    meta = gguf_meta(path)
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    bos_id = meta.get("tokenizer.ggml.bos_token_id")
    if meta.get("tokenizer.ggml.pre") == "smollm":
        from make_smollm2_goldens import smollm_tokenizer

        tok, _ = smollm_tokenizer(path)
    else:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    # transformers 4.57's GGUF config mapping drops llama3 rope scaling (its config comes back with
    # rope_scaling=None although the file has rope_freqs), so the weights come from the GGUF
    # (dequantized to f32 by transformers) and the config from the HF source directory.
    config = AutoConfig.from_pretrained(config_dir)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, config=config, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    golden = {}
    info = {"add_bos": add_bos, "prompts": [], "gguf_tokenizer_differs": []}
    # For the converted fixtures the source directory's tokenizer.json is the tokenizer the GGUF
    # encodes. transformers' GGUF tokenizer is only a cross-check: for arch qwen2 it always builds
    # Qwen2's BPE tokenizer, even from a `tokenizer.ggml.model = llama` vocab (wrong ids).
    src_tok = None
    if (config_dir / "tokenizer.json").exists() and meta.get("tokenizer.ggml.model") == "llama":
        src_tok = AutoTokenizer.from_pretrained(config_dir, legacy=True)
    for i, text in enumerate(mf.GOLDEN_PROMPTS):
        ids = encode(tok, text, add_bos, bos_id)
        if src_tok is not None:
            src_ids = encode(src_tok, text, add_bos, bos_id)
            if src_ids != ids:
                info["gguf_tokenizer_differs"].append(i)
            ids = src_ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        gen = mf.greedy_generate(model, ids, mf.GREEDY_NEW_TOKENS)
        manual, gaps = mf.greedy_manual(model, ids, mf.GREEDY_NEW_TOKENS)
        assert gen == manual, (path, i)
        golden[f"input_ids_{i}"] = torch.tensor(ids, dtype=torch.int64)
        golden[f"last_logits_{i}"] = logits[-1].contiguous()
        golden[f"all_logits_head_{i}"] = logits[:, : mf.HEAD_VOCAB].contiguous()
        golden[f"argmax_{i}"] = logits.argmax(dim=-1).to(torch.int64)
        golden[f"greedy_{i}"] = torch.tensor(gen, dtype=torch.int64)
        info["prompts"].append(dict(len=len(ids), min_greedy_gap=round(min(gaps), 4)))
    return golden, info


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", type=Path, default=DEFAULT_LLAMA)
    ap.add_argument("--smollm2-gguf", type=Path, default=Path(os.environ.get(
        "INDUS_TEST_SMOLLM2_GGUF",
        Path.home() / ".cache/indus/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))
    ap.add_argument("--spm-model", type=Path, default=REPO_ROOT.parent / "shared/models/llama2-tokenizer/tokenizer.model",
                    help="Llama 2 tokenizer.model (default ../shared/models/llama2-tokenizer/tokenizer.model)")
    ap.add_argument("--out", type=Path, default=FIX / "gguf")
    ap.add_argument("--only", choices=sorted(FIXTURES), default=None)
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    convert = args.llama_cpp / "src" / "convert_hf_to_gguf.py"
    quantize = args.llama_cpp / "bin" / "llama-quantize"
    for p in (convert, quantize):
        if not p.exists():
            raise SystemExit(f"{p} missing: run scripts/build-llama-cpp.sh first")
    args.out.mkdir(parents=True, exist_ok=True)
    # The converter must use the gguf-py vendored beside it (it says version 0.19.0 like PyPI's
    # gguf 0.19.0, but the converter needs newer names such as gguf.LazyChunkedTensor).
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    summary = {}
    names = [args.only] if args.only else list(FIXTURES)
    for name in names:
        source, outs = FIXTURES[name]
        print(f"=== {name}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            if source == "build:smollm2":
                src = tmp / "hf"
                src.mkdir()
                build_smollm2_tok_model(src, args.smollm2_gguf)
            else:
                # A copy with the Llama 2 tokenizer.model beside tokenizer.json: convert_hf_to_gguf
                # then takes its SentencePiece path (scores, token types from the .model), as for
                # real Llama-2-vocab checkpoints; Qwen2's converter has no tokenizer.json-only
                # SentencePiece path at all.
                src = tmp / "hf"
                shutil.copytree(FIX / source, src)
                (src / "golden.safetensors").unlink()
                spm = args.spm_model
                if sha256(spm) != LLAMA2_SPM_SHA256:
                    raise SystemExit(f"{spm}: unexpected sha256 {sha256(spm)}")
                shutil.copyfile(spm, src / "tokenizer.model")
            made = {}
            for outtype, how in outs:
                fname = f"{name}.{outtype}.gguf"
                dst = args.out / fname
                if how == "convert":
                    run([sys.executable, str(convert), str(src), "--outtype", outtype, "--outfile", str(dst)],
                        env=env)
                else:
                    base = made[how.split(":", 1)[1]]
                    run([str(quantize), str(base), str(dst), outtype])
                made[outtype] = dst
                golden, info = golden_for(dst, FIX / source if source in ("tiny-llama3", "tiny-qwen2") else src)
                gpath = args.out / f"{name}.{outtype}.golden.safetensors"
                save_file(golden, str(gpath), metadata={"format": "pt", "gguf": fname})
                meta = gguf_meta(dst)
                entry = dict(
                    bytes=dst.stat().st_size,
                    sha256=sha256(dst),
                    tensor_types=meta["_tensor_types"],
                    tokenizer_model=meta.get("tokenizer.ggml.model"),
                    tokenizer_pre=meta.get("tokenizer.ggml.pre"),
                    add_bos=info["add_bos"],
                    transformers_gguf_tokenizer_differs_on_prompts=info["gguf_tokenizer_differs"],
                    prompt_lens=[p["len"] for p in info["prompts"]],
                    min_greedy_gap=[p["min_greedy_gap"] for p in info["prompts"]],
                )
                ref = FIX / source / "golden.safetensors"
                if ref.exists():
                    r = load_file(str(ref))
                    diffs = []
                    for i in range(len(mf.GOLDEN_PROMPTS)):
                        same_ids = torch.equal(r[f"input_ids_{i}"], golden[f"input_ids_{i}"])
                        d = float((r[f"last_logits_{i}"] - golden[f"last_logits_{i}"]).abs().max())
                        dh = float((r[f"all_logits_head_{i}"] - golden[f"all_logits_head_{i}"]).abs().max()) \
                            if same_ids else float("nan")
                        diffs.append(dict(same_ids=same_ids, last_logits_max_abs_diff=round(d, 5),
                                          head_max_abs_diff=round(dh, 5),
                                          greedy_equal=torch.equal(r[f"greedy_{i}"], golden[f"greedy_{i}"])))
                    entry["vs_safetensors_golden"] = diffs
                summary[fname] = entry
                print("  ", json.dumps(entry), flush=True)
    old = args.out / "summary.json"
    if old.exists():  # --only: keep the other fixtures' entries
        summary = dict(json.loads(old.read_text()), **summary)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
