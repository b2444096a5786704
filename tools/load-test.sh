#!/usr/bin/env bash
# `gpt-fast serve` against llama.cpp's `llama-server`, side by side, on the
# same SmolLM2-135M-Instruct weights: the Q8_0 GGUF (made from the Q4_1 one
# with llama.cpp's own quantize API by tools/compare-llamacpp.sh, or here),
# which `convert` turns into gpt-fast q8, so both run the same values. Both
# get the same slots (-np), context per slot and threads. Not part of CI
# (minutes, and its figures depend on the machine's load).
#
# llama-server is built from the llama-cpp-python 0.3.36 sdist's vendored
# llama.cpp (tools/fetch-llamacpp-src.sh) with cmake and ninja from PyPI, into
# .cache/loadtest-llama-server-build, once. The driver
# (tools/serve/load_test.py, with the `openai` client, in
# .cache/venv-loadtest) measures both servers alternately, then runs the
# bounded load test (1,000 requests from 16 clients, 5% malformed, 5%
# disconnecting) against each, and prints one table with the load average.
# gpt-fast's stderr is searched for panics at the end.
#
# Usage: tools/load-test.sh [-n PARALLEL] [-t THREADS] [-r ROUNDS] [-q REQUESTS]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
parallel=8
threads=2
rounds=3
requests=1000
while getopts "n:t:r:q:h" opt; do
  case $opt in
    n) parallel=$OPTARG ;;
    t) threads=$OPTARG ;;
    r) rounds=$OPTARG ;;
    q) requests=$OPTARG ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
# Context per slot: llama-server splits -c among its slots.
ctx_per_slot=512

venv="$root/.cache/venv-loadtest"
build="$root/.cache/loadtest-llama-server-build"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check cmake ninja 'openai==1.*'
fi
server_bin="$build/bin/llama-server"
if [ ! -x "$server_bin" ]; then
  src=$("$root/tools/fetch-llamacpp-src.sh")
  echo "building llama-server from $src into $build (several minutes)" >&2
  "$venv/bin/cmake" -S "$src" -B "$build" -G Ninja -DCMAKE_MAKE_PROGRAM="$venv/bin/ninja" \
    -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF >/dev/null
  "$venv/bin/cmake" --build "$build" --target llama-server -j 2 >/dev/null
fi

echo "building gpt-fast (release)" >&2
(cd "$root" && cargo build --release --quiet -p gpt-fast -p gpt-fast-tools --bin gpt-fast --bin gpt-fast-convert)
bin="${CARGO_TARGET_DIR:-$root/target}/release"

q41=$("$root/tools/fetch-model.sh")
gguf="$root/.cache/models/SmolLM2-135M-Instruct.Q8_0.gguf"
if [ ! -f "$gguf" ]; then
  echo "requantizing $q41 to Q8_0 with llama.cpp's quantize (tools/compare-llamacpp.sh does it)" >&2
  "$root/tools/compare-llamacpp.sh" -r 0 >/dev/null
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/load-test.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
"$bin/gpt-fast-convert" "$gguf" -o "$work/smollm2-q8.bin" --quant q8 --quiet

free_port() { "$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_ready() { # URL PID NAME
  for _ in $(seq 600); do
    if ! kill -0 "$2" 2>/dev/null; then echo "$3 exited before it was ready" >&2; exit 1; fi
    if curl -sf "$1/health" >/dev/null 2>&1; then return; fi
    sleep 0.2
  done
  echo "$3 not ready after 120 s" >&2
  exit 1
}

gf_port=$(free_port)
"$bin/gpt-fast" serve "$work/smollm2-q8.bin" --port "$gf_port" -np "$parallel" -c "$ctx_per_slot" -t "$threads" \
  --queue 64 2>"$work/gpt-fast.log" &
gf_pid=$!
pids+=("$gf_pid")
ll_port=$(free_port)
"$server_bin" -m "$gguf" --port "$ll_port" -np "$parallel" -c $((ctx_per_slot * parallel)) -t "$threads" -tb "$threads" \
  --no-webui 2>"$work/llama-server.log" >&2 &
ll_pid=$!
pids+=("$ll_pid")
wait_ready "http://127.0.0.1:$gf_port" "$gf_pid" gpt-fast
wait_ready "http://127.0.0.1:$ll_port" "$ll_pid" llama-server

echo "gpt-fast: $("$bin/gpt-fast" --version 2>/dev/null || echo "$(cd "$root" && git rev-parse --short HEAD)"), q8 from $(basename "$gguf"); llama-server: llama.cpp from llama-cpp-python 0.3.36, $(basename "$gguf"); -np $parallel, $ctx_per_slot positions a slot, -t $threads"
"$venv/bin/python" "$root/tools/serve/load_test.py" --rounds "$rounds" --requests "$requests" \
  "gpt-fast=http://127.0.0.1:$gf_port:$gf_pid" "llama-server=http://127.0.0.1:$ll_port:$ll_pid"
panics=$(grep -c "panicked" "$work/gpt-fast.log" || true)
echo "gpt-fast panics: $panics"
