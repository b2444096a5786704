#!/usr/bin/env bash
# gpt-fast against llama.cpp and ik_llama.cpp on SmolLM2-135M-Instruct, same
# weights, same machine, same threads. Not part of CI (slow, and its figures
# depend on the machine's load).
#
# llama.cpp is the PyPI package llama-cpp-python==0.3.36 (it builds llama.cpp
# from source into .cache/venv-llamacpp, once). The Q4_1 GGUF from
# tools/fetch-model.sh is requantized with llama.cpp's own quantize API to
# Q8_0 and F16, and `convert` turns those same GGUFs into gpt-fast q8 and f16
# files, so every engine runs the same values. q4_1 is the Q4_1 GGUF itself,
# converted with `--quant keep` (its Q4_1 matrices stay q4_1, its Q8_0
# embedding q8): every engine runs its 4.5-bit weights natively.
#
# ik_llama.cpp (the llama.cpp fork known for the fastest CPU prompt
# processing) is built from a source snapshot in .cache/ik_llama.cpp-src
# (IK_LLAMA_SRC to point elsewhere; nothing of it is in this repository): its
# llama-bench, with cmake from the llama.cpp venv, into .cache/ik_llama.cpp-build
# (-avx2 for `-i avx2`), once. It runs the same GGUFs with run-time repacking
# on (`-rtr 1`: Q8_0 to its row-interleaved Q8_0_R8, its fastest CPU path).
# Without the snapshot the column is left out, with a note saying how to get
# one (`git clone https://github.com/ikawrakow/ik_llama.cpp`).
#
# Tests follow llama-bench: ppN evaluates N tokens in one batch from an empty
# cache, tgN decodes N tokens one at a time from an empty cache; tokenization
# and sampling are excluded; each test is warmed up once. Runs alternate
# between the engines (which goes first rotates round by round), so a change
# in the machine's load hits all; a ratio is the median of the per-round
# ratios (each round's is printed too: one bad round should show, not hide).
#
# tgN @ dD (-d) decodes N tokens after a D-token prompt, timing only the N
# (llama-bench's `-d D`, ik_llama.cpp's `-gp D,N`). llama.cpp and
# ik_llama.cpp run it with flash attention off and on and the faster counts:
# the peer at its best at that depth (llama-bench's default `-fa auto` picks
# on on a CPU; llama-cpp-python's default is off).
#
# "start to first token": gpt-fast is `gpt-fast run -n 1 --temp 0` timed from
# process start to exit; llama.cpp is model load + tokenize + prompt eval +
# greedy token inside a Python process that has already imported llama_cpp.
#
# Usage: tools/compare-llamacpp.sh [-t THREADS[,THREADS...]] [-q QUANTS] [-r ROUNDS] [-i avx2] [-d DEPTHS]
#   -t  thread counts (default 2)
#   -q  weight types, of q4_1, q8, f16 (default q4_1,q8,f16), and the other
#       mixes of llama-quantize that gpt-fast keeps natively: q4_0, q5_0,
#       q5_1, q8_0, q4_k_m, q5_k_m, q6_k (llama.cpp requantizes an F32
#       dequantization of the Q4_1 file; gpt-fast converts with --quant keep)
#   -r  rounds (default 3)
#   -i  avx2: every engine limited to AVX2 + FMA + F16C on a CPU that has
#       more (AVX-512, VNNI, AMX), to stand in for an AVX2-only machine:
#       llama.cpp and ik_llama.cpp are built a second time with their native
#       tuning off (.cache/venv-llamacpp-avx2, .cache/ik_llama.cpp-build-avx2)
#       and gpt-fast runs with GPT_FAST_ISA=avx2.
#   -d  depths for tg64 @ dD, comma-separated (default none: 4096 adds a
#       4096-token prompt evaluation per engine, round and thread count)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
threads=2
rounds=3
isa=native
quants=q4_1,q8,f16
depths=""
while getopts "t:q:r:i:d:h" opt; do
  case $opt in
    t) threads=$OPTARG ;;
    q) quants=$OPTARG ;;
    r) rounds=$OPTARG ;;
    i) isa=$OPTARG ;;
    d) depths=$OPTARG ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
IFS=, read -r -a thread_list <<<"$threads"
IFS=, read -r -a quant_list <<<"$quants"
IFS=, read -r -a depth_list <<<"$depths"
for depth in "${depth_list[@]}"; do
  [[ $depth =~ ^[1-9][0-9]*$ ]] || { echo "-d: expected positive token counts, got '$depth'" >&2; exit 2; }
