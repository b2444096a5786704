#!/usr/bin/env bash
# The project's test command (README "Tests"): fetches the real models and the
# llama.cpp reference tree (tokenizer test vocabularies) if they are not cached
# yet, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/fetch-model.sh >/dev/null
tools/fetch-model.sh gemma3 >/dev/null
tools/fetch-llamacpp-src.sh >/dev/null
cargo test --workspace "$@"
