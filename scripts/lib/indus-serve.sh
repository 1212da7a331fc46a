# Sourced by the SDK check scripts: the SDK venv and `indus serve` in the background.
#
#   sdk_venv              → $venv: pinned openai==2.8.1 + jsonschema==4.26.0, installed once
#                           into ${INDUS_CACHE:-$HOME/.cache/indus}/venv-openai
#   start_indus ARGS...   → $addr (host:port) of an `indus serve ARGS... --port 0` that is ready;
#                           killed when the calling script exits
# Needs $bin (the indus binary) set by the caller.

sdk_venv() {
  venv=${INDUS_CACHE:-$HOME/.cache/indus}/venv-openai
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c '
import openai, jsonschema
assert openai.__version__ == "2.8.1" and jsonschema.__version__ == "4.26.0"' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check openai==2.8.1 jsonschema==4.26.0
  fi
}

_indus_pids=() _indus_logs=()
_indus_cleanup() {
  for p in "${_indus_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for l in "${_indus_logs[@]}"; do rm -f "$l"; done
}
trap _indus_cleanup EXIT

start_indus() {
  local log pid
  log=$(mktemp)
  "$bin" serve "$@" --port 0 >"$log" 2>&1 &
  pid=$!
  _indus_pids+=("$pid") _indus_logs+=("$log")
  addr=
  for _ in $(seq 240); do
    addr=$(sed -n 's/.*ready addr=\([0-9.:]*\).*/\1/p' "$log" | head -1)
    [ -n "$addr" ] && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log"; return 1; }
    sleep 0.5
  done
  echo "indus serve $* never became ready"
  cat "$log"
  return 1
}