done

for quant in "${quant_list[@]}"; do
  case $quant in
    q4_1 | q8 | f16 | q4_0 | q5_0 | q5_1 | q8_0 | q4_k_m | q5_k_m | q6_k) ;;
    *) echo "-q: unknown weight type '$quant'" >&2; exit 2 ;;
  esac
done

case $isa in
  native)
    venv="$root/.cache/venv-llamacpp"
    ik_build="$root/.cache/ik_llama.cpp-build"
    cmake_args=""
    ik_cmake_args="-DGGML_NATIVE=ON" ;;
  avx2)
    venv="$root/.cache/venv-llamacpp-avx2"
    ik_build="$root/.cache/ik_llama.cpp-build-avx2"
    cmake_args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    cmake_args+=" -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF"
    cmake_args+=" -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
    # ik_llama.cpp's names for the same switches (AVXVNNI, VBMI; no AMX).
    ik_cmake_args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    ik_cmake_args+=" -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVXVNNI=OFF"
    export GPT_FAST_ISA=avx2 ;;
  *) echo "-i: expected avx2, got '$isa'" >&2; exit 2 ;;
esac
py="$venv/bin/python"
if ! "$py" -c 'import llama_cpp, sys; sys.exit(llama_cpp.__version__ != "0.3.36")' 2>/dev/null; then
  echo "building llama-cpp-python 0.3.36 into $venv (compiles llama.cpp: several minutes)" >&2
  [ -x "$py" ] || python3 -m venv "$venv"
  # --no-cache-dir: a wheel cached from the other build would skip CMAKE_ARGS.
  CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL=2 "$venv/bin/pip" install -q --no-cache-dir \
    "llama-cpp-python==0.3.36" numpy
fi

ik_src="${IK_LLAMA_SRC:-$root/.cache/ik_llama.cpp-src}"
ik_bench="$ik_build/bin/llama-bench"
if [ ! -x "$ik_bench" ] && [ -f "$ik_src/CMakeLists.txt" ]; then
  echo "building ik_llama.cpp's llama-bench from $ik_src into $ik_build (several minutes)" >&2
  "$venv/bin/pip" install -q cmake ninja
  # A CMake error goes to the terminal; the compiler's chatter does not.
  "$venv/bin/cmake" -S "$ik_src" -B "$ik_build" -G Ninja -DCMAKE_MAKE_PROGRAM="$venv/bin/ninja" \
    -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF $ik_cmake_args >/dev/null
  "$venv/bin/cmake" --build "$ik_build" --target llama-bench -j 2 >/dev/null
fi
if [ ! -x "$ik_bench" ]; then
  echo "note: no ik_llama.cpp source at $ik_src (git clone https://github.com/ikawrakow/ik_llama.cpp there, or set IK_LLAMA_SRC): its column is left out" >&2
  ik_bench=""
fi

echo "building gpt-fast (release)" >&2
(cd "$root" && cargo build --release --quiet -p gpt-fast -p gpt-fast-tools --bin gpt-fast --bin gpt-fast-convert)
bin="${CARGO_TARGET_DIR:-$root/target}/release"

models="$root/.cache/models"
q41=$("$root/tools/fetch-model.sh")
work=$(mktemp -d "${TMPDIR:-/tmp}/compare-llamacpp.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Requantize with llama.cpp's own API (cached): Q8_0 and F16 next to the
# downloaded GGUF, from it; the other mixes of llama-quantize into
# .cache/native-types/ from an F32 dequantization of it, as
# tools/fixtures/native_types_llamacpp.py makes them (the same files).
"$py" - "$q41" "$models" "$root/.cache/native-types" "${quant_list[@]}" 2>"$work/quantize.log" <<'PY' || { cat "$work/quantize.log" >&2; exit 1; }
import ctypes, os, sys
import llama_cpp
src, models, native, quants = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]

def quantize(src, out, ftype):
    if os.path.exists(out):
        return
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = 2
    tmp = out + ".tmp"
    if llama_cpp.llama_model_quantize(src.encode(), tmp.encode(), ctypes.byref(params)) != 0:
        sys.exit(f"llama_model_quantize to {out} failed")
    os.replace(tmp, out)
    print(f"wrote {out}")

