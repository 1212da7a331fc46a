#!/usr/bin/env bash
# Build llama.cpp's CPU tools from the llama.cpp vendored in the llama-cpp-python sdist on PyPI.
#
#   bash scripts/build-llama-cpp.sh            # ~7-10 min on 2 cores the first time, seconds after
#   LLAMA_CPP_DIR=$(bash scripts/build-llama-cpp.sh --print-dir)
#
# Result: $HOME/.cache/indus/llama.cpp-<ver>/bin/{llama-server,llama-bench,llama-quantize,llama-cli,
#         llama-completion,llama-simple,llama-tokenize}, plus src/ (the unpacked vendor/llama.cpp, with
#         convert_hf_to_gguf.py and gguf-py/) for scripts/make_gguf_fixtures.py.
# Used for: the side-by-side benchmark (issue 9), llama-quantize for the K-quant GGUF fixtures, and
# llama.cpp's greedy tokens / tokenization in scripts/make_smollm2_goldens.py.
#
# Idempotent: if every binary exists and the stamp file records the same version and flags, it does
# nothing. Everything it downloads is pinned and sha256-checked; cmake and ninja come from PyPI wheels
# in a private venv, so the only host requirements are python3 (with pip/venv) and a C/C++ compiler.
# Environment: INDUS_CACHE (default $HOME/.cache/indus), JOBS (default nproc),
#              LLAMA_NATIVE=ON|OFF (default ON: -march=native, fine for benchmarks on this machine).
set -euo pipefail

LLAMA_CPP_PY_VERSION=0.3.36
LLAMA_CPP_PY_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
CMAKE_VERSION=4.4.4
CMAKE_WHEEL_SHA256=f773a0544c66370408f451acd487c2c643b0dfebb48c5d64f3638bc1bb820238
NINJA_VERSION=1.13.2
NINJA_WHEEL_SHA256=65a24341b5ac09fcadcc37082660be40a94174e51a937fabf6e2cae26225fa2c
TARGETS=(llama-server llama-bench llama-quantize llama-cli llama-completion llama-simple llama-tokenize)

CACHE="${INDUS_CACHE:-$HOME/.cache/indus}"
PREFIX="$CACHE/llama.cpp-$LLAMA_CPP_PY_VERSION"
JOBS="${JOBS:-$(nproc)}"
NATIVE="${LLAMA_NATIVE:-ON}"
FLAGS="Release GGML_NATIVE=$NATIVE LLAMA_CURL=OFF BUILD_SHARED_LIBS=OFF"

if [ "${1:-}" = "--print-dir" ]; then echo "$PREFIX"; exit 0; fi

log() { printf '[build-llama-cpp %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

check_sha() { # file expected
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    log "sha256 mismatch for $1: got $got, want $2"
    return 1
  fi
}

all_built() {
  [ -f "$PREFIX/.stamp" ] && [ "$(cat "$PREFIX/.stamp")" = "$LLAMA_CPP_PY_VERSION $FLAGS" ] || return 1
  local t
  for t in "${TARGETS[@]}"; do [ -x "$PREFIX/bin/$t" ] || return 1; done
}

if all_built; then
  log "already built: $PREFIX/bin"
  exit 0
fi

mkdir -p "$PREFIX" "$CACHE/downloads"
DL="$CACHE/downloads"

# 1. The sdist (pip download of the source distribution, no dependencies).
SDIST="$DL/llama_cpp_python-$LLAMA_CPP_PY_VERSION.tar.gz"
if ! [ -f "$SDIST" ] || ! check_sha "$SDIST" "$LLAMA_CPP_PY_SHA256" 2>/dev/null; then
  rm -f "$SDIST"
  log "downloading llama-cpp-python==$LLAMA_CPP_PY_VERSION (sdist)"
  # --no-binary for this one package only: with ':all:' pip would also build the sdist's build
  # dependencies (cmake itself) from source just to read its metadata.
  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$LLAMA_CPP_PY_VERSION" -d "$DL"
fi
check_sha "$SDIST" "$LLAMA_CPP_PY_SHA256"

# 2. cmake + ninja from PyPI wheels, in a venv of their own.
VENV="$CACHE/venv-build-tools"
if ! [ -x "$VENV/bin/cmake" ] || ! [ -x "$VENV/bin/ninja" ]; then
  log "installing cmake==$CMAKE_VERSION ninja==$NINJA_VERSION into $VENV"
  python3 -m venv "$VENV"
  WH="$DL/wheels"
  mkdir -p "$WH"
  "$VENV/bin/pip" download --quiet --no-deps --only-binary :all: \
    "cmake==$CMAKE_VERSION" "ninja==$NINJA_VERSION" -d "$WH"
  check_sha "$(ls "$WH"/cmake-"$CMAKE_VERSION"-*.whl)" "$CMAKE_WHEEL_SHA256"
  check_sha "$(ls "$WH"/ninja-"$NINJA_VERSION"-*.whl)" "$NINJA_WHEEL_SHA256"
  "$VENV/bin/pip" install --quiet --no-deps --no-index \
    "$(ls "$WH"/cmake-"$CMAKE_VERSION"-*.whl)" "$(ls "$WH"/ninja-"$NINJA_VERSION"-*.whl)"
fi
CMAKE="$VENV/bin/cmake"
NINJA="$VENV/bin/ninja"

# 3. Unpack vendor/llama.cpp into $PREFIX/src (kept: convert_hf_to_gguf.py and gguf-py live there).
SRC="$PREFIX/src"
if ! [ -f "$SRC/CMakeLists.txt" ]; then
  log "unpacking vendor/llama.cpp"
  rm -rf "$SRC" "$PREFIX/unpack"
  mkdir -p "$PREFIX/unpack"
  tar -xzf "$SDIST" -C "$PREFIX/unpack" "llama_cpp_python-$LLAMA_CPP_PY_VERSION/vendor/llama.cpp"
  mv "$PREFIX/unpack/llama_cpp_python-$LLAMA_CPP_PY_VERSION/vendor/llama.cpp" "$SRC"
  rm -rf "$PREFIX/unpack"
fi

# 4. Configure and build (CPU only).
BUILD="$PREFIX/build"
log "configuring ($FLAGS)"
"$CMAKE" -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_MAKE_PROGRAM="$NINJA" \
  -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE="$NATIVE" -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
  -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF >"$PREFIX/configure.log" 2>&1 \
  || { tail -40 "$PREFIX/configure.log" >&2; exit 1; }
start=$(date +%s)
log "building ${TARGETS[*]} with $JOBS jobs (log: $PREFIX/build.log)"
"$CMAKE" --build "$BUILD" --target "${TARGETS[@]}" -j "$JOBS" >"$PREFIX/build.log" 2>&1 \
  || { tail -40 "$PREFIX/build.log" >&2; exit 1; }
mkdir -p "$PREFIX/bin"
for t in "${TARGETS[@]}"; do cp -f "$BUILD/bin/$t" "$PREFIX/bin/$t"; done
echo "$LLAMA_CPP_PY_VERSION $FLAGS" >"$PREFIX/.stamp"
log "built in $(($(date +%s) - start)) s: $PREFIX/bin"
"$PREFIX/bin/llama-cli" --version >&2 2>&1 || true
