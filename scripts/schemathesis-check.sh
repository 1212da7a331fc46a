#!/usr/bin/env bash
# schemathesis against a live `indus serve` (the embedded model plus the tiny encoder and
# reranker fixtures, API keys on), driven by the server's own /openapi.json: no 5xx, every
# answer as the spec says (status, content type, headers, body schema), and every error in
# OpenAI's shape (scripts/schemathesis_hooks.py). Afterwards the server must still be up and
# have logged no panic. Streams are checked on purpose too (scripts/schemathesis_streams.py).
# Used by .ci/run.
#
#   SCHEMATHESIS_EXAMPLES  test cases per operation and phase (default 200)
#   SCHEMATHESIS_SEED      hypothesis seed (default: random, printed so a failure replays)
#   INDUS_BIN              the indus binary (default: target/debug/indus under CARGO_TARGET_DIR)
# schemathesis is installed once, every package hash-pinned (scripts/requirements-schemathesis.txt),
# into ${INDUS_CACHE:-$HOME/.cache/indus}/venv-schemathesis.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
# Without INDUS_BIN the binary is (re)built: a stale one would test an older document.
if [ -z "${INDUS_BIN:-}" ]; then (cd "$repo" && cargo build --locked --bin indus); fi
bin=${INDUS_BIN:-$target/debug/indus}

venv=${INDUS_CACHE:-$HOME/.cache/indus}/venv-schemathesis
reqs=$repo/scripts/requirements-schemathesis.txt
stamp=$venv/.requirements.sha256
want=$(sha256sum "$reqs" | cut -d' ' -f1)
if [ ! -x "$venv/bin/schemathesis" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes --no-deps -r "$reqs"
  echo "$want" >"$stamp"
fi

# shellcheck source=lib/indus-serve.sh
source "$repo/scripts/lib/indus-serve.sh"
key=sk-schemathesis
fixtures=$repo/tests/fixtures/encoders
start_indus --api-key "$key" --max-model-len 256 \
  --embedding-model "xlmr=$fixtures/tiny-xlmr" \
  --embedding-model "reranker=$fixtures/tiny-bert-reranker"
log=${_indus_logs[0]}

seed=${SCHEMATHESIS_SEED:-$RANDOM}
echo "schemathesis seed $seed (SCHEMATHESIS_SEED=$seed replays it)"
status=0
# From a scratch directory: schemathesis keeps a cache in ./.schemathesis.
work=$(mktemp -d)
trap 'rm -rf "$work"; _indus_cleanup' EXIT
cd "$work"
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$repo/scripts" \
  "$venv/bin/schemathesis" run "http://$addr/openapi.json" \
  -H "Authorization: Bearer $key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,openai_error_shape \
  --phases coverage,fuzzing,stateful \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-200}" \
  --request-timeout 60 --workers 2 --seed "$seed" --no-color --generation-database none \
  --report junit --report-dir "${TMPDIR:-/tmp}/indus-schemathesis" || status=$?

model=$(curl -fsS -H "Authorization: Bearer $key" "http://$addr/v1/models" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["data"][0]["id"])')
"$venv/bin/python" "$repo/scripts/schemathesis_streams.py" "http://$addr/openapi.json" "$key" "$model" ||
  status=$?

if ! curl -fsS "http://$addr/health" >/dev/null; then
  echo "the server stopped answering /health after the run"
  status=1
fi
if grep -n "panicked" "$log"; then
  echo "the server logged a panic"
  status=1
fi
echo "server answers: $(curl -fsS -H "Authorization: Bearer $key" "http://$addr/metrics" | grep '^indus_requests_total' | tr '\n' ' ')"
exit "$status"