for name, ftype in [("Q8_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0), ("F16", llama_cpp.LLAMA_FTYPE_MOSTLY_F16)]:
    quantize(src, os.path.join(models, f"SmolLM2-135M-Instruct.{name}.gguf"), ftype)
mixes = [q.upper() for q in quants if q not in ("q4_1", "q8", "f16")]
if mixes:
    os.makedirs(native, exist_ok=True)
    f32 = os.path.join(native, "SmolLM2-135M-Instruct.F32.gguf")
    quantize(src, f32, llama_cpp.LLAMA_FTYPE_ALL_F32)
    for mix in mixes:
        quantize(f32, os.path.join(native, f"SmolLM2-135M-Instruct.{mix}.gguf"), getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{mix}"))
PY

# The same GGUFs, converted for gpt-fast (rewritten every run: a few seconds,
# and always from the current converter).
declare -A gguf_of gf_of
for quant in "${quant_list[@]}"; do
  flag=keep
  case $quant in
    q8) gguf_of[$quant]="$models/SmolLM2-135M-Instruct.Q8_0.gguf" flag=q8 ;;
    f16) gguf_of[$quant]="$models/SmolLM2-135M-Instruct.F16.gguf" flag=f16 ;;
    q4_1) gguf_of[$quant]=$q41 ;;
    *) gguf_of[$quant]="$root/.cache/native-types/SmolLM2-135M-Instruct.${quant^^}.gguf" ;;
  esac
  gf_of[$quant]="$work/smollm2-$quant.bin"
  "$bin/gpt-fast-convert" "${gguf_of[$quant]}" -o "${gf_of[$quant]}" --quant "$flag" --quiet
done

# Some VMs advertise AMX in CPUID without enabling it: llama.cpp's AMX buffer
# type (used for Q8_0 batches) then dies with SIGILL on `tilezero`. Probe a
# two-token Q8_0 batch in a child process; if it dies, load llama.cpp with its
# extra buffer types (AMX and weight repacking) off, for every run, and say so.
extra_bufts=1
if ! { "$py" - "$models/SmolLM2-135M-Instruct.Q8_0.gguf" <<'PY'; } >/dev/null 2>&1; then
import sys
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, n_threads_batch=1, verbose=False)
llm.eval([1, 2])
PY
  extra_bufts=0
  echo "note: llama.cpp's Q8_0 batch path crashed (AMX advertised but not usable here?): running llama.cpp with use_extra_bufts=false (no AMX, no weight repacking)" >&2
fi

prompt="The quick brown fox jumps over the lazy dog, and then it runs into the forest"
results="$work/results.tsv" # engine quant threads test round tokens_per_second
load_start=$(cat /proc/loadavg)

# One llama.cpp process per quant, thread count and round: pp128, pp512, tg64
# (each warmed up once), then a fresh load + first token.
llama_round() { # quant threads round
  "$py" - "${gguf_of[$1]}" "$2" "$1" "$3" "$prompt" "$extra_bufts" "$depths" <<'PY' >>"$results"
import sys, time
import llama_cpp
import numpy as np
path, threads, quant, rnd, prompt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
depths = [int(d) for d in sys.argv[7].split(",") if d]
if sys.argv[6] == "0":
    # Llama() takes no such option: patch the defaults it starts from.
    defaults = llama_cpp.llama_cpp.llama_model_default_params
    def no_extra_bufts():
        p = defaults()
        p.use_extra_bufts = False
        return p
    llama_cpp.llama_cpp.llama_model_default_params = no_extra_bufts
    llama_cpp.llama.llama_cpp.llama_model_default_params = no_extra_bufts

def make(n_ctx=1024, flash_attn=False):
    return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=threads,
                           n_threads_batch=threads, logits_all=False, flash_attn=flash_attn, verbose=False)

llm = make()
vocab = llm.n_vocab()
# The same in-range ids as gpt-fast's bench (the content does not change the cost).
ids = lambda n: [((i * 2654435761) % 2**32 >> 7) % vocab for i in range(n)]

def pp(n):
    toks = ids(n)
    llm.reset()
    t = time.perf_counter()
    llm.eval(toks)
    return n / (time.perf_counter() - t)

def tg(n):
    toks = ids(n)
    llm.reset()
    t = time.perf_counter()
    for tok in toks:
        llm.eval([tok])
    return n / (time.perf_counter() - t)

for name, run, n in [("pp128", pp, 128), ("pp512", pp, 512), ("tg64", tg, 64)]:
    run(n)  # warm-up
    print(f"llama.cpp\t{quant}\t{threads}\t{name}\t{rnd}\t{run(n):.3f}")
del llm

