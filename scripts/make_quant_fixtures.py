#!/usr/bin/env python3
"""Writes the quantized fixtures of tests/fixtures from tests/fixtures/tiny-llama.

    /work/venv-fixtures/bin/python scripts/make_quant_fixtures.py

  tiny-llama-gptq  GPTQ v1 ("checkpoint_format": "gptq"), 4 bits, group 32, act-order
                   (desc_act, g_idx), asymmetric: the layout AutoGPTQ / optimum write.
  tiny-llama-awq   AutoAWQ GEMM ("version": "gemm"), 4 bits, group 32, zero point; down_proj
                   (176 inputs, not a multiple of 32, which AutoAWQ refuses) is listed in
                   `modules_to_not_convert` and stays dense, as AutoAWQ writes such layers.

  tiny-llama-fp8          llm-compressor FP8_DYNAMIC (compressed-tensors, float-quantized):
                          E4M3 weights, a bf16 scale per output row ([N, 1]), activations
                          dynamic per token.
  tiny-llama-fp8-static   vLLM / AutoFP8 ("quant_method": "fp8", static): one f32 weight_scale
                          and one input_scale per layer, calibrated on the activations the
                          dense model sees on a sample text (amax / 448).
  tiny-llama-fp8-block    DeepSeek-V3 style ("weight_block_size": [32, 32], dynamic): f32
                          weight_scale_inv per 32x32 block (the 176-wide MLP ends on a partial
                          block).

FP8 rounding is torch's `.to(torch.float8_e4m3fn)` after clamping to +-448, as llm-compressor
and vLLM do. The FP8 fixtures' dequantized.safetensors also hold `check.x` / `check.y` for
layer 0's q_proj: an input and the output of the FP8 GEMM computed here in torch (activations
quantized as the scheme says, vLLM's arithmetic), which the Rust matmul must reproduce. Block
scaled layers quantize activations per token and per 32 inputs (the block width), as vLLM's block
FP8 does. w8a8_golden.safetensors is the whole model run in torch with every projection as that
FP8 GEMM (a fused projection's static input scale is its parts' maximum, as vLLM fuses them):
logits of the last two positions and 12 greedy tokens for three prompts.

The int4 quantizer is round-to-nearest (no calibration: act-order's permutation comes from a seeded
pseudo-Hessian diagonal), but every tensor is written in the real on-disk layout:

  GPTQ  qweight [K/8, N] int32, 8 nibbles packed along K (row k of W^T at bits 4*(k%8));
        qzeros  [ceil(K/g), N/8] int32, packed along N, storing zero-1 (v1);
        scales  [ceil(K/g), N] f16; g_idx [K] int32 (group of input k).
  AWQ   qweight [K, N/8] int32, packed along N in the order [0,2,4,6,1,3,5,7]
        (nibble i holds column 8c+ORDER[i]); qzeros [K/g, N/8] the same way (zero as is);
        scales  [K/g, N] f16.

Dequantized:  W[n, k] = (q[k, n] - z[group(k), n]) * s[group(k), n].

Each fixture also gets `dequantized.safetensors`: the dense f32 weight of every quantized layer
computed here from the integers and the f16 scales (not from the packed bytes), the reference
the Rust loader's unpacking is checked against. tokenizer.json is a relative symlink.
"""

import json
import os
import shutil

