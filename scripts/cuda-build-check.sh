#!/usr/bin/env bash
# Compile-and-link check of the CUDA build, on a machine with no GPU: installs the pinned CUDA 13.0
# toolchain if it is missing (scripts/install-cuda-toolchain.sh), then builds the whole workspace with
# `--release --features cuda` in a persistent target dir, so later runs are incremental.
#
# usage: scripts/cuda-build-check.sh [extra cargo build args]
#   INDUS_CUDA_TARGET_DIR   target dir (default $HOME/.cache/indus/target-cuda)
#   INDUS_CUDA_ARCHS        archs of our kernels (default from .cuda-env: 80;86;89;90)
#   INDUS_CUDA_CLIPPY=1     also run clippy -D warnings with --features cuda (workspace, release)
# The workspace build includes indus-kernels' `indus-gpu-check` binary (required-features = cuda).
# Measured on the 2-core dev machine: cold 13 min, warm no-op 0.3 s, one .cu touched 2.5 min (docs/perf/README.md).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

"$repo/scripts/install-cuda-toolchain.sh"
# shellcheck disable=SC1091
source "$repo/.cuda-env"
export CARGO_TARGET_DIR=${INDUS_CUDA_TARGET_DIR:-$HOME/.cache/indus/target-cuda}

start=$(date +%s)
echo "== cargo build --release --features cuda (target dir $CARGO_TARGET_DIR)"
nice -n 19 cargo build --release --features cuda --workspace --bins --lib "$@"
if [ "${INDUS_CUDA_CLIPPY:-0}" = 1 ]; then
  # --release --workspace: the same features and profile as the build above, so nothing is rebuilt from scratch
  # (a `-p indus-kernels` or debug clippy would recompile candle-kernels' CUDA code).
  echo "== cargo clippy --release --workspace --features cuda --all-targets -D warnings"
  nice -n 19 cargo clippy --release --workspace --features cuda --all-targets -- -D warnings
fi
echo "cuda build check OK in $(( $(date +%s) - start )) s"