def tg_at_depth(depth, n, flash_attn):
    deep = make(n_ctx=depth + n + 64, flash_attn=flash_attn)
    toks = ids(depth + n)
    deep.eval(toks[:depth])  # untimed, in n_batch pieces
    t = time.perf_counter()
    for tok in toks[depth:]:
        deep.eval([tok])
    return n / (time.perf_counter() - t)

for depth in depths:
    best = max(tg_at_depth(depth, 64, fa) for fa in (False, True))
    print(f"llama.cpp\t{quant}\t{threads}\ttg64 @ d{depth}\t{rnd}\t{best:.3f}")

t = time.perf_counter()
llm = make()
toks = llm.tokenize(prompt.encode(), add_bos=False, special=False)
llm.eval(toks)
# Greedy: argmax of the last position's logits (the only ones kept without logits_all).
first = int(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,)).argmax())
print(f"llama.cpp\t{quant}\t{threads}\tfirst_token_s({len(toks)} tok)\t{rnd}\t{time.perf_counter() - t:.4f}")
PY
}

# ik_llama.cpp's llama-bench: pp128, pp512 and tg64 in one process, each
# warmed up once, one repetition.
ik_round() { # quant threads round
  [ -n "$ik_bench" ] || return 0
  "$ik_bench" -m "${gguf_of[$1]}" -p 128,512 -n 64 -t "$2" -r 1 -rtr 1 -o csv 2>/dev/null |
    "$py" -c '
import csv, sys
quant, threads, rnd = sys.argv[1:4]
for r in csv.DictReader(sys.stdin):
    n_prompt, n_gen, tps = r["n_prompt"], r["n_gen"], float(r["avg_ts"])
    test = f"pp{n_prompt}" if n_gen == "0" else f"tg{n_gen}"
    print(f"ik_llama.cpp\t{quant}\t{threads}\t{test}\t{rnd}\t{tps:.3f}")
' "$1" "$2" "$3" >>"$results"
  local depth
  for depth in "${depth_list[@]}"; do
    # -gp D,64: 64 tokens timed after a D-token prompt; flash attention off and on, the faster counts.
    "$ik_bench" -m "${gguf_of[$1]}" -p 0 -n 0 -gp "$depth,64" -fa 0,1 -t "$2" -r 1 -rtr 1 -o csv 2>/dev/null |
      "$py" -c '
import csv, sys
quant, threads, rnd, depth = sys.argv[1:5]
best = max(float(r["avg_ts"]) for r in csv.DictReader(sys.stdin))
print(f"ik_llama.cpp\t{quant}\t{threads}\ttg64 @ d{depth}\t{rnd}\t{best:.3f}")
' "$1" "$2" "$3" "$depth" >>"$results"
  done
}

gptfast_round() { # quant threads round
  local depth_runs=()
  [ -z "$depths" ] || depth_runs=(-d "$depths")
  { "$bin/gpt-fast" bench "${gf_of[$1]}" -p 128,512 -n 64 -r 1 -t "$2" --json
    [ -z "$depths" ] || "$bin/gpt-fast" bench "${gf_of[$1]}" -p 0 -n 64 "${depth_runs[@]}" -r 1 -t "$2" --json
  } |
    "$py" -c '
import json, sys
quant, threads, rnd = sys.argv[1:4]
for line in sys.stdin:
    r = json.loads(line)
    if "tokens_per_second" not in r:
        continue  # the read loop (each tg row gives its share of it as "roofline")
    test, tps, depth = r["test"], r["tokens_per_second"], r.get("depth", 0)
    if depth:
        test = f"{test} @ d{depth}"  # the name the peers get
    print(f"gpt-fast\t{quant}\t{threads}\t{test}\t{rnd}\t{tps:.3f}")
    share = r.get("roofline")
    if share is not None and not depth:
        print(f"roofline\t{quant}\t{threads}\t{test}\t{rnd}\t{share:.4f}")
' "$1" "$2" "$3" >>"$results"
  local t0 t1
  t0=$(date +%s.%N)
  "$bin/gpt-fast" run "${gf_of[$1]}" -p "$prompt" -n 1 --temp 0 -t "$2" >/dev/null 2>&1
  t1=$(date +%s.%N)
  "$py" -c 'import sys; print(f"gpt-fast\t{sys.argv[1]}\t{sys.argv[2]}\t{sys.argv[3]}\t{sys.argv[4]}\t{float(sys.argv[6]) - float(sys.argv[5]):.4f}")' \
    "$1" "$2" "first_token_s" "$3" "$t0" "$t1" >>"$results"
}

