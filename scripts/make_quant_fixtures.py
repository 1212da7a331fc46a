#!/usr/bin/env python3
"""Writes the int4 weight-only fixtures of tests/fixtures from tests/fixtures/tiny-llama.

    /work/venv-fixtures/bin/python scripts/make_quant_fixtures.py

  tiny-llama-gptq  GPTQ v1 ("checkpoint_format": "gptq"), 4 bits, group 32, act-order
                   (desc_act, g_idx), asymmetric: the layout AutoGPTQ / optimum write.
  tiny-llama-awq   AutoAWQ GEMM ("version": "gemm"), 4 bits, group 32, zero point; down_proj
                   (176 inputs, not a multiple of 32, which AutoAWQ refuses) is listed in
                   `modules_to_not_convert` and stays dense, as AutoAWQ writes such layers.

The quantizer is round-to-nearest (no calibration: act-order's permutation comes from a seeded
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


if __name__ == "__main__":
    main()
