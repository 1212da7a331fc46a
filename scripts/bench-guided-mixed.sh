#!/usr/bin/env bash
# Do structured requests slow the unconstrained ones batched with them? One `indus serve`, two
# `indus bench serve` clients at once, in alternating rounds:
#   plain      the measured client: unconstrained, ignore_eos
#   neighbour  as many requests in flight beside it, of the same lengths: unconstrained
#              ("control" rounds) or under a JSON schema that cannot be complete within
#              max_tokens ("guided" rounds: an array of at least 400 short strings), so both
#              kinds of round batch the same shapes and only the grammar differs
# and prints the plain client's TPOT in each round and the guided/control ratio of the means.
#
#   bash scripts/bench-guided-mixed.sh MODEL [ROUNDS]
#     MODEL: anything `indus serve` takes, or `embedded` for the embedded random-weight model
#   INDUS_BIN   the indus binary (default: target/release/indus under CARGO_TARGET_DIR)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
model=${1:?usage: bench-guided-mixed.sh MODEL [ROUNDS]}
rounds=${2:-3}
target=${CARGO_TARGET_DIR:-$repo/target}
bin=${INDUS_BIN:-$target/release/indus}
[ -x "$bin" ] || (cd "$repo" && cargo build --release --locked --bin indus)
# shellcheck source=lib/indus-serve.sh
source "$repo/scripts/lib/indus-serve.sh"
out=${INDUS_BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"
model_arg=("$model")
[ "$model" = embedded ] && model_arg=()
start_indus "${model_arg[@]}" --served-model-name m --max-model-len 1024
url="http://$addr"
conc=${INDUS_BENCH_CONCURRENCY:-8}
schema='{"type":"object","properties":{"notes":{"type":"array","items":{"type":"string","maxLength":12},"minItems":400}},"required":["notes"],"additionalProperties":false}'
guided_body="{\"structured_outputs\": {\"json\": $schema}}"
common=(--base-url "$url" --model m --input-len 64 --output-len 64 --range-ratio 0.5 --ignore-eos --no-progress)

plain() { # round kind
  "$bin" bench serve "${common[@]}" --num-prompts $((conc * 6)) --max-concurrency "$conc" --seed "$1" \
    --label plain --output-json "$out/plain-$2-$1.json" >/dev/null
}
neighbour() { # round kind extra-args...
  local r=$1 kind=$2
  shift 2
  "$bin" bench serve "${common[@]}" --num-prompts 100000 --max-concurrency "$conc" --seed $((r + 1000)) \
    --label "$kind" "$@" >/dev/null 2>&1 &
  npid=$!
}
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }
echo "$conc plain + $conc neighbour requests in flight"

for r in $(seq "$rounds"); do
  for kind in control guided; do
    if [ "$kind" = guided ]; then
      neighbour "$r" guided --extra-body "$guided_body"
    else
      neighbour "$r" control
    fi
    sleep 2 # let the neighbour fill its slots
    plain "$r" "$kind"
    kill "$npid" 2>/dev/null || true
    wait "$npid" 2>/dev/null || true
    tpot=$(field "$out/plain-$kind-$r.json" "['summary']['tpot']['mean_ms']")
    printf 'round %s %-8s plain TPOT mean %.2f ms\n' "$r" "$kind" "$tpot"
  done
done
python3 - "$out" "$rounds" <<'EOF'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
mean = lambda kind: sum(json.load(open(f"{out}/plain-{kind}-{r}.json"))["summary"]["tpot"]["mean_ms"]
                        for r in range(1, rounds + 1)) / rounds
c, g = mean("control"), mean("guided")
print(f"plain TPOT mean over {rounds} rounds: control {c:.2f} ms, guided {g:.2f} ms, "
      f"guided/control {g / c:.3f}")
EOF
# Every request ran to max_tokens (a grammar that ended early would shorten the guided rounds'
# neighbours and make their batches smaller): no finish_reason but "length" may appear.
curl -s "$url/metrics" | grep '^indus_requests_total' | tee "$out/finish-reasons.txt"
echo "JSON results in $out"
