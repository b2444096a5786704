#!/usr/bin/env bash
# Perplexity of gpt-fast's own q4 against llama.cpp's Q4_K_M, both made from
# the same f32 weights (#13's target: own q4's delta over f32 no worse than
# Q4_K_M's). For each model: the f32 GGUF (written by llama.cpp's quantize
# API: `smollm2f16` from SmolLM2's F16 GGUF when .cache/models has it (not
# the released weights: tools/compare-llamacpp.sh writes it from the Q4_1
# file, so its values are Q4_1's too); `smollm2` from the shipped Q4_1 file, so its values
# are Q4_1's; Gemma 3 270M's is .cache/families-gemma3-f32.gguf, from its
# Q4_K_M file), llama.cpp's Q4_K_M made from
# it by llama_model_quantize, and gpt-fast `convert --quant q4` of it. Each is
# scored by `gpt-fast perplexity -c 512` (Q4_K_M kept natively: gpt-fast's
# perplexity on a kept GGUF equals llama.cpp's) on two public texts.
#
# Usage: tools/q4-perplexity.sh [TEXT...]   (default: GPL-3 and GFDL-1.3)
# Files go to $Q4_PERPLEXITY_DIR (default .cache/q4own).
# Not run in CI (minutes of CPU); needs .cache/venv-llamacpp (llama-cpp-python).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=.cache/venv-llamacpp/bin/python
[ -x "$py" ] || { echo "q4-perplexity: $py missing (pip install llama-cpp-python==0.3.36 into .cache/venv-llamacpp)" >&2; exit 1; }
texts=("$@")
[ ${#texts[@]} -gt 0 ] || texts=(/usr/share/common-licenses/GPL-3 /usr/share/common-licenses/GFDL-1.3)
q41=$(tools/fetch-model.sh smollm2)
gemma_f32=.cache/families-gemma3-f32.gguf
[ -f "$gemma_f32" ] || { echo "q4-perplexity: $gemma_f32 missing" >&2; exit 1; }
out=${Q4_PERPLEXITY_DIR:-.cache/q4own}
mkdir -p "$out"
threads=${THREADS:-2}

# f32 and Q4_K_M GGUFs from llama.cpp's own quantize API (kept between runs).
f16=.cache/models/SmolLM2-135M-Instruct.F16.gguf
models=(smollm2 gemma3)
[ -f "$f16" ] && models=(smollm2f16 "${models[@]}")
"$py" - "$q41" "$gemma_f32" "$out" "$f16" <<'PY'
import ctypes, os, sys
import llama_cpp
q41, gemma_f32, out, f16 = sys.argv[1:5]
def quantize(src, dst, ftype):
    if os.path.exists(dst):
        return
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = 2
    tmp = dst + ".tmp"
    if llama_cpp.llama_model_quantize(src.encode(), tmp.encode(), ctypes.byref(params)) != 0:
        sys.exit(f"llama_model_quantize {src} -> {dst} failed")
    os.replace(tmp, dst)
smol_f32 = os.path.join(out, "smollm2-f32.gguf")
quantize(q41, smol_f32, llama_cpp.LLAMA_FTYPE_ALL_F32)
quantize(smol_f32, os.path.join(out, "smollm2-q4_k_m.gguf"), llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M)
quantize(gemma_f32, os.path.join(out, "gemma3-q4_k_m.gguf"), llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M)
if os.path.exists(f16):
    f16_f32 = os.path.join(out, "smollm2f16-f32.gguf")
    quantize(f16, f16_f32, llama_cpp.LLAMA_FTYPE_ALL_F32)
    quantize(f16_f32, os.path.join(out, "smollm2f16-q4_k_m.gguf"), llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M)
PY
ln -sf "$root/$gemma_f32" "$out/gemma3-f32.gguf"

cargo build --release -q --bin gpt-fast
bin=target/release/gpt-fast
ppl() { "$bin" perplexity "$1" -f "$2" -c 512 -t "$threads" 2>&1 | sed -n 's/^PPL = \([0-9.]*\).*/\1/p' | tail -1; }
printf '%-8s %-10s %10s %10s %10s %10s %10s %8s %8s\n' model text f32 q4 Q4_K_M 'q4 d' 'Q4_K_M d' 'q4 MB' 'QKM MB'
for model in "${models[@]}"; do
  f32="$out/$model-f32.gguf"
  "$bin" convert "$f32" --quant f32 -o "$out/$model-f32.gpt" -q
  "$bin" convert "$f32" --quant q4 -o "$out/$model-q4.gpt" -q
  "$bin" info "$out/$model-q4.gpt" | sed -n "s/^bits.weight: */$model q4 bits\/weight: /p"
  "$bin" convert "$out/$model-q4_k_m.gguf" --quant keep -o "$out/$model-q4_k_m.gpt" -q
  for text in "${texts[@]}"; do
    a=$(ppl "$out/$model-f32.gpt" "$text")
    b=$(ppl "$out/$model-q4.gpt" "$text")
    c=$(ppl "$out/$model-q4_k_m.gpt" "$text")
    mb() { echo $(( $(stat -c %s "$1") / 1000000 )); }
    awk -v m="$model" -v t="$(basename "$text")" -v a="$a" -v b="$b" -v c="$c" -v sb="$(mb "$out/$model-q4.gpt")" -v sc="$(mb "$out/$model-q4_k_m.gpt")" \
      'BEGIN { printf "%-8s %-10s %10.4f %10.4f %10.4f %+10.4f %+10.4f %8d %8d\n", m, t, a, b, c, b - a, c - a, sb, sc }'
  done
done
