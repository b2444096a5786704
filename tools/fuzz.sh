#!/usr/bin/env bash
# Fuzzing (docs/FUZZING.md): seeds each target's corpus from real files, then
# runs every target for SECONDS (default 30) with cargo-fuzz (libFuzzer,
# nightly). Fails on any crash, timeout (10 s per input) or RSS over 1 GiB.
#   tools/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(model_file gguf hf_json tokenizer chat_template server_request)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
tools/fuzz-seeds.sh
cd fuzz
cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
  echo "== fuzz $t (${seconds}s)"
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 2>&1 |
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|Done)|panicked|ERROR' || true
  # cargo fuzz exits non-zero on a finding; PIPESTATUS keeps that exit code.
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzz $t: finding (see fuzz/artifacts/$t)"; exit 1; }
done
