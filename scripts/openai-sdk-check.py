#!/usr/bin/env python3
"""Ask a running Indus (or any OpenAI-compatible server) one chat question through the official
`openai` Python SDK, non-streaming and streaming, and print both answers.

    pip install openai==2.8.1
    python3 scripts/openai-sdk-check.py --base-url http://127.0.0.1:8000/v1 --model MODEL

Exits non-zero when either answer is empty, the two differ (greedy decoding), or the usage
the server reports does not add up.
"""

import argparse
import sys

from openai import OpenAI


def check_embeddings(client: OpenAI, model: str) -> list[str]:
    """A retrieval round trip: the SDK (which asks for base64 by default) embeds a query and
    three passages; the passage that answers the query must be the nearest."""
    passages = [
        "Reboot the modem, then check that the DSL light is steady.",
        "Roaming charges apply when you use your SIM outside the home network.",
        "Refunds are credited to the original payment method within seven days.",
    ]
    query = "My home internet stopped working, what should I do?"
    resp = client.embeddings.create(model=model, input=[query] + passages)
    vecs = [d.embedding for d in resp.data]
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))
    scores = [dot(vecs[0], v) for v in vecs[1:]]
    print(f"embeddings ({len(vecs)} x {len(vecs[0])}, {resp.usage.prompt_tokens} tokens): scores {[round(s, 3) for s in scores]}")
    problems = []
    if len(vecs) != 4 or any(len(v) != len(vecs[0]) for v in vecs):
        problems.append("embeddings: wrong number or size of vectors")
    if max(range(3), key=lambda i: scores[i]) != 0:
        problems.append("embeddings: the passage that answers the query is not the nearest")
    if resp.usage.prompt_tokens <= 0:
        problems.append("embeddings: usage.prompt_tokens missing")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--model", required=True)
    ap.add_argument("--api-key", default="unused")
    ap.add_argument("--question", default="What is the capital of France? Answer in one sentence.")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--embedding-model", help="also check client.embeddings.create on this model")
    args = ap.parse_args()

    client = OpenAI(base_url=args.base_url, api_key=args.api_key, timeout=300)
    messages = [{"role": "user", "content": args.question}]

    full = client.chat.completions.create(
        model=args.model, messages=messages, max_tokens=args.max_tokens, temperature=0
    )
    answer = full.choices[0].message.content or ""
    print(f"non-streaming ({full.choices[0].finish_reason}, {full.usage.completion_tokens} tokens): {answer}")

    parts = []
    usage = None
    stream = client.chat.completions.create(
        model=args.model,
        messages=messages,
        max_tokens=args.max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    streamed = "".join(parts)
    print(f"streaming ({len(parts)} chunks, usage {usage.completion_tokens if usage else None} tokens): {streamed}")

    problems = []
    if not answer.strip():
        problems.append("empty non-streaming answer")
    if streamed != answer:
        problems.append("streaming and non-streaming answers differ")
    if usage is None or usage.completion_tokens != full.usage.completion_tokens:
        problems.append("streamed usage missing or different")
    if args.embedding_model:
        problems += check_embeddings(client, args.embedding_model)
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
