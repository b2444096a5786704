#!/usr/bin/env bash
# Issue #14's latency targets on SmolLM2-135M-Instruct Q4_1 (converted with
# the default --quant keep), in process, warm model, 16-token prompt, as
# ratios within one run: capi/examples/first_token.rs (Session::eval alone,
# the Rust API's first piece, the C ABI's), bindings/python/bench_first_token.py
# (the Python package, installed by tools/python-test.sh) and `gpt-fast bench
# -p 16 -n 0` (the CLI's prefill alone), one after the other, REPS times.
# Everything is the test profile (opt-level 3), as tools/python-test.sh
# builds the package, so the kernels are compiled alike.
#     tools/bench-first-token.sh [ROUNDS] [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-20}
reps=${2:-3}
python=.cache/venv-python-bindings/bin/python
[ -x "$python" ] && "$python" -c 'import gpt_fast' 2>/dev/null ||
  { echo "bench-first-token.sh: run tools/python-test.sh first (it installs the package)" >&2; exit 1; }
# The workspace's test build (the CLI and the example), with the features
# tools/test.sh compiled it with: nothing to rebuild after it.
cargo test --workspace --no-run --quiet
model=target/python-tests/smollm2-q4_1.bin
[ -f "$model" ] || target/debug/gpt-fast convert "$(tools/fetch-model.sh smollm2)" -o "$model" --quiet
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in $(seq "$reps"); do
  echo "== repetition $rep"
  out=$(target/debug/examples/first_token "$model" "$rounds")
  echo "$out"
  rust=$(awk '/first piece, Rust/ {print $4}' <<<"$out")
  out=$("$python" bindings/python/bench_first_token.py "$model" "$rounds")
  echo "$out"
  py=$(awk '{print $4}' <<<"$out")
  # The median of the pp16 test's samples (tokens per second).
  ts=$(target/debug/gpt-fast bench "$model" -p 16 -n 0 -r "$rounds" -t 2 --json 2>/dev/null | "$python" -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    if r["test"] == "pp16":
        s = sorted(r["samples"])
        print(s[len(s) // 2])')
  awk -v rust="$rust" -v py="$py" -v ts="$ts" 'BEGIN {
    cli = 16000 / ts
    printf "CLI prefill (bench)  %.2f ms  (pp16 %.1f t/s, median)\n", cli, ts
    printf "Rust / CLI prefill   %.3fx\nPython / Rust        %.3fx\n", rust / cli, py / rust }'
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