import numpy as np
import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
SRC = os.path.join(ROOT, "tiny-llama")
GROUP = 32
PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def pack_along_k(q_kn):
    """[K, N] ints in 0..15 -> [K/8, N] int32, nibble j of row r = row 8r+j."""
    k, n = q_kn.shape
    q = q_kn.astype(np.uint32).reshape(k // 8, 8, n)
    out = np.zeros((k // 8, n), dtype=np.uint32)
    for j in range(8):
        out |= q[:, j, :] << np.uint32(4 * j)
    return out.view(np.int32)


def pack_along_n(v, order=range(8)):
    """[R, N] ints in 0..15 -> [R, N/8] int32, nibble i of word c = column 8c+order[i]."""
    r, n = v.shape
    v = v.astype(np.uint32).reshape(r, n // 8, 8)
    out = np.zeros((r, n // 8), dtype=np.uint32)
    for i, col in enumerate(order):
        out |= v[:, :, col] << np.uint32(4 * i)
    return out.view(np.int32)


def f16(x):
    return x.astype(np.float16).astype(np.float32)


def quantize_gptq(w, perm, sym):
    """GPTQ's quantizer (min/max including 0) per group of the act-order permutation."""
    n, k = w.shape
    groups = -(-k // GROUP)
    invperm = np.argsort(perm)
    g_idx = (invperm // GROUP).astype(np.int32)  # group of input column k
    scales = np.zeros((groups, n), np.float32)
    zeros = np.zeros((groups, n), np.int64)
    for g in range(groups):
        cols = w[:, g_idx == g]
        xmin = np.minimum(cols.min(axis=1), 0)
        xmax = np.maximum(cols.max(axis=1), 0)
        if sym:
            xmax = np.maximum(np.abs(xmin), xmax)
            xmin = np.where(xmin < 0, -xmax, 0)
        s = (xmax - xmin) / 15
        s = np.where(s == 0, 1.0, s)
        s = f16(s)
        z = np.full(n, 8) if sym else np.clip(np.round(-xmin / s), 0, 15)
        scales[g], zeros[g] = s, z
    s_k = scales[g_idx].T  # [n, k]
    z_k = zeros[g_idx].T
    q = np.clip(np.round(w / s_k) + z_k, 0, 15).astype(np.int64)
    deq = (q - z_k) * s_k
    tensors = {
        "qweight": pack_along_k(q.T),
        # v1 stores zero-1 (AutoGPTQ's `zeros -= 1`); masked to 4 bits.
        "qzeros": pack_along_n((zeros - 1) & 0xF),
        "scales": scales.astype(np.float16),
        "g_idx": g_idx,
    }
    return tensors, deq.astype(np.float32)


def quantize_awq(w):
    """AutoAWQ's pseudo_quantize_tensor with zero_point, per group of consecutive inputs."""
    n, k = w.shape
    assert k % GROUP == 0
    groups = k // GROUP
    wg = w.reshape(n, groups, GROUP)
    mx, mn = wg.max(axis=2), wg.min(axis=2)
    s = f16(np.maximum(mx - mn, 1e-5) / 15)  # [n, groups]
    z = np.clip(-np.round(mn / s), 0, 15)
    q = np.clip(np.round(wg / s[:, :, None]) + z[:, :, None], 0, 15)
    deq = ((q - z[:, :, None]) * s[:, :, None]).reshape(n, k)
    q = q.reshape(n, k).astype(np.int64)
    tensors = {
        "qweight": pack_along_n(q.T, AWQ_ORDER),  # [K, N/8]
        "qzeros": pack_along_n(z.T.astype(np.int64), AWQ_ORDER),  # [groups, N/8]
        "scales": s.T.astype(np.float16),  # [groups, N]
    }
    return tensors, deq.astype(np.float32)


def write(name, config_extra, quantize, skip=()):
    dst = os.path.join(ROOT, name)
    os.makedirs(dst, exist_ok=True)
    src = load_file(os.path.join(SRC, "model.safetensors"))
    out, reference = {}, {}
    rng = np.random.default_rng(10)
    for key, t in sorted(src.items()):
        proj = next((p for p in PROJ if f".{p}.weight" in key), None)
        if proj is None or proj in skip:
            out[key] = t.to(torch.float16).contiguous()
            continue
        w = t.to(torch.float32).numpy()
        tensors, deq = quantize(w, rng)
        prefix = key[: -len(".weight")]
        for suffix, v in tensors.items():
            out[f"{prefix}.{suffix}"] = torch.from_numpy(np.ascontiguousarray(v))
        reference[key] = torch.from_numpy(deq)
    save_file(out, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    save_file(reference, os.path.join(dst, "dequantized.safetensors"))
    with open(os.path.join(SRC, "config.json")) as f:
        config = json.load(f)
    config["torch_dtype"] = "float16"
    config["quantization_config"] = config_extra
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    for extra in ["generation_config.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(SRC, extra), os.path.join(dst, extra))
    link = os.path.join(dst, "tokenizer.json")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(os.path.join("..", "tiny-llama", "tokenizer.json"), link)
    print(f"wrote {dst}: {len(reference)} quantized layers")


def gptq(w, rng):
    # act-order: columns by decreasing pseudo-Hessian diagonal
    diag = rng.random(w.shape[1])
    perm = np.argsort(-diag, kind="stable")
    return quantize_gptq(w, perm, sym=False)


FP8_MAX = 448.0
CHECK_LAYER = "model.layers.0.self_attn.q_proj.weight"


def e4m3(x):
    """torch's RNE cast after clamping, as llm-compressor and vLLM quantize."""
    return x.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)


def fp8_channel(w):
    s = (w.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    s = s.to(torch.bfloat16).float()  # llm-compressor keeps the scale in the model dtype
    q = e4m3(w / s)
    return {"weight": q, "weight_scale": s.to(torch.bfloat16)}, q.float() * s


def fp8_tensor(w):
    s = (w.abs().amax() / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    q = e4m3(w / s)
    return {"weight": q, "weight_scale": s.reshape(())}, q.float() * s


def fp8_block(w, block=32):
    n, k = w.shape
    bn, bk = -(-n // block), -(-k // block)
    padded = torch.zeros(bn * block, bk * block)
    padded[:n, :k] = w
    tiles = padded.reshape(bn, block, bk, block)
    s = (tiles.abs().amax(dim=(1, 3)) / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    expanded = s[:, None, :, None].expand(bn, block, bk, block).reshape(bn * block, bk * block)
    expanded = expanded[:n, :k]
    q = e4m3(w / expanded)
    return {"weight": q, "weight_scale_inv": s}, q.float() * expanded


def calibrate_input_scales():
    """amax / 448 of every projection's input over a sample text, through the dense model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(SRC, torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(SRC)
    amax = {}

    def hook(name):
        def record(_module, inputs):
            amax[name] = max(amax.get(name, 0.0), inputs[0].abs().max().item())

        return record

    for name, module in model.named_modules():
        if any(name.endswith(p) for p in PROJ):
            module.register_forward_pre_hook(hook(name))
    text = "The quick brown fox jumps over the lazy dog. Karachi, Lahore and Islamabad are cities."
    with torch.no_grad():
        model(**tok(text, return_tensors="pt"))
    return {f"{k}.weight": torch.tensor(v / FP8_MAX, dtype=torch.float32) for k, v in amax.items()}


def fp8_check(deq, activations, input_scale=None, group=None):
    """An input of layer 0's q_proj and the FP8 GEMM's output for it (vLLM's arithmetic)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, deq.shape[1], generator=g) * 2.0
    xq = quantize_activations(x, activations, input_scale, group)
    y = (xq.double() @ deq.double().T).float()
    return x, y


def write_fp8(name, config_extra, quantize, activations, input_scales=None, group=None):
    dst = os.path.join(ROOT, name)
    os.makedirs(dst, exist_ok=True)
    src = load_file(os.path.join(SRC, "model.safetensors"))
    out, reference = {}, {}
    for key, t in sorted(src.items()):
        if not any(f".{p}.weight" in key for p in PROJ):
            out[key] = t.contiguous()
            continue
        tensors, deq = quantize(t.to(torch.float32))
        prefix = key[: -len(".weight")]
        for suffix, v in tensors.items():
            out[f"{prefix}.{suffix}"] = v.contiguous()
        if input_scales is not None:
            out[f"{prefix}.input_scale"] = input_scales[key]
        reference[key] = deq.contiguous()
        if key == CHECK_LAYER:
            x, y = fp8_check(deq, activations, input_scales and input_scales[key], group)
            reference["check.x"], reference["check.y"] = x, y
    save_file(out, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    save_file(reference, os.path.join(dst, "dequantized.safetensors"))
    with open(os.path.join(SRC, "config.json")) as f:
        config = json.load(f)
    config["quantization_config"] = config_extra
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    for extra in ["generation_config.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(SRC, extra), os.path.join(dst, extra))
    link = os.path.join(dst, "tokenizer.json")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(os.path.join("..", "tiny-llama", "tokenizer.json"), link)
    print(f"wrote {dst}: {sum(1 for k in reference if not k.startswith('check.'))} quantized layers")
    return {k: v for k, v in reference.items() if not k.startswith("check.")}


def compressed_tensors_fp8_dynamic():
    return {
        "quant_method": "compressed-tensors",
        "format": "float-quantized",
        "quantization_status": "compressed",
        "ignore": ["lm_head"],
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {
                    "num_bits": 8,
                    "type": "float",
                    "strategy": "channel",
                    "symmetric": True,
                    "dynamic": False,
                    "observer": "minmax",
                },
                "input_activations": {
                    "num_bits": 8,
                    "type": "float",
                    "strategy": "token",
                    "symmetric": True,
                    "dynamic": True,
                    "observer": None,
                },
                "output_activations": None,
            }
        },
    }


def quantize_activations(x, activations, input_scale=None, group=None):
    """x rounded as the FP8 GEMM sees it, multiplied back by its scales (f32)."""
    if activations == "static":
        return e4m3(x * (1.0 / input_scale)).float() * input_scale
    width = group or x.shape[-1]
    parts = []
    for g in torch.split(x, width, dim=-1):
        s = (g.abs().amax(dim=-1, keepdim=True) / FP8_MAX).clamp(min=1.0 / (FP8_MAX * 512))
        parts.append(e4m3(g * (1.0 / s)).float() * s)
    return torch.cat(parts, dim=-1)


# Projections that vLLM runs as one fused GEMM: a static input scale is the group's maximum.
FUSED = [("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj")]

# Token ids of the whole-model goldens (ids 3.. of the Llama 2 vocabulary), lengths 1, 7, 23.
GOLDEN_LENGTHS = [1, 7, 23]
GOLDEN_STEPS = 12


def w8a8_goldens(name, reference, activations, input_scales=None, group=None):
    """The whole tiny model run in torch with every projection as an FP8 GEMM: weights the
    dequantized E4M3 ones, inputs quantized as the scheme says. Writes w8a8_golden.safetensors:
    per prompt its ids, the logits of its last two positions, and 12 greedy tokens."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(SRC, torch_dtype=torch.float32).eval()
    fused_scale = {}
    if input_scales is not None:
        for layer in range(model.config.num_hidden_layers):
            for group_names in FUSED:
                keys = [
                    k
                    for k in input_scales
                    if k.startswith(f"model.layers.{layer}.") and any(f".{p}." in k for p in group_names)
                ]
                top = max(input_scales[k] for k in keys)
                for k in keys:
                    fused_scale[k] = top
    for mod_name, module in model.named_modules():
        key = f"{mod_name}.weight"
        if key not in reference:
            continue
        module.weight.data = reference[key].clone()
        scale = fused_scale.get(key, input_scales and input_scales[key])

        def forward(x, module=module, scale=scale):
            xq = quantize_activations(x, activations, scale, group)
            return torch.nn.functional.linear(xq, module.weight)

        module.forward = forward
    rng = np.random.default_rng(11)
    out = {}
    with torch.no_grad():
        for i, n in enumerate(GOLDEN_LENGTHS):
            ids = torch.tensor(rng.integers(3, 32000, size=n), dtype=torch.int64)
            logits = model(ids[None]).logits[0]
            seq, greedy, margins = ids.clone(), [], []
            for _ in range(GOLDEN_STEPS):
                last = model(seq[None]).logits[0, -1]
                top2 = last.topk(2).values
                margins.append((top2[0] - top2[1]).item())
                nxt = last.argmax()
                greedy.append(nxt.item())
                seq = torch.cat([seq, nxt[None]])
            out[f"prompt{i}.ids"] = ids
            out[f"prompt{i}.logits"] = logits[-2:].contiguous()
            out[f"prompt{i}.greedy"] = torch.tensor(greedy, dtype=torch.int64)
            print(f"  {name} prompt {i}: smallest greedy margin {min(margins):.3e}")
    save_file(out, os.path.join(ROOT, name, "w8a8_golden.safetensors"))


def write_fp8_fixtures():
    deq = write_fp8("tiny-llama-fp8", compressed_tensors_fp8_dynamic(), fp8_channel, "dynamic")
    w8a8_goldens("tiny-llama-fp8", deq, "dynamic")
    scales = calibrate_input_scales()
    deq = write_fp8(
        "tiny-llama-fp8-static",
        {"quant_method": "fp8", "activation_scheme": "static", "ignored_layers": ["lm_head"]},
        fp8_tensor,
        "static",
        scales,
    )
    w8a8_goldens("tiny-llama-fp8-static", deq, "static", scales)
    deq = write_fp8(
        "tiny-llama-fp8-block",
        {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3", "weight_block_size": [32, 32]},
        fp8_block,
        "dynamic",
        group=32,
    )
    w8a8_goldens("tiny-llama-fp8-block", deq, "dynamic", group=32)


def main():
    write(
        "tiny-llama-gptq",
        {
            "bits": 4,
            "group_size": GROUP,
            "damp_percent": 0.1,
            "desc_act": True,
            "static_groups": False,
            "sym": False,
            "true_sequential": True,
            "model_name_or_path": None,
            "model_file_base_name": "model",
            "quant_method": "gptq",
            "checkpoint_format": "gptq",
        },
        gptq,
    )
    write(
        "tiny-llama-awq",
        {
            "bits": 4,
            "group_size": GROUP,
            "modules_to_not_convert": ["down_proj"],
            "quant_method": "awq",
            "version": "gemm",
            "zero_point": True,
        },
        lambda w, rng: quantize_awq(w),
        skip=("down_proj",),
    )
    write_fp8_fixtures()


if __name__ == "__main__":
    main()
