#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time and fails if any crashes (a panic, a
# sanitizer report, an allocation over the malloc limit, an input slower than the timeout).
# Works with the stable toolchain only: cargo-fuzz needs nightly flags (-Z sanitizer, the
# coverage passes), which RUSTC_BOOTSTRAP=1 unlocks on stable. Installs the pinned cargo-fuzz
# into a cache dir when it is missing. See docs/fuzzing.md.
#
# usage: scripts/fuzz-ci.sh [target ...]          (default: every target in fuzz/Cargo.toml)
#   FUZZ_SECONDS        seconds per target (default 60)
#   FUZZ_TIMEOUT        seconds one input may take before it counts as a crash (default 20)
#   FUZZ_RSS_MB         libFuzzer -rss_limit_mb and -malloc_limit_mb (default 2048)
#   FUZZ_SANITIZER      address (default) or none
#   FUZZ_WORK_DIR       where the growing corpora and logs live (default fuzz/target/work; the
#                       committed seeds in fuzz/corpus/ are read, never written)
#   INDUS_TOOLS_DIR     cargo-fuzz install root (default $HOME/.cache/indus/tools)
#   INDUS_FUZZ_TARGET_DIR  the build dir (default $HOME/.cache/indus/target-fuzz; CARGO_TARGET_DIR
#                       is ignored)
# Crash inputs land in fuzz/artifacts/<target>/; replay one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

CARGO_FUZZ_VERSION=0.13.1
seconds=${FUZZ_SECONDS:-60}
timeout=${FUZZ_TIMEOUT:-20}
rss_mb=${FUZZ_RSS_MB:-2048}
sanitizer=${FUZZ_SANITIZER:-address}
work=${FUZZ_WORK_DIR:-$repo/fuzz/target/work}
tools=${INDUS_TOOLS_DIR:-$HOME/.cache/indus/tools}
# Its own target dir, whatever CARGO_TARGET_DIR says (.ci/run sets that for the plain build):
# the instrumented build shares nothing with it.
export CARGO_TARGET_DIR=${INDUS_FUZZ_TARGET_DIR:-$HOME/.cache/indus/target-fuzz}
export RUSTC_BOOTSTRAP=1
export PATH="$tools/bin:$PATH"

if [ "$(cargo-fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$tools"
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
# The options of `cargo fuzz build` and `run` must agree, or `run` rebuilds.
build_opts=(--sanitizer "$sanitizer")

start=$(date +%s)
echo "== cargo fuzz build ${build_opts[*]} (target dir $CARGO_TARGET_DIR)"
cargo fuzz build "${build_opts[@]}"
echo "built in $(( $(date +%s) - start )) s"

mkdir -p "$work"
failed=()
summary=()
for t in "${targets[@]}"; do
  # GGUF inputs are files: room for a vocabulary and a few tensors.
  max_len=8192
  [ "$t" = gguf ] && max_len=65536
  corpus="$work/corpus/$t"
  log="$work/$t.log"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  echo "== $t: ${seconds} s"
  # New inputs go to the first corpus dir (the work one); the seeds are only read.
  set +e
  cargo fuzz run "${build_opts[@]}" "$t" "$corpus" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb="$rss_mb" \
    -malloc_limit_mb="$rss_mb" -max_len="$max_len" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -oE '^stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || true)
  cov=$(grep -E '^#[0-9]+' "$log" | grep -E 'cov: ' | tail -1 || true)
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    echo "!! $t failed (exit $rc); last lines of $log:"
    tail -40 "$log"
  fi
  summary+=("$(printf '%-14s exit %-3s execs %-9s %s' "$t" "$rc" "${runs:-?}" "$cov")")
done

echo "== fuzz summary (${seconds} s per target, total $(( $(date +%s) - start )) s)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
  echo "FAILED: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
echo "fuzz OK"
