#!/usr/bin/env bash
# The Python package's tests (bindings/python/tests, pytest): a venv under
# .cache with pytest and maturin from PyPI, the package built into it by
# `pip install` (maturin), and SmolLM2-135M-Instruct converted to q8 by the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/venv-python-bindings
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import pytest, maturin' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'pytest==8.*' 'maturin>=1.9,<2'
fi
# No build isolation: the venv's maturin (found on PATH), not a fresh
# download per run. Cargo.toml's `python` profile (target/python): maturin
# builds one package, whose dependencies' features differ from the
# workspace's, so nothing of target/debug could be reused anyway; no debug
# info and no LTO keep that build short.
export PATH="$PWD/$venv/bin:$PATH"
export MATURIN_PEP517_ARGS="--profile python"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-build-isolation --force-reinstall ./bindings/python
gguf=$(tools/fetch-model.sh smollm2)
# Converted afresh each run (a few seconds): a file made by an older
# converter would test the past.
mkdir -p target/python-tests
model=target/python-tests/smollm2-q8.bin
# The CLI of the workspace's test build (what tools/test.sh just built;
# `cargo run` of the one package would resolve other features and rebuild).
cargo test --workspace --no-run --quiet
target/debug/gpt-fast convert "$gguf" -o "$model" --quant q8 --quiet
GPT_FAST_TEST_MODEL="$PWD/$model" "$venv/bin/python" -m pytest -q bindings/python/tests "$@"
