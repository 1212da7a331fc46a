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
         --out DIR (default tests/fixtures/gguf), --only NAME,
         --llama-cpp-check (llama-server's greedy tokens and tokenization on the committed files).
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
    # Qwen3 dense: per-head q/k RMSNorm, no qkv bias.
    "tiny-qwen3": ("tiny-qwen3", [("q8_0", "convert")]),
    "tiny-smollm2-tok": ("build:smollm2", [("q8_0", "convert")]),
    # Mixture-of-experts files (experts stacked per projection) and Gemma 2 (both soft-caps,
    # alternating sliding windows); Q8_0 keeps them small.
    "tiny-mixtral": ("tiny-mixtral", [("q8_0", "convert")]),
    "tiny-qwen2-moe": ("tiny-qwen2-moe", [("q8_0", "convert")]),
    "tiny-qwen3-moe": ("tiny-qwen3-moe", [("q8_0", "convert")]),
    "tiny-gemma2": ("tiny-gemma2", [("q8_0", "convert")]),
}

# Source changes that make the checkpoint one llama.cpp can describe. "config": keys a GGUF file
# cannot carry, set in the source copy to what llama.cpp assumes, so the golden (transformers on
# the dequantized weights, config from that copy) is the model the file describes: GGUF Gemma 2
# has no query_pre_attn_scalar and llama.cpp scales by head_dim^-1/2. "rebuild": the model is
# built anew (make_fixtures' spec and seed) with these config changes: llama.cpp's Qwen2-MoE has
# a router in every layer, so the converter refuses the fixture's dense mlp_only_layers.
SOURCE_CHANGES = {
    "tiny-gemma2": ("config", {"query_pre_attn_scalar": 32}),
    "tiny-qwen2-moe": ("rebuild", {"mlp_only_layers": []}),
}

# The converter's Qwen MoE classes only take the byte-level BPE (gpt2) vocabulary path; the
# fixtures carry Llama 2's SentencePiece vocabulary, so for them it runs with the SentencePiece
# path Qwen2's dense class tries first (the same vocabulary layout as tiny-qwen2.q8_0.gguf).
SPM_VOCAB_PATCH = {"tiny-qwen2-moe", "tiny-qwen3-moe"}
CONVERT_WITH_SPM_VOCAB = """
import runpy, sys
convert = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, convert.rsplit("/", 1)[0])
import conversion.qwen as qwen
qwen.Qwen2MoeModel.set_vocab = lambda self: self._set_vocab_sentencepiece()
runpy.run_path(convert, run_name="__main__")
"""

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


# llama.cpp's per-layer names -> transformers' (module path under model.layers.N), per family.
_ATTN_NAMES = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
               "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
               "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
               "ffn_norm": "post_attention_layernorm"}
_MOE_NAMES = {
    "llama": ("block_sparse_moe", {"ffn_gate_exps": "w1", "ffn_up_exps": "w3", "ffn_down_exps": "w2"}),
    "qwen2moe": ("mlp", {"ffn_gate_exps": "gate_proj", "ffn_up_exps": "up_proj", "ffn_down_exps": "down_proj"}),
}
_MOE_NAMES["qwen3moe"] = _MOE_NAMES["qwen2moe"]
_SHARED_NAMES = {"ffn_gate_shexp": "mlp.shared_expert.gate_proj", "ffn_up_shexp": "mlp.shared_expert.up_proj",
                 "ffn_down_shexp": "mlp.shared_expert.down_proj", "ffn_gate_inp_shexp": "mlp.shared_expert_gate"}


