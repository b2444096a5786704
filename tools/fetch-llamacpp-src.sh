#!/usr/bin/env bash
# Fetch the llama-cpp-python 0.3.36 source distribution from PyPI into
# .cache/llama-cpp-python-0.3.36/ (once) and print the path of the llama.cpp
# tree it vendors. That tree is the project's independent reference data:
# tokenizer test vocabularies with expected ids (models/ggml-vocab-*.gguf +
# .inp/.out), chat templates (models/templates/), convert_hf_to_gguf.py.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=0.3.36
dest="$root/.cache/llama-cpp-python-$version"
tree="$dest/vendor/llama.cpp"
if [ ! -f "$tree/convert_hf_to_gguf.py" ]; then
  mkdir -p "$root/.cache"
  tmp=$(mktemp -d "$root/.cache/fetch-llamacpp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --no-binary :all: --disable-pip-version-check \
    "llama-cpp-python==$version" -d "$tmp" >&2
  tar -xzf "$tmp/llama_cpp_python-$version.tar.gz" -C "$tmp"
  rm -rf "$dest"
  mv "$tmp/llama_cpp_python-$version" "$dest"
fi
echo "$tree"
