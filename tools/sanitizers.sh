#!/usr/bin/env bash
# Undefined behaviour and memory errors (docs/FUZZING.md, "Miri and
# AddressSanitizer"), nightly Rust:
# - miri: Miri over `quant` (block layouts, (de)quantization, the GGUF
#   decoders), the kernel tests (under Miri no SIMD table is available: the
#   AVX2 table needs F16C, whose conversions Miri cannot run, so what runs is
#   the tests of the scalar reference itself, at the small sizes cfg(miri)
#   picks) and the thread pool (its job pointer shared past a borrow, its
#   disjoint writes, data races under Miri's detector).
# - miri-ci: what CI runs of that (about 3.5 min on the shared 2-core machine
#   against well over 20 min for all of it): the thread pool, the GGUF block
#   decoders and the reference attention's row independence.
# - asan: AddressSanitizer over the kernel tests: every SIMD table this CPU
#   has, against the scalar reference (out-of-bounds loads and stores in the
#   `unsafe` blocks show up here).
#   tools/sanitizers.sh [miri|miri-ci|asan]...
set -euo pipefail
cd "$(dirname "$0")/.."
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(miri asan)
# Idempotent; the CI machine starts without them.
rustup component add --toolchain nightly miri rust-src >/dev/null
# The fixture tests read tests/fixtures/gguf-dequant and the pool reads the
# CPU topology: files need isolation off.
miri=(env MIRIFLAGS=-Zmiri-disable-isolation cargo +nightly miri test)
# f32::exp may give different results for the same input (Rust promises no
# more) and Miri adds a random error of a few ulp to each: a test of
# bit-identical results needs that error off.
exact=(env "MIRIFLAGS=-Zmiri-disable-isolation -Zmiri-no-extra-rounding-error" cargo +nightly miri test)
rows=(-p gpt-fast-kernels --test simd_vs_reference attention_rows_do_not_depend_on_the_call -- --include-ignored)
for step in "${steps[@]}"; do
  case "$step" in
    miri)
      echo "== miri: quant"
      "${miri[@]}" -p gpt-fast-quant
      echo "== miri: kernels (scalar reference and drivers)"
      "${miri[@]}" -p gpt-fast-kernels
      "${exact[@]}" "${rows[@]}"
      echo "== miri: thread pool"
      "${miri[@]}" -p gpt-fast --lib threads::
      ;;
    miri-ci)
      echo "== miri: thread pool, GGUF block decoders, reference attention rows"
      "${miri[@]}" -p gpt-fast --lib threads::
      "${miri[@]}" -p gpt-fast-quant --lib ggml::
      "${exact[@]}" "${rows[@]}"
      ;;
    asan)
      echo "== AddressSanitizer: kernels"
      # --target keeps the sanitized std and build scripts apart from the host build.
      RUSTFLAGS=-Zsanitizer=address RUSTDOCFLAGS=-Zsanitizer=address \
        cargo +nightly test --target x86_64-unknown-linux-gnu -p gpt-fast-kernels --lib --tests
      ;;
    *) echo "tools/sanitizers.sh: unknown step '$step' (miri, miri-ci or asan)" >&2; exit 2 ;;
  esac
done
