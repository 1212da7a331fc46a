#!/usr/bin/env bash
# `indus serve` on SmolLM2-135M-Instruct (GGUF) answers a chat question through the official
# `openai` Python SDK, streaming and not, and — with all-MiniLM-L6-v2 served beside it —
# client.embeddings.create (scripts/openai-sdk-check.py). Used by .ci/run.
#
#   INDUS_TEST_SMOLLM2_GGUF   the model (scripts/fetch-test-models.sh); unset → skip
#   INDUS_BIN                 the indus binary (default: target/debug/indus under CARGO_TARGET_DIR)
# The SDK is installed once (scripts/lib/indus-serve.sh).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${INDUS_TEST_SMOLLM2_GGUF:-}" ]; then
  echo "INDUS_TEST_SMOLLM2_GGUF is not set: skipping the openai SDK check"
  exit 0
fi
target=${CARGO_TARGET_DIR:-$repo/target}
bin=${INDUS_BIN:-$target/debug/indus}
[ -x "$bin" ] || (cd "$repo" && cargo build --locked --bin indus)
# shellcheck source=lib/indus-serve.sh
source "$repo/scripts/lib/indus-serve.sh"
sdk_venv
# all-MiniLM-L6-v2 beside it when fetched (INDUS_TEST_MINILM_DIR): one process, chat + embeddings.
emb_serve=() emb_check=()
if [ -n "${INDUS_TEST_MINILM_DIR:-}" ]; then
  emb_serve=(--embedding-model "minilm=$INDUS_TEST_MINILM_DIR")
  emb_check=(--embedding-model minilm)
fi
start_indus "$INDUS_TEST_SMOLLM2_GGUF" --served-model-name smollm2 "${emb_serve[@]}"
"$venv/bin/python" "$repo/scripts/openai-sdk-check.py" --base-url "http://$addr/v1" --model smollm2 "${emb_check[@]}"
