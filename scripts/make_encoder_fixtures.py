#!/usr/bin/env python3
"""Tiny random encoder fixtures (XLM-RoBERTa embedder, XLM-RoBERTa and BERT cross-encoders)
and golden outputs computed by transformers / sentence-transformers; plus, with --minilm DIR,
the golden embeddings of the real all-MiniLM-L6-v2 on 200 sentences.

Usage (from the repository root):

    python3 -m venv /work/venv-embed
    /work/venv-embed/bin/pip install -r scripts/requirements-embeddings.txt
    /work/venv-embed/bin/python scripts/make_encoder_fixtures.py [--minilm DIR]

Writes tests/fixtures/encoders/{tiny-xlmr,tiny-xlmr-reranker,tiny-bert-reranker}/ (config,
model.safetensors, tokenizer.json, sentence-transformers files, golden.json) and
tests/fixtures/encoders/minilm-golden.json. The weights are seeded and reproduce exactly; the
trained tokenizers can differ between runs in the last digits of Unigram scores or the order of
tied WordPiece entries, so each rerun rewrites tokenizer and goldens together (a committed set is
always self-consistent; the tests compare token ids against the goldens).

The tokenizers are trained here on the test sentences (a Unigram model with a Metaspace
pre-tokenizer for XLM-R, as its SentencePiece tokenizer is; WordPiece for BERT), so the
multilingual (Urdu) path is exercised without downloading XLM-R's 250k-piece vocabulary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
from pathlib import Path

# The tokenizer trainers are deterministic only single-threaded.
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "encoders"

ENGLISH = [
    "How do I reset my router to factory settings?",
    "The 4G signal drops every evening near the tower.",
    "Postpaid customers can change their billing cycle once a month.",
    "Roaming charges apply outside the home network.",
    "Submit the SIM replacement form with a copy of the national identity card.",
    "The fibre installation takes three to five working days.",
    "Data bundles expire at midnight on the last day of validity.",
    "Escalate outages longer than four hours to the network operations centre.",
    "Customer complaints must be acknowledged within 24 hours.",
    "The VoLTE feature requires a compatible handset and an updated profile.",
    "Port-in requests are processed after the donor operator confirms.",
    "Base station maintenance is scheduled for Sunday night.",
    "Enterprise clients get a dedicated account manager.",
    "Mobile wallet transfers above the daily limit need biometric verification.",
    "The policy covers data privacy, retention and lawful interception.",
    "Reboot the modem, then check the DSL light.",
    "Which documents are needed for a corporate connection?",
    "Call drop rate is a key performance indicator for the radio network.",
    "Prepaid balance can be checked by dialing the short code.",
    "Technicians must wear safety harnesses when climbing towers.",
    "The 5G trial runs in three cities this quarter.",
    "Spam SMS can be reported to the regulator.",
    "Update the APN settings to restore mobile internet.",
    "Refunds are credited to the original payment method.",
    "The outage was caused by a fibre cut on the highway.",
]
URDU = [
    "میں اپنا راؤٹر فیکٹری سیٹنگز پر کیسے ری سیٹ کروں؟",
    "شام کے وقت ٹاور کے قریب سگنل کمزور ہو جاتا ہے۔",
    "رومنگ چارجز ہوم نیٹ ورک سے باہر لاگو ہوتے ہیں۔",
    "سم تبدیل کرنے کے لیے شناختی کارڈ کی کاپی جمع کرائیں۔",
    "فائبر کی تنصیب میں تین سے پانچ دن لگتے ہیں۔",
    "ڈیٹا بنڈل آخری دن آدھی رات کو ختم ہو جاتے ہیں۔",
    "صارفین کی شکایات چوبیس گھنٹوں میں تسلیم کی جائیں۔",
    "موبائل والٹ کی حد سے زیادہ منتقلی کے لیے بائیو میٹرک تصدیق ضروری ہے۔",
    "براہ کرم اپنا بیلنس چیک کرنے کے لیے کوڈ ڈائل کریں۔",
    "نیٹ ورک کی بحالی کا کام اتوار کی رات ہوگا۔",
    "کارپوریٹ کنکشن کے لیے کون سے کاغذات درکار ہیں؟",
    "ریفنڈ اصل ادائیگی کے طریقے میں واپس کیا جاتا ہے۔",
    "موبائل انٹرنیٹ بحال کرنے کے لیے اے پی این سیٹنگز اپ ڈیٹ کریں۔",
    "پالیسی ڈیٹا کی رازداری اور ریکارڈ رکھنے کا احاطہ کرتی ہے۔",
    "ٹیکنیشن ٹاور پر چڑھتے وقت حفاظتی بیلٹ پہنیں۔",
]
WORDS = ["router", "roaming", "SIM", "5G", "billing", "outage", "fibre", "APN", "refund",
         "نیٹ ورک", "سگنل", "بیلنس", "شکایت", "Hello", "ok"]


def sentences() -> list[str]:
    """200 inputs: English, Urdu, mixed, long ones (past 256 tokens) and one-word ones."""
    rng = random.Random(7)
    out = list(ENGLISH) + list(URDU) + list(WORDS)
    while len(out) < 170:
        a, b = rng.choice(ENGLISH + URDU), rng.choice(ENGLISH + URDU)
        out.append(f"{a} {b}")
    while len(out) < 200:
        n = rng.randint(20, 60)
        out.append(" ".join(rng.choice(ENGLISH + URDU) for _ in range(n)))
    return out


def train_unigram(texts: list[str]) -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=600, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        unk_token="<unk>", shrinking_factor=0.75)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0),
                                                      trim_offsets=False, add_prefix_space=False)
    return tok


def train_wordpiece(texts: list[str]) -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=700, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(texts, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    return tok


def fast(tok: Tokenizer, bert: bool):
    from transformers import PreTrainedTokenizerFast
    if bert:
        # BERT cross-encoders feed segment ids (BertTokenizer returns them).
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                       model_input_names=["input_ids", "token_type_ids",
                                                          "attention_mask"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", cls_token="<s>",
                                   sep_token="</s>", mask_token="<mask>")


def scale_weights(model, seed: int) -> None:
    """Random weights large enough that embeddings of different inputs differ clearly."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g) if name.endswith("weight")
                        else 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def save_dir(model, hf_tok, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out, safe_serialization=True)
    hf_tok.save_pretrained(out)
    for f in ["special_tokens_map.json", "vocab.txt"]:
        (out / f).unlink(missing_ok=True)


