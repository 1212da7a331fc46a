#!/usr/bin/env bash
# Structured output and tool calling through the official `openai` SDK
# (scripts/openai-structured-check.py) against `indus serve` with the shipped Hermes tool
# template: on the embedded random-weight model (the grammar alone must make every answer
# valid) and, when fetched, on SmolLM2-135M-Instruct with the agent loop. Used by .ci/run.
#
#   INDUS_STRUCTURED_RUNS     runs per check (default 100)
#   INDUS_TEST_SMOLLM2_GGUF   SmolLM2 (scripts/fetch-test-models.sh); unset → embedded model only
#   INDUS_BIN                 the indus binary (default: target/debug/indus under CARGO_TARGET_DIR)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
bin=${INDUS_BIN:-$target/debug/indus}
[ -x "$bin" ] || (cd "$repo" && cargo build --locked --bin indus)
# shellcheck source=lib/indus-serve.sh
source "$repo/scripts/lib/indus-serve.sh"
sdk_venv
runs=${INDUS_STRUCTURED_RUNS:-100}
tools=(--chat-template "$repo/templates/tool_chat_hermes.jinja" --max-model-len 2048)
check() { "$venv/bin/python" "$repo/scripts/openai-structured-check.py" --runs "$runs" "$@"; }

echo "-- embedded random-weight model"
start_indus "${tools[@]}"
check --base-url "http://$addr/v1" --model indus-tiny-llama3-random

if [ -n "${INDUS_TEST_SMOLLM2_GGUF:-}" ]; then
  echo "-- SmolLM2-135M-Instruct (Q4_1 GGUF)"
  start_indus "$INDUS_TEST_SMOLLM2_GGUF" --served-model-name smollm2 "${tools[@]}"
  check --base-url "http://$addr/v1" --model smollm2 --agent
else
  echo "INDUS_TEST_SMOLLM2_GGUF is not set: SmolLM2 checks skipped"
fi
