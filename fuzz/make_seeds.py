#!/usr/bin/env python3
"""Writes the binary seeds of fuzz/corpus/gguf/ (the JSON seeds are written by hand).

- tiny-llama-model.gguf: a whole llama model that loads (1 layer, hidden 8, f32) with a
  SentencePiece vocabulary (byte fallback), scores, token types and a chat template;
- tiny-gpt2-tok.gguf: a byte-level BPE (gpt2, qwen2 split) vocabulary with merges, no tensors;
- llama3-header.gguf: the first 4 KiB of tests/fixtures/gguf/tiny-llama3.q8_0.gguf (a real
  header, cut inside the vocabulary).

Deterministic; run from anywhere: python3 fuzz/make_seeds.py
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "gguf")
ROOT = os.path.dirname(HERE)

U32, I32, F32, BOOL, STR, ARR = 4, 5, 6, 7, 8, 9


def string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def value(ty, v):
    if ty == U32:
        return struct.pack("<I", v)
    if ty == I32:
        return struct.pack("<i", v)
    if ty == F32:
        return struct.pack("<f", v)
    if ty == BOOL:
        return struct.pack("<B", int(v))
    if ty == STR:
        return string(v)
    elem, items = v
    return struct.pack("<IQ", elem, len(items)) + b"".join(value(elem, i) for i in items)


def gguf(metadata, tensors):
    """metadata: [(key, type, value)]; tensors: [(name, shape outermost first, f32 values)]."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for k, ty, v in metadata:
        out += string(k) + struct.pack("<I", ty) + value(ty, v)
    offset, data = 0, b""
    for name, shape, vals in tensors:
        out += string(name) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in reversed(shape))
        out += struct.pack("<IQ", 0, offset)
        blob = struct.pack(f"<{len(vals)}f", *vals)
        blob += b"\0" * (-len(blob) % 32)
        data += blob
        offset += len(blob)
    out += b"\0" * (-len(out) % 32)
    return out + data


def values(n, seed):
    return [((i * 7919 + seed * 104729) % 200 - 100) / 1000.0 for i in range(n)]


def llama_model():
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += ["▁", "a", "b", "▁a", "▁b", "ab", "▁ab", "é", "▁the", "[INST]", "[/INST]"]
    types = [2, 3, 3] + [6] * 256 + [1] * (len(tokens) - 259)
    scores = [0.0] * 259 + [-float(i) for i in range(len(tokens) - 259)]
    hidden, ff, vocab = 8, 16, len(tokens)
    template = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
        "[INST] {{ m['content'] | trim }} [/INST]{% else %}{{ m['content'] }}{{ eos_token }}"
        "{% endif %}{% endfor %}"
    )
    meta = [
        ("general.architecture", STR, "llama"),
        ("llama.context_length", U32, 64),
        ("llama.embedding_length", U32, hidden),
        ("llama.block_count", U32, 1),
        ("llama.feed_forward_length", U32, ff),
        ("llama.attention.head_count", U32, 2),
        ("llama.attention.head_count_kv", U32, 1),
        ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
        ("llama.rope.freq_base", F32, 10000.0),
        ("tokenizer.ggml.model", STR, "llama"),
        ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
        ("tokenizer.ggml.scores", ARR, (F32, scores)),
        ("tokenizer.ggml.token_type", ARR, (I32, types)),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.ggml.unknown_token_id", U32, 0),
        ("tokenizer.ggml.add_bos_token", BOOL, True),
        ("tokenizer.chat_template", STR, template),
    ]
    kv = hidden // 2
    shapes = [
        ("token_embd.weight", [vocab, hidden]),
        ("output_norm.weight", [hidden]),
        ("blk.0.attn_norm.weight", [hidden]),
        ("blk.0.attn_q.weight", [hidden, hidden]),
        ("blk.0.attn_k.weight", [kv, hidden]),
        ("blk.0.attn_v.weight", [kv, hidden]),
        ("blk.0.attn_output.weight", [hidden, hidden]),
        ("blk.0.ffn_norm.weight", [hidden]),
        ("blk.0.ffn_gate.weight", [ff, hidden]),
        ("blk.0.ffn_up.weight", [ff, hidden]),
        ("blk.0.ffn_down.weight", [hidden, ff]),
    ]
    tensors = []
    for i, (name, shape) in enumerate(shapes):
        n = 1
        for d in shape:
            n *= d
        tensors.append((name, shape, values(n, i)))
    return gguf(meta, tensors)


def gpt2_tokenizer():
    # GPT-2's byte alphabet: printable bytes as themselves, the rest shifted past 255.
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    tokens = [chars[b] for b in range(256)]
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]
    tokens += ["Ġt", "he", "Ġthe", "in", "Ġa", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    types = [1] * (len(tokens) - 3) + [3, 3, 3]
    meta = [
        ("general.architecture", STR, "qwen2"),
        ("tokenizer.ggml.model", STR, "gpt2"),
        ("tokenizer.ggml.pre", STR, "qwen2"),
        ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
        ("tokenizer.ggml.token_type", ARR, (I32, types)),
        ("tokenizer.ggml.merges", ARR, (STR, merges)),
        ("tokenizer.ggml.eos_token_id", U32, len(tokens) - 2),
        ("tokenizer.chat_template", STR,
         "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"),
    ]
    return gguf(meta, [])


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(ROOT, "tests/fixtures/gguf/tiny-llama3.q8_0.gguf"), "rb") as f:
        header = f.read(4096)
    for name, data in [
        ("tiny-llama-model.gguf", llama_model()),
        ("tiny-gpt2-tok.gguf", gpt2_tokenizer()),
        ("llama3-header.gguf", header),
    ]:
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