for ((round = 1; round <= rounds; round++)); do
  for quant in "${quant_list[@]}"; do
    for t in "${thread_list[@]}"; do
      echo "round $round/$rounds: $quant, $t threads" >&2
      engines=(llama_round gptfast_round ik_round)
      for ((e = 0; e < 3; e++)); do
        "${engines[(e + round) % 3]}" "$quant" "$t" "$round"
      done
    done
  done
done
load_end=$(cat /proc/loadavg)

# One core's streaming read rate, for scale (numpy's single-threaded sum of 512 MiB).
read_gbps=$("$py" -c '
import time, numpy as np
a = np.arange((512 << 20) // 8, dtype=np.uint64)
best = min((lambda t: (a.sum(), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(5))
print(f"{a.nbytes / best / 1e9:.1f}")')

"$py" - "$results" "$rounds" "$load_start" "$load_end" "$read_gbps" "$extra_bufts" "$isa" <<'PY'
import collections, statistics, sys
path, rounds, load_start, load_end, read_gbps, extra_bufts, isa = sys.argv[1:8]
runs = collections.defaultdict(dict)  # (quant, threads, test) -> {(engine, round): value}
roofline = collections.defaultdict(list)  # (quant, threads, test) -> gpt-fast's share of its read loop
for line in open(path):
    engine, quant, threads, test, rnd, value = line.rstrip("\n").split("\t")
    test = test.split("(")[0]
    if engine == "roofline":
        roofline[(quant, int(threads), test)].append(float(value))
    else:
        runs[(quant, int(threads), test)][(engine, int(rnd))] = float(value)
print(f"SmolLM2-135M-Instruct, {rounds} rounds; llama-cpp-python 0.3.36, ik_llama.cpp (llama-bench, -rtr 1) and gpt-fast; instruction sets: {isa}")
print(f"load average at start: {load_start}")
if extra_bufts == "0":
    print("llama.cpp ran with use_extra_bufts=false (its AMX path crashes on this machine): no AMX, no weight repacking")
print(f"load average at end:   {load_end}")
print(f"single-thread read (numpy sum, 512 MiB): {read_gbps} GB/s")
print()
print("| quant | threads | test | llama.cpp (mean ± sd) | ik_llama.cpp (mean ± sd) | gpt-fast (mean ± sd) "
      "| gpt-fast / llama.cpp: median (each round) | gpt-fast / ik_llama.cpp: median (each round) |")
print("|---|---|---|---|---|---|---|---|")
order = {"pp128": 0, "pp512": 1, "tg64": 2, "first_token_s": 9}
sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0

def versus(r, other, digits):
    """(other's mean ± sd, median of gpt-fast / other per round), or dashes when other did not run."""
    both = sorted(n for (e, n) in r if e == other and ("gpt-fast", n) in r)
    if not both:
        return "—", "—"
    theirs = [r[(other, n)] for n in both]
    ratios = [r[("gpt-fast", n)] / t for n, t in zip(both, theirs)]
    each = " ".join(f"{v:.2f}" for v in ratios)
    return f"{statistics.mean(theirs):.{digits}f} ± {sd(theirs):.{digits}f}", f"{statistics.median(ratios):.2f} ({each})"

for (quant, threads, test) in sorted(runs, key=lambda k: ({"q4_1": 0, "q4_0": 1, "q4_k_m": 2, "q8": 5}.get(k[0], 4), k[1], order.get(k[2], 2 + int(k[2].partition("@ d")[2] or 0) / 1e6))):
    r = runs[(quant, threads, test)]
    # Seconds for the first token (lower is better; the ratio is still gpt-fast / other), else t/s.
    digits, label = (3, "start to first token (s)") if test == "first_token_s" else (1, f"{test} (t/s)")
    ours = [v for (e, _), v in r.items() if e == "gpt-fast"]
    llama, vs_llama = versus(r, "llama.cpp", digits)
    ik, vs_ik = versus(r, "ik_llama.cpp", digits)
    print(f"| {quant} | {threads} | {label} | {llama} | {ik} | {statistics.mean(ours):.{digits}f} ± {sd(ours):.{digits}f} "
          f"| {vs_llama} | {vs_ik} |")
print()
print("gpt-fast decode as a share of a plain read loop's bandwidth, same thread count, measured in the same bench run:")
for (quant, threads, test), shares in sorted(roofline.items()):
    each = " ".join(f"{v:.0%}" for v in shares)
    print(f"- {quant} {threads} threads {test}: median {statistics.median(shares):.0%} ({each})")
PY
