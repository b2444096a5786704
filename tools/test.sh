#!/usr/bin/env bash
# The project's test command (README "Tests"): fetches the real models and the
# llama.cpp reference tree (tokenizer test vocabularies) if they are not cached
# yet, then runs every test of the workspace and the Python package's.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/fetch-model.sh >/dev/null
tools/fetch-model.sh gemma3 >/dev/null
tools/fetch-llamacpp-src.sh >/dev/null
# capi/tests/c_programs.rs links C programs against the C ABI's static and
# shared libraries; `cargo test` builds only the crate's rlib, so build them
# first, in the test profile (target/debug, next to the test binaries), and
# with the targets `cargo test --workspace` builds, so that features resolve
# the same and the tests reuse every crate (`-p gpt-fast-capi` alone
# resolved others: 30 crates, gpt-fast among them, compiled twice).
cargo build --profile test --workspace --lib --bins --tests --examples
cargo test --workspace "$@"
# The Python package's pytest suite, unless only building (--no-run).
case " $* " in
  *" --no-run "*) ;;
  *) tools/python-test.sh ;;
esac
