#!/usr/bin/env bash
# `indus serve` on SmolLM2-135M-Instruct (GGUF) answers a chat question through the official
# `openai` Python SDK, streaming and not, and — with all-MiniLM-L6-v2 served beside it —
# client.embeddings.create (scripts/openai-sdk-check.py). Used by .ci/run.
#
#   INDUS_TEST_SMOLLM2_GGUF   the model (scripts/fetch-test-models.sh); unset → skip
#   INDUS_BIN                 the indus binary (default: target/debug/indus under CARGO_TARGET_DIR)
# The SDK is installed once into $INDUS_CACHE/venv-openai (pinned openai==2.8.1).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${INDUS_TEST_SMOLLM2_GGUF:-}" ]; then
  echo "INDUS_TEST_SMOLLM2_GGUF is not set: skipping the openai SDK check"
  exit 0
fi
target=${CARGO_TARGET_DIR:-$repo/target}
bin=${INDUS_BIN:-$target/debug/indus}
[ -x "$bin" ] || (cd "$repo" && cargo build --locked --bin indus)
venv=${INDUS_CACHE:-$HOME/.cache/indus}/venv-openai
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai; assert openai.__version__ == "2.8.1"' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check openai==2.8.1
fi
log=$(mktemp)
# all-MiniLM-L6-v2 beside it when fetched (INDUS_TEST_MINILM_DIR): one process, chat + embeddings.
emb_serve=() emb_check=()
if [ -n "${INDUS_TEST_MINILM_DIR:-}" ]; then
  emb_serve=(--embedding-model "minilm=$INDUS_TEST_MINILM_DIR")
  emb_check=(--embedding-model minilm)
fi
"$bin" serve "$INDUS_TEST_SMOLLM2_GGUF" --served-model-name smollm2 "${emb_serve[@]}" --port 0 >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
addr=
for _ in $(seq 240); do
  addr=$(sed -n 's/.*ready addr=\([0-9.:]*\).*/\1/p' "$log" | head -1)
  [ -n "$addr" ] && break
  kill -0 $pid 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.5
done
[ -n "$addr" ] || { echo "indus serve never became ready"; cat "$log"; exit 1; }
"$venv/bin/python" "$repo/scripts/openai-sdk-check.py" --base-url "http://$addr/v1" --model smollm2 "${emb_check[@]}"
