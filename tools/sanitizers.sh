#!/usr/bin/env bash
# Undefined behaviour and memory errors (docs/FUZZING.md, "Miri and
# AddressSanitizer"), nightly Rust:
# - Miri over `quant` (block layouts, (de)quantization, the GGUF decoders) and
#   the kernel tests: under Miri no SIMD table is available (it cannot run the
#   AVX2/AVX-512 intrinsics), so what runs is the tests of the scalar
#   reference itself (k-quant and Q4/Q5 matmuls against dequantized GGUF
#   values, attention against f64), at the small sizes cfg(miri) picks.
# - AddressSanitizer over the kernel tests: every SIMD table this CPU has,
#   against the scalar reference (out-of-bounds loads and stores in the
#   `unsafe` blocks show up here).
#   tools/sanitizers.sh [miri|asan]...
set -euo pipefail
cd "$(dirname "$0")/.."
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(miri asan)
# Idempotent; the CI machine starts without them.
rustup component add --toolchain nightly miri rust-src >/dev/null
for step in "${steps[@]}"; do
  case "$step" in
    miri)
      echo "== miri: quant"
      # The fixture tests read tests/fixtures/gguf-dequant: files need isolation off.
      MIRIFLAGS=-Zmiri-disable-isolation cargo +nightly miri test -p gpt-fast-quant
      echo "== miri: kernels (scalar reference and drivers)"
      MIRIFLAGS=-Zmiri-disable-isolation cargo +nightly miri test -p gpt-fast-kernels
      ;;
    asan)
      echo "== AddressSanitizer: kernels"
      # --target keeps the sanitized std and build scripts apart from the host build.
      RUSTFLAGS=-Zsanitizer=address RUSTDOCFLAGS=-Zsanitizer=address \
        cargo +nightly test --target x86_64-unknown-linux-gnu -p gpt-fast-kernels --lib --tests
      ;;
    *) echo "tools/sanitizers.sh: unknown step '$step' (miri or asan)" >&2; exit 2 ;;
  esac
done
