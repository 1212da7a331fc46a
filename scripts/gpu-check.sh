#!/usr/bin/env bash
# GPU check of indus-kernels: every CUDA kernel against its CPU reference on fresh random and hostile inputs
# (bf16/f16 rel. L2 <= 1e-2 over each output and <= 1.5e-2 for its worst row, f32 1e-4 / 2e-4; cache writes, the
# sampler's exp, sampling and argmax exact), poisoned inputs and outputs with controls that the poison reaches
# them, bad metadata rejected, odd sizes and block sizes, attention with sliding windows and soft-caps, then a
# timings table (decode attention bandwidth vs a measured device copy, prefill TFLOP/s, norm/rotary/SiLU/
# cache-write bandwidth, sampling). The program is kernels/src/bin/indus-gpu-check.rs; its checks are kernels/src/check/suite.rs (unit-tested on CPU).
#
# usage:
#   scripts/gpu-check.sh build   on the build machine (no GPU needed): installs the CUDA toolchain if missing,
#                                builds release --features cuda in the persistent target dir, and puts the stripped
#                                binary in dist/gpu/ (git-ignored; name it in the device tool's `carry`)
#   scripts/gpu-check.sh run     on the GPU machine (no Rust there): runs dist/gpu/indus-gpu-check
#   scripts/gpu-check.sh         build, then run
# `run` skips (exit 0) only when the machine shows no NVIDIA GPU at all (no working nvidia-smi and no
# /dev/nvidia[0-9]*). Once it sees one, everything must work: missing libraries, a driver too old for the build, a
# GPU the program cannot open, a run that records no results or never checks an op -- each is a failure
# (the program runs with --require-gpu).
# Extra arguments after `run` go to the program: --quick, --no-bench, --seed N. Its report is also written to
# $OUT/gpu-check.md when OUT is set (the device tool's output folder), else dist/gpu/gpu-check.md.
#
# Device tool example (from the repo root):
#   scripts/gpu-check.sh build
#   run(command="bash scripts/gpu-check.sh run", carry=["dist/gpu"])
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dist="$repo/dist/gpu"
bin="$dist/indus-gpu-check"

build() {
  cd "$repo"
  "$repo/scripts/install-cuda-toolchain.sh"
  # shellcheck disable=SC1091
  source "$repo/.cuda-env"
  export CARGO_TARGET_DIR=${INDUS_CUDA_TARGET_DIR:-$HOME/.cache/indus/target-cuda}
  # The same invocation as scripts/cuda-build-check.sh, so both share one set of compiled dependencies.
  nice -n 19 cargo build --release --features cuda --workspace --bins --lib
  mkdir -p "$dist"
  strip -o "$bin" "$CARGO_TARGET_DIR/release/indus-gpu-check"
  {
    echo "commit: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "built: $(date -u +%FT%TZ) on $(uname -n)"
    echo "INDUS_CUDA_ARCHS: ${INDUS_CUDA_ARCHS:-}"
    nvcc --version | tail -1
  } > "$dist/BUILD-INFO"
  echo "built $bin ($(du -h "$bin" | cut -f1)); carry dist/gpu to the GPU machine and run: bash scripts/gpu-check.sh run"
}

have_gpu() {
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    return 0
  fi
  compgen -G '/dev/nvidia[0-9]*' >/dev/null
}

run_check() {
  if ! have_gpu; then
    echo "gpu-check: no NVIDIA GPU here (no working nvidia-smi, no /dev/nvidia[0-9]*): skipping"
    return 0
  fi
  echo "gpu-check: a GPU is present: every check must run and pass (--require-gpu)"
  if [ ! -x "$bin" ]; then
    echo "gpu-check: $bin is missing: run 'scripts/gpu-check.sh build' on the build machine and carry dist/gpu" >&2
    return 1
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || true
  # The binary links libcuda.so.1 (driver) and libcublas/libcublasLt/libcurand/libnvrtc/libcudart of CUDA 13:
  # find them wherever this machine keeps them (toolkit, PyTorch wheels, driver folder).
  local dirs
  dirs=$(find /usr/local /opt /usr/lib /usr/lib64 -xdev \( -name 'libcublas.so.13' -o -name 'libcublasLt.so.13' \
    -o -name 'libcurand.so.10' -o -name 'libnvrtc.so.13' -o -name 'libcudart.so.13' -o -name 'libcuda.so.1' \) \
    -printf '%h\n' 2>/dev/null | sort -u | tr '\n' ':')
  export LD_LIBRARY_PATH="${dirs}${LD_LIBRARY_PATH:-}"
  if ldd "$bin" | grep -q "not found"; then
    echo "gpu-check: libraries not found:" >&2
    ldd "$bin" | grep "not found" >&2
    if ldd "$bin" | grep -q "libcuda.so.1 => not found"; then
      echo "gpu-check: FAIL: the machine shows a GPU but has no CUDA driver library (libcuda.so.1)" >&2
    fi
    return 1
  fi
  local out=${OUT:-$dist}
  mkdir -p "$out"
  local rc
  set +e
  "$bin" --require-gpu --out "$out" "$@" 2>&1 | tee "$out/gpu-check.log"
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then
    echo "gpu-check: FAIL (indus-gpu-check exited $rc: 1 a check failed or none ran, 2 an error, 3 no usable GPU)" >&2
  fi
  return "$rc"
}

mode=${1:-all}
[ $# -gt 0 ] && shift
case "$mode" in
  build) build ;;
  run) run_check "$@" ;;
  all)
    build
    run_check "$@"
    ;;
  *)
    echo "usage: scripts/gpu-check.sh [build|run [--quick] [--no-bench] [--seed N]]" >&2
    exit 2
    ;;
esac
