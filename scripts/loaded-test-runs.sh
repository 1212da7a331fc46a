#!/usr/bin/env bash
# Runs `cargo test --workspace --locked` N times while every core is kept busy by another
# process, to find tests that depend on an idle machine (issue 17). Prints pass/fail and the
# wall time of each run, then a summary; exits non-zero if any run failed.
#
#   scripts/loaded-test-runs.sh [RUNS] [-- extra cargo test args]
#
# Load: `stress-ng --cpu NPROC` when installed (Debian: apt-get install -y stress-ng), else
# one Python busy loop per core. LOAD_WORKERS overrides the number of busy workers. The test
# binaries are built once, before the load starts (the runs measure the tests, not the build).
# Each run's output is kept in ${LOG_DIR:-target/loaded-test-runs}/run-N.log.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=5
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
  runs=$1
  shift
fi
[ "${1:-}" = "--" ] && shift
workers=${LOAD_WORKERS:-$(nproc)}
log_dir=${LOG_DIR:-${CARGO_TARGET_DIR:-target}/loaded-test-runs}
mkdir -p "$log_dir"

echo "==> building the tests (no load yet)"
cargo test --workspace --locked --no-run "$@" >"$log_dir/build.log" 2>&1 || {
  tail -30 "$log_dir/build.log"
  echo "build failed; see $log_dir/build.log"
  exit 2
}

load_pids=()
start_load() {
  if command -v stress-ng >/dev/null; then
    echo "==> load: stress-ng --cpu $workers"
    stress-ng --cpu "$workers" --timeout 0 --quiet &
    load_pids+=($!)
  else
    echo "==> load: $workers python busy loops (stress-ng not installed)"
    for _ in $(seq "$workers"); do
      python3 -c 'while True: pass' &
      load_pids+=($!)
    done
  fi
}
stop_load() {
  for p in "${load_pids[@]}"; do
    kill "$p" 2>/dev/null
  done
  for p in "${load_pids[@]}"; do
    wait "$p" 2>/dev/null
  done
  load_pids=()
}
trap stop_load EXIT

start_load
sleep 1
failed=0
for i in $(seq "$runs"); do
  log="$log_dir/run-$i.log"
  t0=$(date +%s)
  if cargo test --workspace --locked "$@" >"$log" 2>&1; then
    status=pass
  else
    status=FAIL
    failed=$((failed + 1))
  fi
  printf 'run %d/%d: %s in %d s (load average %s)\n' "$i" "$runs" "$status" \
    $(($(date +%s) - t0)) "$(cut -d' ' -f1-3 /proc/loadavg)"
  if [ "$status" = FAIL ]; then
    # The failing tests and their panics.
    grep -E '^(test .* FAILED|---- .* stdout ----|thread .* panicked)' "$log" | head -20
    grep -A3 'panicked at' "$log" | head -40
  fi
done
stop_load
echo "==> $((runs - failed)) of $runs loaded runs passed (logs in $log_dir)"
[ "$failed" -eq 0 ]