def xlmr_config(num_labels: int | None):
    from transformers import XLMRobertaConfig
    kw = dict(vocab_size=600, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, max_position_embeddings=66, type_vocab_size=1,
              pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
    if num_labels:
        kw["num_labels"] = num_labels
    return XLMRobertaConfig(**kw)


def make_xlmr_embedder(texts: list[str]) -> None:
    from sentence_transformers import SentenceTransformer, models as st_models
    from transformers import XLMRobertaModel
    torch.manual_seed(0)
    tok = train_unigram(texts)
    model = XLMRobertaModel(xlmr_config(None), add_pooling_layer=False).eval()
    scale_weights(model, 1)
    out = OUT / "tiny-xlmr"
    save_dir(model, fast(tok, bert=False), out)
    transformer = st_models.Transformer(str(out), max_seq_length=48)
    pooling = st_models.Pooling(transformer.get_word_embedding_dimension(), "mean")
    st = SentenceTransformer(modules=[transformer, pooling, st_models.Normalize()], device="cpu")
    st.save(str(out))
    st = SentenceTransformer(str(out), device="cpu")
    inputs = texts[:40] + texts[190:195]
    emb = st.encode(inputs, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
    ids = [st.tokenize([t])["input_ids"][0].tolist() for t in inputs]
    write_golden(out, {"inputs": inputs, "token_ids": ids, "embeddings": emb.tolist(),
                       "max_seq_length": 48})


def make_reranker(texts: list[str], kind: str) -> None:
    from sentence_transformers import CrossEncoder
    torch.manual_seed(0)
    if kind == "xlmr":
        from transformers import XLMRobertaForSequenceClassification as Cls
        tok, cfg, name = train_unigram(texts), xlmr_config(1), "tiny-xlmr-reranker"
    else:
        from transformers import BertConfig, BertForSequenceClassification as Cls
        tok = train_wordpiece(texts)
        cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                         type_vocab_size=2, num_labels=1)
        name = "tiny-bert-reranker"
    model = Cls(cfg).eval()
    scale_weights(model, 2)
    out = OUT / name
    save_dir(model, fast(tok, bert=kind == "bert"), out)
    ce = CrossEncoder(str(out), device="cpu", max_length=64)
    rng = random.Random(3)
    queries = [texts[i] for i in (0, 3, 26, 30, 45)]
    pairs = []
    for q in queries:
        docs = rng.sample(texts[:160], 6) + [texts[195]]  # the last one is past the limit
        pairs += [(q, d) for d in docs]
    scores = ce.predict(pairs, batch_size=8, convert_to_numpy=True).tolist()
    hf_tok = ce.tokenizer
    enc = [hf_tok(q, d, truncation=True, max_length=64)["input_ids"] for q, d in pairs]
    with torch.no_grad():
        logits = []
        for q, d in pairs:
            b = hf_tok(q, d, truncation=True, max_length=64, return_tensors="pt")
            logits.append(model(**b).logits[0, 0].item())
    write_golden(out, {"pairs": pairs, "token_ids": enc, "scores": scores, "logits": logits,
                       "max_length": 64})


def write_golden(out: Path, data: dict) -> None:
    (out / "golden.json").write_text(json.dumps(data, ensure_ascii=False) + "\n")


def make_minilm(model_dir: Path, texts: list[str]) -> None:
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(str(model_dir), device="cpu")
    emb = st.encode(texts, batch_size=16, convert_to_numpy=True)
    ids = [st.tokenize([t])["input_ids"][0].tolist() for t in texts]
    data = {"model": "sentence-transformers/all-MiniLM-L6-v2", "inputs": texts,
            "token_counts": [len(i) for i in ids], "embeddings": [[round(x, 7) for x in r] for r in emb.tolist()]}
    (OUT / "minilm-golden.json").write_text(json.dumps(data, ensure_ascii=False) + "\n")


def make_decoder_goldens(texts: list[str]) -> None:
    """Decoder embedding models (Qwen3-Embedding style): the final-normed hidden state of the
    last token, L2-normalized, from transformers' base model of the repo's tiny decoder
    fixtures (bf16 weights computed in f32, as the other decoder goldens)."""
    from transformers import AutoModel, AutoTokenizer
    inputs = [texts[0], texts[26], texts[60], texts[195][:600], "ok"]
    out = {}
    for name in ["tiny-llama", "tiny-qwen3"]:
        d = ROOT / "tests" / "fixtures" / name
        tok = AutoTokenizer.from_pretrained(d)
        model = AutoModel.from_pretrained(d, dtype=torch.float32).eval()
        rows, ids = [], []
        with torch.no_grad():
            cfg = json.loads((d / "tokenizer_config.json").read_text())
            for t in inputs:
                t_ids = tok(t, add_special_tokens=False)["input_ids"]
                # transformers 5 no longer applies tokenizer_config's add_bos_token to this
                # tokenizer.json; Indus (and transformers 4) do.
                if cfg.get("add_bos_token") and tok.bos_token_id is not None:
                    t_ids = [tok.bos_token_id] + t_ids
                h = model(input_ids=torch.tensor([t_ids])).last_hidden_state[0, -1]
                rows.append(torch.nn.functional.normalize(h, dim=0).tolist())
                ids.append(t_ids)
        out[name] = {"inputs": inputs, "token_ids": ids, "embeddings": rows}
    (OUT / "decoder-embed-golden.json").write_text(json.dumps(out, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minilm", type=Path, help="all-MiniLM-L6-v2 directory (goldens for the real model)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    texts = sentences()
    (OUT / "sentences.json").write_text(json.dumps(texts, ensure_ascii=False, indent=0) + "\n")
    make_xlmr_embedder(texts)
    make_reranker(texts, "xlmr")
    make_reranker(texts, "bert")
    make_decoder_goldens(texts)
    if args.minilm:
        make_minilm(args.minilm, texts)


if __name__ == "__main__":
    main()
