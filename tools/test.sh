#!/usr/bin/env bash
# The project's test command (README "Tests"): fetches the real model if it is
# not cached yet, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/fetch-model.sh >/dev/null
cargo test --workspace "$@"
