#!/usr/bin/env bash
# Fetch the llama-cpp-python 0.3.36 source distribution from PyPI into
# .cache/llama-cpp-python-0.3.36/ (once) and print the path of the llama.cpp
# tree it vendors. That tree is the project's independent reference data:
# tokenizer test vocabularies with expected ids (models/ggml-vocab-*.gguf +
# .inp/.out), chat templates (models/templates/), convert_hf_to_gguf.py.
#
# The archive is taken straight from PyPI's simple index and checked against
# its pinned SHA-256. Not `pip download --no-binary :all:`: pip prepares the
# package's metadata before it saves the file, which builds its build
# dependencies (cmake among them) from source too: 20+ minutes of a 2-core
# CI machine for a file that is only unpacked.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=0.3.36
sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
index=${PIP_INDEX_URL:-https://pypi.org/simple}
dest="$root/.cache/llama-cpp-python-$version"
tree="$dest/vendor/llama.cpp"
if [ ! -f "$tree/convert_hf_to_gguf.py" ]; then
  mkdir -p "$root/.cache"
  tmp=$(mktemp -d "$root/.cache/fetch-llamacpp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  archive="llama_cpp_python-$version.tar.gz"
  url=$(curl -fsSL --retry 3 "${index%/}/llama-cpp-python/" |
    grep -o "href=\"[^\"]*/$archive[^\"]*\"" | head -n 1 | sed 's/^href="//; s/#.*//; s/"$//')
  if [ -z "$url" ]; then
    echo "fetch-llamacpp-src: $archive is not listed in $index/llama-cpp-python/" >&2
    exit 1
  fi
  echo "fetching $url" >&2
  progress=-sS; [ -t 2 ] && progress=--progress-bar
  curl -fL --retry 3 "$progress" -o "$tmp/$archive" "$url"
  echo "$sha256  $tmp/$archive" | sha256sum -c --quiet - >&2
  tar -xzf "$tmp/$archive" -C "$tmp"
  rm -rf "$dest"
  mv "$tmp/llama_cpp_python-$version" "$dest"
fi
echo "$tree"
