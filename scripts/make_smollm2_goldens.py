#!/usr/bin/env python3
"""Golden logits, greedy tokens and tokenizer ids for SmolLM2-135M-Instruct Q4_1 (issue 9).

Usage (from the repository root):

    eval "$(bash scripts/fetch-test-models.sh)"     # INDUS_TEST_SMOLLM2_GGUF
    bash scripts/build-llama-cpp.sh                 # llama-server, for llamacpp_* and the tokenizer check
    /work/venv-fixtures/bin/python scripts/make_smollm2_goldens.py

Writes
    tests/fixtures/smollm2/golden.safetensors      (see tests/fixtures/smollm2/README.md)
    tests/fixtures/smollm2/golden.json             per-prompt texts, decoded greedy texts, llama.cpp agreement
    tests/fixtures/smollm2/tokenizer_golden.json   1000 strings -> ids of transformers' GGUF-derived tokenizer
    tests/fixtures/smollm2/tokenizer_llamacpp_diff.json  where llama-server's /tokenize differs
    tests/fixtures/tokenizer_strings.json          the same 1000 strings (shared with the Llama-2 test)

Reference: transformers loads the GGUF itself (dequantized to f32, eager attention, float32).
The model is never committed. --no-llama-cpp skips the llama.cpp parts (llamacpp_greedy_* absent).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))
import make_fixtures as mf  # noqa: E402

import gguf  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_GGUF = Path.home() / ".cache/indus/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_LLAMA = Path.home() / ".cache/indus/llama.cpp-0.3.36"
OUT = REPO_ROOT / "tests" / "fixtures" / "smollm2"
GREEDY = 48
TOPK = 8
N_SAMPLE = 512
SAMPLE_SEED = 20240901
PORT = 18391

PARAGRAPH = (
    "Section 4.2 of the network operations manual describes the procedure for handling a "
    "degraded microwave backhaul link between two cell sites. When the network management "
    "system raises a major alarm for high bit error rate on a radio link, the on-duty engineer "
    "in the network operations centre must first confirm the alarm against the performance "
    "counters of the last fifteen minutes, because short bursts of interference during heavy "
    "rain often clear by themselves. If the received signal level has dropped by more than ten "
    "decibels below the planned value, the engineer opens a trouble ticket, assigns it the "
    "priority that matches the number of affected subscribers, and notifies the regional field "
    "team. Traffic on the affected link should be rerouted through the protection path where one "
    "exists, and the change must be recorded in the change log with the ticket number, the time "
    "and the name of the engineer. The field team checks the antenna alignment, the outdoor unit, "
    "the coaxial or fibre connection to the indoor unit and the power supply, and replaces any "
    "faulty module from the spare stock kept at the regional warehouse. After the repair, the link "
    "is monitored for at least one hour before the ticket can be closed, and the root cause, such "
    "as a loose connector, water ingress or a failed power amplifier, is entered in the knowledge "
    "base so that recurring faults on the same route can be analysed during the monthly quality "
    "review. Escalation to the transmission planning team is required when the same link fails "
    "more than three times in thirty days."
)

PROMPTS = [
    ("english", "The capital of Pakistan is"),
    ("chat", None),  # chat template applied below
    ("paragraph", PARAGRAPH),
    ("urdu", "پاکستان کا دارالحکومت اسلام آباد ہے۔ یہ شہر اپنی خوبصورتی کے لیے مشہور ہے اور"),
    ("code", "def fibonacci(n: int) -> list[int]:\n    \"\"\"Return the first n Fibonacci numbers.\"\"\"\n"),
]
CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


# --------------------------------------------------------------------------------------------
# 1000 tokenizer test strings, generated deterministically.
ENGLISH = [
    "The quick brown fox jumps over the lazy dog.", "Hello, world!", "It's a beautiful day, isn't it?",
    "Please reset the router and try again.", "The base station lost its GPS sync at 03:14 UTC.",
    "Don't panic.", "I'm here; you're there; they've gone.", "U.S.A. vs. U.K.: 3-2",
    "e-mail, e.g., i.e., etc.", "CAPITAL LETTERS AND lower case", "naïve café résumé coöperate",
    "Mr. O'Neil's 2nd-floor office", "version 2.10.3-rc1", "1234567890", "3.14159265358979",
    "$1,000,000.00 and 50% off", "https://example.com/path?q=1&r=2#frag", "user@example.org",
    "#hashtag @mention", "C:\\Windows\\System32", "/usr/local/bin/indus --port 8000",
]
URDU = [
    "پاکستان ایک خوبصورت ملک ہے", "السلام علیکم", "آپ کیسے ہیں؟", "میرا نام علی ہے۔",
    "براہ کرم اپنا پاس ورڈ دوبارہ ترتیب دیں", "نیٹ ورک میں خرابی ہے", "۱۲۳۴۵۶۷۸۹۰",
    "اردو پاکستان کی قومی زبان ہے", "شکریہ!", "کراچی، لاہور، اسلام آباد",
]
CHINESE = ["你好，世界", "我爱北京天安门", "今天天气很好。", "机器学习", "中华人民共和国", "请重启路由器"]
OTHER = ["Привет, мир!", "こんにちは世界", "안녕하세요", "مرحبا بالعالم", "नमस्ते दुनिया", "Γειά σου Κόσμε",
         "Ελληνικά ñ ß ø å", "שלום עולם"]
EMOJI = ["🌍🚀", "😀😃😄", "👍🏽", "👨‍👩‍👧‍👦", "🇵🇰🇫🇷", "❤️", "🤖 says hi", "✅ done ❌ failed", "∑∫√∞≠≤"]
CODE = [
    "def f(x):\n    return x * 2\n", "fn main() {\n    println!(\"hi\");\n}", "for (int i = 0; i < n; ++i) {}",
    "SELECT * FROM users WHERE id = 42;", "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "<div class=\"x\">text</div>", "x+=1;y-=2;z*=3", "if a == b and not c:", "import numpy as np",
    "#include <stdio.h>", "    indented\tline", "a_b_c = __init__()", "lambda x: x**2", "0x1F 0b1010 1e-9",
    "// comment\n/* block */", "`backticks` and ~tilde~ ^caret^ |pipe|",
]
WHITESPACE = [" ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n ", "\t \t",
              "       ", "a  b", "a   b", "a\tb", "a\nb", "a \n b", "  leading", "trailing  ", "x\n\n\ny",
              "\u00a0", "\u3000"]
SPECIAL = [
    "<|im_start|>user\nhi<|im_end|>", "<|im_start|>system\nYou are helpful.<|im_end|>\n",
    "<|im_start|>assistant\n", "<|endoftext|>", "<|im_end|>", "text<|im_end|>more",
    "<|im_start|><|im_end|>", "<s> </s> <unk>", "<|endoftext|><|endoftext|>",
    "<|im_start|>user\nسلام<|im_end|>\n<|im_start|>assistant\n",
]
POOLS = [ENGLISH, URDU, CHINESE, OTHER, EMOJI, CODE, WHITESPACE, SPECIAL]
SEPS = ["", " ", "  ", "\n", "\t", ", ", " \n", "\n\n"]


def tokenizer_strings(n: int = 1000, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    for pool in POOLS:  # every base string on its own first
        for s in pool:
            if s not in seen:
                seen.add(s)
                out.append(s)
    while len(out) < n:
        k = rng.choice([1, 2, 2, 3, 3, 4])
        parts = []
        for _ in range(k):
            pool = rng.choice(POOLS)
            s = rng.choice(pool)
            r = rng.random()
            if r < 0.15:  # a random slice (cuts words / multibyte sequences at char boundaries)
                a = rng.randrange(len(s))
                s = s[a: a + rng.randrange(1, len(s) - a + 1)]
            elif r < 0.25:
                s = s.upper()
            elif r < 0.30:
                s = s * rng.randint(2, 3)
            parts.append(s)
            parts.append(rng.choice(SEPS))
        s = "".join(parts[:-1]) if rng.random() < 0.7 else "".join(parts)
        if s and s not in seen:
            seen.add(s)
            out.append(s)
    return out[:n]


# --------------------------------------------------------------------------------------------
class LlamaServer:
    def __init__(self, binary: Path, model: Path, port: int):
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(OUT / ".llama-server.log", "w")  # noqa: SIM115 (removed at the end)
        self.proc = subprocess.Popen(
            [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", "4096",
             "-t", "2", "-np", "1", "--no-warmup", "--seed", "0",
             # --no-repack: llama.cpp's AMX extra buffer type (GGML_NATIVE=ON on an AMX CPU)
             # segfaults in ggml_backend_amx_mul_mat on this machine; the plain CPU path is used.
             "--no-repack"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception:  # noqa: BLE001
                time.sleep(0.5)
            if self.proc.poll() is not None:
                raise SystemExit("llama-server exited; see tests/fixtures/smollm2/.llama-server.log")
        raise SystemExit("llama-server did not become healthy")

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read())

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        (OUT / ".llama-server.log").unlink(missing_ok=True)


def smollm_tokenizer(gguf_path: Path):
    """transformers' tokenizer from the GGUF, with SmolLM's real pre-tokenizer restored.

    transformers 4.57's GGUF converter gives every gpt2-type vocab a bare ByteLevel(use_regex)
    pre-tokenizer; SmolLM's tokenizer.json (what `tokenizer.ggml.pre = smollm` names, and what
    llama.cpp implements) splits digits individually *first*. They differ where whitespace
    precedes a digit ("a  1", "\n\n1"). Restored, llama.cpp's convert_hf_to_gguf.py recognises
    the tokenizer as "smollm" by its hash of the reference text (make_gguf_fixtures.py relies on that).
    Returns (tokenizer, raw_gguf_tokenizer).
    """
    from tokenizers import pre_tokenizers

    raw = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    return tok, raw


def leading_agree(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=Path(os.environ.get("INDUS_TEST_SMOLLM2_GGUF", DEFAULT_GGUF)))
    ap.add_argument("--llama-cpp", type=Path, default=DEFAULT_LLAMA)
    ap.add_argument("--no-llama-cpp", action="store_true")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)

    h = hashlib.sha256(args.gguf.read_bytes()).hexdigest()
    if h != GGUF_SHA256:
        raise SystemExit(f"{args.gguf}: sha256 {h}, expected {GGUF_SHA256}")
    reader = gguf.GGUFReader(str(args.gguf))
    add_bos = bool(reader.fields["tokenizer.ggml.add_bos_token"].contents())
    bos_id = int(reader.fields["tokenizer.ggml.bos_token_id"].contents())

    tok, raw_tok = smollm_tokenizer(args.gguf)
    model = AutoModelForCausalLM.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name,
                                                 dtype=torch.float32, attn_implementation="eager")
    model.eval()
    vocab = model.config.vocab_size

    def encode(text: str) -> list[int]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return [bos_id] + ids if add_bos else ids

    server = None
    if not args.no_llama_cpp:
        server = LlamaServer(args.llama_cpp / "bin" / "llama-server", args.gguf, PORT)
    try:
        gen = torch.Generator().manual_seed(SAMPLE_SEED)
        sample_ids = torch.randperm(vocab, generator=gen)[:N_SAMPLE].sort().values.to(torch.int64)
        golden: dict[str, torch.Tensor] = {"sample_ids": sample_ids}
        report = dict(gguf=args.gguf.name, gguf_sha256=GGUF_SHA256, add_bos_token=add_bos,
                      sample_seed=SAMPLE_SEED, prompts=[])
        for i, (kind, text) in enumerate(PROMPTS):
            if kind == "chat":
                text = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
            ids = encode(text)
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
            gaps = (top.values[:, 0] - top.values[:, 1])
            entry = dict(index=i, kind=kind, text=text, n_tokens=len(ids), greedy=greedy,
                         greedy_text=tok.decode(greedy), min_prompt_top2_gap=round(float(gaps.min()), 5))
            if server is not None:
                r = server.post("/completion", dict(
                    prompt=ids, n_predict=GREEDY, temperature=0.0, top_k=1, samplers=["top_k"],
                    ignore_eos=True, cache_prompt=False, return_tokens=True, seed=0))
                lc = [int(t) for t in r["tokens"]]
                assert len(lc) == GREEDY, (i, len(lc))
                golden[f"llamacpp_greedy_{i}"] = torch.tensor(lc, dtype=torch.int64)
                entry["llamacpp_greedy"] = lc
                entry["llamacpp_greedy_text"] = tok.decode(lc)
                entry["llamacpp_leading_agree"] = leading_agree(greedy, lc)
                entry["llamacpp_prompt_tokens_evaluated"] = r.get("tokens_evaluated")
            report["prompts"].append(entry)
            print(f"prompt {i} ({kind}) len={len(ids)} agree={entry.get('llamacpp_leading_agree')} "
                  f"greedy={entry['greedy_text']!r}", flush=True)

        meta = {"format": "pt", "gguf_sha256": GGUF_SHA256,
                "llamacpp_leading_agree": json.dumps([p.get("llamacpp_leading_agree") for p in report["prompts"]])}
        save_file(golden, str(OUT / "golden.safetensors"), metadata=meta)
        (OUT / "golden.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

        strings = tokenizer_strings()
        (REPO_ROOT / "tests" / "fixtures" / "tokenizer_strings.json").write_text(
            json.dumps(strings, indent=1, ensure_ascii=False) + "\n")
        tg = [dict(text=s, ids=tok(s, add_special_tokens=False)["input_ids"]) for s in strings]
        raw_differ = [dict(text=c["text"], ids=c["ids"], raw_gguf_ids=r)
                      for c in tg if (r := raw_tok(c["text"], add_special_tokens=False)["input_ids"]) != c["ids"]]
        (OUT / "tokenizer_golden.json").write_text(json.dumps(
            dict(tokenizer="transformers 4.57.6 AutoTokenizer.from_pretrained(gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf)"
                           " with SmolLM's pre-tokenizer restored (Digits(individual) then ByteLevel), see"
                           " smollm_tokenizer() in scripts/make_smollm2_goldens.py",
                 add_special_tokens=False,
                 n_differ_from_unpatched_transformers_gguf_tokenizer=len(raw_differ),
                 cases=tg), ensure_ascii=False) + "\n")
        (OUT / "tokenizer_raw_gguf_diff.json").write_text(json.dumps(
            dict(note="strings where transformers' unpatched GGUF tokenizer (bare ByteLevel) differs",
                 n_differ=len(raw_differ), differ=raw_differ), indent=1, ensure_ascii=False) + "\n")
        print(f"tokenizer: unpatched transformers GGUF tokenizer differs on {len(raw_differ)} of {len(tg)} strings")
        if server is not None:
            diffs = []
            for c in tg:
                r = server.post("/tokenize", dict(content=c["text"], add_special=False, parse_special=True))
                lc = [int(t) for t in r["tokens"]]
                if lc != c["ids"]:
                    diffs.append(dict(text=c["text"], transformers=c["ids"], llamacpp=lc,
                                      transformers_pieces=tok.convert_ids_to_tokens(c["ids"]),
                                      llamacpp_pieces=tok.convert_ids_to_tokens(lc)))
            (OUT / "tokenizer_llamacpp_diff.json").write_text(json.dumps(
                dict(n_strings=len(tg), n_differ=len(diffs), differ=diffs), indent=1, ensure_ascii=False) + "\n")
            print(f"tokenizer: llama.cpp differs from transformers on {len(diffs)} of {len(tg)} strings")
    finally:
        if server is not None:
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
