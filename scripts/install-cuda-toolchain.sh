#!/usr/bin/env bash
# Installs a CUDA 13.0 build toolchain (nvcc, headers, cudart/cuBLAS/cuRAND/NVRTC) from pinned PyPI wheels
# into a local prefix, builds a link-time stub libcuda.so, and writes .cuda-env in the repo root.
# No GPU and no system CUDA needed: the result compiles `--features cuda` and links the binaries; the real
# libcuda.so.1 comes with the driver on the GPU machine at run time.
#
# usage: scripts/install-cuda-toolchain.sh [PREFIX]
#   PREFIX defaults to $INDUS_CUDA_HOME, else $HOME/.cache/indus/cuda-13.0.
#   Idempotent: when PREFIX already holds this exact pin set, it only rewrites .cuda-env (well under a second).
#   then: source .cuda-env && cargo build --release --features cuda
#
# .cuda-env exports:
#   CUDA_HOME, CUDA_PATH, PATH     nvcc on PATH (cudarc reads `nvcc --version` to pick its CUDA bindings)
#   CUDA_COMPUTE_CAP=90            ONE compute capability: candle-kernels (through cudaforge) accepts a single
#                                  cap and builds its PTX and its static GGUF kernels for it (90 -> sm_90a, H100/H200).
#   INDUS_CUDA_ARCHS="80;86;89;90" the list our own kernels (kernels/build.rs) are compiled for: one fatbin with a
#                                  cubin per arch plus PTX of the highest one. Set INDUS_CUDA_ARCHS=90 for a
#                                  faster single-arch build.
#   INDUS_CUDA_TARGET_DIR          persistent cargo target dir for CUDA builds (scripts/cuda-build-check.sh).
#
# Versions are pinned to 13.0 on purpose: PTX from a newer nvcc (e.g. nvvm 13.5) is refused by a 13.0 driver.
# Recipe: shared/gpu/make-cuda-prefix.sh (tested on a lent H100).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${1:-${INDUS_CUDA_HOME:-$HOME/.cache/indus/cuda-13.0}}
archs=${INDUS_CUDA_ARCHS:-80;86;89;90}
cap=${CUDA_COMPUTE_CAP:-90}
target_dir=${INDUS_CUDA_TARGET_DIR:-$HOME/.cache/indus/target-cuda}

pins=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cublas==13.0.2.14
  nvidia-cuda-nvrtc==13.0.88
  nvidia-curand==10.4.0.35
)
stamp_text="indus-cuda-toolchain v1: ${pins[*]}"
stamp="$prefix/.indus-toolchain"

have_toolchain() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_text" ] && [ -x "$prefix/bin/nvcc" ] &&
    [ -e "$prefix/lib/stubs/libcuda.so" ] && [ -e "$prefix/lib/libcublas.so" ]
}

# The stub's symbol list comes from cudarc's driver bindings, so it must be in the cargo registry.
cudarc_sys() {
  ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs 2>/dev/null | tail -1 || true
}

if have_toolchain; then
  echo "CUDA toolchain already in $prefix"
else
  echo "installing the CUDA 13.0 toolchain into $prefix"
  command -v python3 >/dev/null || { echo "python3 (with pip) is needed to install the CUDA wheels" >&2; exit 1; }
  command -v gcc >/dev/null || { echo "gcc is needed (nvcc's host compiler, and the libcuda stub)" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip install -q --disable-pip-version-check --no-warn-script-location --root-user-action=ignore --target "$tmp/w" "${pins[@]}"
  rm -rf "$prefix"
  mkdir -p "$prefix"
  cp -a "$tmp/w/nvidia/cu13/." "$prefix/"
  chmod +x "$prefix"/bin/* "$prefix"/nvvm/bin/* 2>/dev/null || true
  (
    cd "$prefix/lib"
    # The wheels ship libX.so.N only; the linker wants libX.so.
    for l in libcublas libcublasLt libnvrtc libcudart; do ln -sf "$l.so.13" "$l.so"; done
    ln -sf "$(ls libcurand.so.* | head -1)" libcurand.so
  )
  ln -sfn lib "$prefix/lib64"

  src=$(cudarc_sys)
  if [ -z "$src" ]; then
    echo "cudarc sources are not in the cargo registry yet: running cargo fetch"
    # Only the host's packages: a plain fetch also unpacks every Windows import library
    # (winapi-*-gnu, hundreds of MB), which is what failed CI once.
    host=$(rustc -vV | sed -n 's/^host: //p')
    (cd "$repo" && cargo fetch --locked -q --target "$host")
    src=$(cudarc_sys)
  fi
  [ -n "$src" ] || { echo "cudarc 0.19 sources not found in the cargo registry" >&2; exit 1; }
  # Link-time stub for the driver library: exports every cu* symbol cudarc's bindings name; none is
  # ever called (the real libcuda.so.1 is loaded on the GPU machine).
  mkdir -p "$prefix/lib/stubs"
  grep -oE "pub (unsafe )?fn cu[A-Za-z0-9_]+" "$src" | sed -E 's/.*fn //' | sort -u |
    awk '{print "void "$1"(void){}"}' > "$prefix/lib/stubs/cuda_stub.c"
  gcc -shared -fPIC -o "$prefix/lib/stubs/libcuda.so.1" -Wl,-soname,libcuda.so.1 "$prefix/lib/stubs/cuda_stub.c"
  ln -sf libcuda.so.1 "$prefix/lib/stubs/libcuda.so"
  "$prefix/bin/nvcc" --version | tail -2
  echo "$stamp_text" > "$stamp"
fi

cat > "$repo/.cuda-env" <<EOF
# written by scripts/install-cuda-toolchain.sh; source it before a --features cuda build
export CUDA_HOME="$prefix"
export CUDA_PATH="$prefix"
case ":\$PATH:" in *":$prefix/bin:"*) ;; *) export PATH="$prefix/bin:\$PATH" ;; esac
# one cap for candle-kernels (cudaforge takes a single value; 90 -> sm_90a); a value set before sourcing wins
export CUDA_COMPUTE_CAP="\${CUDA_COMPUTE_CAP:-$cap}"
# the arch list for indus-kernels (kernels/build.rs): a cubin each, plus PTX of the highest
export INDUS_CUDA_ARCHS="\${INDUS_CUDA_ARCHS:-$archs}"
export INDUS_CUDA_TARGET_DIR="\${INDUS_CUDA_TARGET_DIR:-$target_dir}"
# link-time only: the stub libcuda and the toolkit libraries
export LIBRARY_PATH="$prefix/lib:$prefix/lib/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
EOF
echo "wrote $repo/.cuda-env (CUDA_COMPUTE_CAP=$cap for candle, INDUS_CUDA_ARCHS=$archs for indus-kernels)"