def moe_from_gguf(path: Path, config, arch: str) -> torch.nn.Module:
    """The transformers MoE model (Mixtral: arch `llama` with experts; Qwen2-MoE; Qwen3-MoE)
    with every weight dequantized from the GGUF by gguf-py, each stacked `ffn_*_exps` tensor
    split per expert, llama.cpp's Q/K permutation undone (llama arch only) with transformers' own
    reverse permutation, and a strict load. transformers 4.57.6's GGUF loader has no Mixtral, and
    for qwen2moe/qwen3moe it splits experts by a `num_experts` its GGUF config lacks (default 60:
    IndexError) and reshapes the shared-expert gate to a rank the model refuses."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    permute = LlamaTensorProcessor(config=config.to_dict())
    block, experts = _MOE_NAMES[arch]
    names = dict(_ATTN_NAMES, ffn_gate_inp=f"{block}.gate", **_SHARED_NAMES)
    top = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    want = model.state_dict()
    state = {}

    def put(hf: str, w) -> None:
        t = torch.from_numpy(w.copy())
        assert t.numel() == want[hf].numel(), (hf, tuple(t.shape), tuple(want[hf].shape))
        state[hf] = t.reshape(want[hf].shape)  # unit axes: [64] vs [1, 64]

    for t in gguf.GGUFReader(str(path)).tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype("float32")
        if t.name in top:
            put(top[t.name], w)
            continue
        _, bid, kind, suffix = t.name.split(".")
        pre = f"model.layers.{bid}"
        if kind in experts:
            for e in range(w.shape[0]):
                put(f"{pre}.{block}.experts.{e}.{experts[kind]}.{suffix}", w[e])
            continue
        if arch == "llama" and kind in ("attn_q", "attn_k") and suffix == "weight":
            w = permute.process(w, f"blk.{kind}.weight").weights
        put(f"{pre}.{names[kind]}.{suffix}", w)
    if config.tie_word_embeddings:
        state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])
    model.load_state_dict(state, strict=True)
    return model

class NoDummyPrefixSpm:
    """A SentencePiece model with `normalizer_spec.add_dummy_prefix = false`, called like a
    transformers tokenizer by `encode` below."""

    def __init__(self, model_file: Path):
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as pb

        proto = pb.ModelProto()
        proto.ParseFromString(model_file.read_bytes())
        proto.normalizer_spec.add_dummy_prefix = False
        self.sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        assert not add_special_tokens
        return {"input_ids": self.sp.encode(text)}


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
    arch = meta["general.architecture"]
    if meta.get(f"{arch}.expert_count"):
        model = moe_from_gguf(path, config, arch)
    else:
        model, loading = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, config=config, dtype=torch.float32, attn_implementation="eager",
            output_loading_info=True,
        )
        # A tensor transformers does not map would stay randomly initialised: refuse.
        missing = [k for k in loading["missing_keys"] if k != "lm_head.weight" or not config.tie_word_embeddings]
        assert not missing, (path, missing)
    model.eval()
    golden = {}
    info = {"add_bos": add_bos, "prompts": [], "gguf_tokenizer_differs": []}
    # For the converted fixtures the source directory's tokenizer.json is the tokenizer the GGUF
    # encodes. transformers' GGUF tokenizer is only a cross-check: for arch qwen2 it always builds
    # Qwen2's BPE tokenizer, even from a `tokenizer.ggml.model = llama` vocab (wrong ids).
    src_tok = None
    if (config_dir / "tokenizer.json").exists() and meta.get("tokenizer.ggml.model") == "llama":
        src_tok = AutoTokenizer.from_pretrained(config_dir, legacy=True)
        # Gemma's converter writes add_space_prefix = false (no "▁" before the first word, as
        # llama.cpp then tokenizes): SentencePiece itself, its model's add_dummy_prefix cleared.
        # (transformers' GGUF Gemma tokenizer is no reference: it splits "▁quick" as "▁qu ick".)
        if not meta.get("tokenizer.ggml.add_space_prefix", True):
            src_tok = NoDummyPrefixSpm(config_dir / "tokenizer.model")
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


def llama_cpp_check(args) -> int:
    """llama.cpp on each committed file: greedy tokens from the golden's prompt ids (how many
    leading tokens agree with the golden's) and whether its tokenizer gives the golden's ids.
    llama.cpp quantizes activations for quantized matmuls, so at a near-tie it may part from
    the dequantized golden; exact agreement is expected on the tokenization."""
    from make_smollm2_goldens import LlamaServer, leading_agree

    summary_path = args.out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    names = [args.only] if args.only else list(FIXTURES)
    files = [f"{n}.{t}.gguf" for n in names for t, _ in FIXTURES[n][1]]
    for port, fname in enumerate(files, start=18420):
        g = load_file(str(args.out / fname.replace(".gguf", ".golden.safetensors")))
        server = LlamaServer(args.llama_cpp / "bin" / "llama-server", args.out / fname, port)
        try:
            agree, tok_equal = [], []
            for i, text in enumerate(mf.GOLDEN_PROMPTS):
                ids = g[f"input_ids_{i}"].tolist()
                want = g[f"greedy_{i}"].tolist()
                r = server.post("/completion", dict(
                    prompt=ids, n_predict=len(want), temperature=0.0, top_k=1, samplers=["top_k"],
                    ignore_eos=True, cache_prompt=False, return_tokens=True, seed=0))
                agree.append(leading_agree(want, [int(t) for t in r["tokens"]]))
                t = server.post("/tokenize", dict(content=text, add_special=True, parse_special=False))
                tok_equal.append([int(x) for x in t["tokens"]] == ids)
        finally:
            server.close()
        summary.setdefault(fname, {})["llamacpp_greedy_leading_agree"] = agree
        summary[fname]["llamacpp_tokenize_equal"] = tok_equal
        print(f"{fname}: greedy leading agreement {agree} of {len(g['greedy_0'])}, tokenization equal {tok_equal}",
              flush=True)
    summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return 0


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
    ap.add_argument("--outtype", default=None,
                    help="convert to this type instead of each fixture's own (e.g. f16 into a scratch --out: "
                         "exact weights, for --llama-cpp-check without quantization in the way)")
    ap.add_argument("--llama-cpp-check", action="store_true",
                    help="write nothing but summary.json's llamacpp_* entries: llama-server's greedy tokens "
                         "and tokenization of each committed file's golden prompts")
    args = ap.parse_args()
    if args.outtype:
        for n, (src, outs) in list(FIXTURES.items()):
            FIXTURES[n] = (src, [(args.outtype, "convert")])
    if args.llama_cpp_check:
        return llama_cpp_check(args)

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    convert = args.llama_cpp / "src" / "convert_hf_to_gguf.py"
    quantize = args.llama_cpp / "bin" / "llama-quantize"
    names = [args.only] if args.only else list(FIXTURES)
    needs_quantize = any(how != "convert" for n in names for _, how in FIXTURES[n][1])
    for p in (convert, quantize) if needs_quantize else (convert,):
        if not p.exists():
            raise SystemExit(f"{p} missing: run scripts/build-llama-cpp.sh first")
    args.out.mkdir(parents=True, exist_ok=True)
    # The converter must use the gguf-py vendored beside it (it says version 0.19.0 like PyPI's
    # gguf 0.19.0, but the converter needs newer names such as gguf.LazyChunkedTensor).
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    summary = {}
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
                kind, changes = SOURCE_CHANGES.get(name, (None, {}))
                if kind == "config":
                    cfg = json.loads((src / "config.json").read_text())
                    cfg.update(changes)
                    (src / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
                elif kind == "rebuild":
                    spec = dict(mf.FIXTURES[source])
                    spec["config"] = dict(spec["config"], **changes)
                    (src / "model.safetensors").unlink()
                    mf.build_model(spec).save_pretrained(src, safe_serialization=True)
                    mf.fix_config_json(src / "config.json")
            made = {}
            for outtype, how in outs:
                fname = f"{name}.{outtype}.gguf"
                dst = args.out / fname
                if how == "convert":
                    prefix = [sys.executable, str(convert)]
                    if name in SPM_VOCAB_PATCH:
                        prefix = [sys.executable, "-c", CONVERT_WITH_SPM_VOCAB, str(convert)]
                    run([*prefix, str(src), "--outtype", outtype, "--outfile", str(dst)], env=env)
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
                if ref.exists() and SOURCE_CHANGES.get(name, (None,))[0] != "rebuild":
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
