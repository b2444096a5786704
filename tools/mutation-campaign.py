#!/usr/bin/env python3
"""Issue #18's mutation campaign (not run in CI: it takes hours at full scale).

Mutates a synthetic model file (random byte flips, header fields with the
header CRC recomputed, truncations) and the tiny Llama GGUF (random flips,
huge metadata counts), runs `gpt-fast info` / `gpt-fast verify` on each model
mutant (and `gpt-fast run` on those `info` loads), `gpt-fast-convert` on each
GGUF mutant, and the hostile CLI values of CLI_CASES, each under a 20 s
timeout, and prints a table: tried / refused cleanly / loaded / findings. A
finding is a signal, a panic (exit 101), a timeout, an error of more than one
line, or a peak RSS more than 64 MB over the unmutated input's.

    tools/mutation-campaign.py [N_MODEL] [N_GGUF] [SEED] [--parts cli,model,gguf] [--findings DIR]
Needs the debug binaries (cargo test --no-run, or GPT_FAST_BIN=a copy): overflow checks on.
A part left out of --parts still draws its mutants, so `--parts gguf` with the
same N_MODEL, N_GGUF and SEED runs exactly the GGUF mutants of a full campaign
(to re-run one finding). Each mutant that gives a finding is kept in DIR
(default: the campaign's temporary directory) under its part and number.
"""
import argparse, os, random, re, shutil, struct, subprocess, sys, tempfile, time, zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# GPT_FAST_BIN: a copy of the binaries, so a rebuild during a long campaign is harmless.
BIN = os.environ.get("GPT_FAST_BIN", os.path.join(ROOT, "target", "debug"))
TIMEOUT = 20
RSS_SLACK_KB = 64 * 1024
RUN_ARGS = ["-p", "Hello", "-n", "4", "--temp", "0", "-t", "1"]

ERROR_LINE = re.compile(r"^([\w-]+: )?error: ")
# What clap prints after its one error line.
CLAP_TRAILER = re.compile(r"^($|Usage: |For more information|  tip: )")
MAX_ERROR_CHARS = 1000

def run(cmd):
    """(kind, detail, peak_rss_kb, seconds) with kind in ok / refused / finding. Refused
    cleanly: one error line (at most MAX_ERROR_CHARS, followed by nothing but
    clap's usage trailer); what a command printed before it is its output."""
    start = time.monotonic()
    try:
        p = subprocess.run(["/usr/bin/time", "-f", "RSS %M"] + cmd, capture_output=True, timeout=TIMEOUT, text=True, errors="replace")
    except subprocess.TimeoutExpired:
        return "finding", "timeout", 0, TIMEOUT
    secs = time.monotonic() - start
    lines = p.stderr.rstrip("\n").split("\n")
    rss = int(lines[-1].split()[1]) if lines and lines[-1].startswith("RSS ") else 0
    err = [l for l in lines if not l.startswith("RSS ") and not l.startswith("Command ")]
    if p.returncode == 0:
        return "ok", "", rss, secs
    if p.returncode < 0 or "terminated by signal" in p.stderr:
        return "finding", "signal: " + p.stderr[-200:], rss, secs
    if p.returncode == 101 or "panicked" in p.stderr:
        return "finding", "panic: " + p.stderr[-300:], rss, secs
    first = next((i for i, l in enumerate(err) if ERROR_LINE.match(l)), None)
    if first is None or not all(CLAP_TRAILER.match(l) for l in err[first + 1 :]):
        return "finding", f"not one error line: " + p.stderr[:300], rss, secs
    if len(err[first]) > MAX_ERROR_CHARS:
        return "finding", f"error line of {len(err[first])} characters: " + err[first][:300], rss, secs
    return "refused", err[first], rss, secs

def fix_crc(b):
    data_offset = struct.unpack_from("<Q", b, 24)[0]
    if 16 <= data_offset <= len(b):
        struct.pack_into("<I", b, 12, zlib.crc32(bytes(b[16:data_offset])) & 0xFFFFFFFF)

def header_fields():
    """{name: offset} of the u32/f32 and of the u64 fields of the header,
    read from docs/FORMAT.md's header table (the spec) so they cannot drift
    from it. The CRC is left out: the mutants recompute it."""
    row = re.compile(r"^\| (\d+) \| (u32|f32|u64) \| (\w+) \|")
    fields = {"u32": {}, "u64": {}}
    section = open(os.path.join(ROOT, "docs", "FORMAT.md")).read().split("## Header", 1)[1].split("\n## ", 1)[0]
    for m in filter(None, map(row.match, section.splitlines())):
        if m[3] != "header_crc32":
            fields["u64" if m[2] == "u64" else "u32"][m[3]] = int(m[1])
    assert fields["u32"].get("n_layers") and fields["u64"].get("data_offset"), "FORMAT.md's header table"
    return fields["u32"], fields["u64"]

# f32 fields take the same 32-bit patterns (0xFFFFFFFF is a NaN, 1 << 31 is -0).
HEADER_U32, HEADER_U64 = header_fields()
HUGE = [0, 1, 2, 3, 255, 65535, 1 << 16, 1 << 20, (1 << 24) - 1, 1 << 24, (1 << 24) + 1, 1 << 31, 0xFFFFFFFF]

def model_mutant(rng, orig):
    b = bytearray(orig)
    r = rng.random()
    if r < 0.4:
        name, off = rng.choice(list(HEADER_U32.items()))
        struct.pack_into("<I", b, off, rng.choice(HUGE))
        fix_crc(b)
        return f"header {name}", b
    if r < 0.55:
        name, off = rng.choice(list(HEADER_U64.items()))
        struct.pack_into("<Q", b, off, rng.choice(HUGE + [len(b), len(b) + 4096, 1 << 40, (1 << 64) - 1]))
        fix_crc(b)
        return f"header {name}", b
    if r < 0.8:
        data_offset = struct.unpack_from("<Q", orig, 24)[0]
        at = rng.randrange(16, data_offset)
        b[at] ^= 1 << rng.randrange(8)
        fix_crc(b)
        return "metadata flip (CRC fixed)", b
    if r < 0.9:
        at = rng.randrange(len(b))
        b[at] ^= 1 << rng.randrange(8)
        return "flip (stale CRC)", b
    return "truncate", b[: rng.randrange(len(b))]

def cli_cases(tmp, model, orig):
    """(label, arguments of gpt-fast) for the CLI values issue #18 found
    breaking, plus their neighbours; each must run or be refused in one line."""
    big_ctx = os.path.join(tmp, "big-ctx.gpt")
    b = bytearray(orig)
    struct.pack_into("<I", b, HEADER_U32["max_seq_len"], 1 << 24)
    fix_crc(b)
    open(big_ctx, "wb").write(b)
    short = os.path.join(tmp, "short.txt")
    open(short, "w").write("Hi")
    fifo = os.path.join(tmp, "fifo")
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    run = ["run", model, "-p", "Hello", "--temp", "0"]
    sampled = ["run", model, "-p", "Hello", "-n", "2"]
    cases = [(f"run -n {n}", run + ["-n", n]) for n in ("18446744073709551615", "1000000000", "-2", "-1000000000000")]
    cases += [(f"run -c {c} -n 1000000000", run + ["-c", c, "-n", "1000000000"]) for c in ("8192", "16777216", "1048576", "-1")]
    cases += [(f"run -t {t}", run + ["-n", "4", "-t", t]) for t in ("1000", "0", "4294967296", "-1")]
    cases += [(f"run -f {f}", ["run", model, "-n", "2", "-f", f]) for f in ("/dev/zero", "/dev/urandom", fifo, tmp, "/nonexistent")]
    cases += [(f"run {o} {v}", sampled + [o, v]) for o, v in (("--temp", "nan"), ("--temp", "-1"), ("--temp", "inf"), ("--top-p", "2"),
              ("--top-k", "18446744073709551615"), ("--min-p", "-1"), ("--repeat-last-n", "-5"), ("--repeat-penalty", "nan"),
              ("-s", "18446744073709551616"), ("--json-stats", "/dev/full"), ("--json-stats", tmp), ("-r", ""), ("--kv-type", "q8"))]
    cases += [("run big max_seq_len -c 16777216", ["run", big_ctx, "-p", "Hi", "-n", "2", "-c", "16777216"]),
              ("run big max_seq_len -c 1048576", ["run", big_ctx, "-p", "Hi", "-n", "2", "-c", "1048576"]),
              ("run big max_seq_len", ["run", big_ctx, "-p", "Hi", "-n", "2"]),
              ("perplexity -c 2", ["perplexity", model, "-f", short, "-c", "2"]),
              ("perplexity -c 0", ["perplexity", model, "-f", short, "-c", "0"]),
              ("perplexity -f /dev/zero", ["perplexity", model, "-f", "/dev/zero"]),
              ("info FIFO", ["info", fifo]), ("verify FIFO", ["verify", fifo]), ("run FIFO", ["run", fifo, "-p", "x"]),
              ("info /dev/null", ["info", "/dev/null"]), ("info directory", ["info", tmp]),
              ("bench -p 1000000000", ["bench", model, "-p", "1000000000", "-n", "1"]),
              ("bench -n 18446744073709551615", ["bench", model, "-p", "8", "-n", "18446744073709551615"])]
    return cases

HUGE_U64 = HUGE + [1 << 32, 1 << 40, 1 << 62, (1 << 63) - 1, (1 << 64) - 1]

def gguf_mutant(rng, orig, keys, counts):
    b = bytearray(orig)
    r = rng.random()
    if r < 0.4 and keys:
        key, at = rng.choice(keys)
        struct.pack_into("<I", b, at, rng.choice(HUGE))
        return f"gguf {key}", b
    if r < 0.6:
        # Array elements' string lengths would otherwise crowd out the rest.
        pool = counts if rng.random() < 0.5 else [c for c in counts if c[0] != "string length"]
        what, at = rng.choice(pool)
        value = rng.choice(HUGE_U64 + [len(b) - at, len(b) - at - 8, (len(b) - at) // 4])
        struct.pack_into("<Q", b, at, value)
        return f"gguf count {what}", b
    end = min(len(b), 1 << 16)
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(8, end)
        b[at] = rng.randrange(256)
    return "gguf flip", b

def u32_keys(data):
    """(key, offset of its u32 value) for every u32 metadata entry, and
    (what, offset) of every u64 count: tensor and KV counts, key, string and
    array lengths."""
    keys, pos = [], 24
    counts = [("n_tensors", 8), ("n_kv", 16)]
    n_kv = struct.unpack_from("<Q", data, 16)[0]
    size = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    def skip(ty):
        nonlocal pos
        if ty in size:
            pos += size[ty]
        elif ty == 8:
            counts.append(("string length", pos))
            pos += 8 + struct.unpack_from("<Q", data, pos)[0]
        elif ty == 9:
            et, n = struct.unpack_from("<IQ", data, pos)
            counts.append((f"array length (type {et})", pos + 4))
            pos += 12
            for _ in range(n):
                skip(et)
    for _ in range(n_kv):
        n = struct.unpack_from("<Q", data, pos)[0]
        counts.append(("key length", pos))
        key = data[pos + 8 : pos + 8 + n].decode()
        pos += 8 + n
        ty = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        if ty == 4:
            keys.append((key, pos))
        skip(ty)
    return keys, counts

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n_model", nargs="?", type=int, default=500)
    ap.add_argument("n_gguf", nargs="?", type=int, default=200)
    ap.add_argument("seed", nargs="?", type=int, default=18)
    ap.add_argument("--parts", default="cli,model,gguf")
    ap.add_argument("--findings")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= {"cli", "model", "gguf"}:
        ap.error(f"--parts: {args.parts!r}: cli, model or gguf, comma-separated")
    n_model, n_gguf, rng = args.n_model, args.n_gguf, random.Random(args.seed)
    tmp = tempfile.mkdtemp(prefix="gpt-fast-campaign-")
    model = os.path.join(tmp, "base.gpt")
    subprocess.run([os.path.join(BIN, "gpt-fast-convert"), "-q", "--synthetic", "test-llama", "-o", model], check=True)
    orig = open(model, "rb").read()
    gguf_orig = open(os.path.join(ROOT, "tests/fixtures/hf/tiny-llama.gguf"), "rb").read()
    keys, counts = u32_keys(gguf_orig)
    gguf_base = os.path.join(tmp, "base.gguf")
    open(gguf_base, "wb").write(gguf_orig)
    base_rss = {c: run([os.path.join(BIN, "gpt-fast"), c, model])[2] for c in ("info", "verify")}
    base_rss["run"] = run([os.path.join(BIN, "gpt-fast"), "run", model] + RUN_ARGS)[2]
    base_rss["convert"] = run([os.path.join(BIN, "gpt-fast-convert"), "-q", gguf_base, "-o", os.path.join(tmp, "o.gpt")])[2]
    kept = args.findings or tmp
    os.makedirs(kept, exist_ok=True)
    rows, findings = {}, []
    def record(kind, what, cmd, detail, rss, secs, base, mutant=None):
        if kind != "finding" and rss > base + RSS_SLACK_KB:
            kind, detail = "finding", f"peak RSS {rss} kB vs {base} kB"
        row = rows.setdefault(cmd, [0, 0, 0, 0, 0.0])
        row[0] += 1
        row[{"refused": 1, "ok": 2, "finding": 3}[kind]] += 1
        # How far from the timeout the slowest stayed (a hang shows as a timeout).
        row[4] = max(row[4], secs)
        if kind == "finding":
            if mutant:
                copy = os.path.join(kept, f"finding-{cmd}-{os.path.basename(mutant)}")
                shutil.copyfile(mutant, copy)
                detail += f" (input kept as {copy})"
            findings.append((cmd, what, detail))
    if "cli" in parts:
        for what, cli_args in cli_cases(tmp, model, orig):
            kind, detail, rss, secs = run([os.path.join(BIN, "gpt-fast")] + cli_args)
            record(kind, what, "cli", detail, rss, secs, base_rss["run"])
            print(f"cli {kind:<8} {what}: {detail[:160]}", flush=True)
    for i in range(n_model):
        what, b = model_mutant(rng, orig)
        if "model" not in parts:
            continue
        if i % 500 == 0:
            print(f"model mutant {i}/{n_model}, findings so far: {len(findings)}", flush=True)
        path = os.path.join(tmp, f"model-{i}.gpt")
        open(path, "wb").write(b)
        for c in ("info", "verify"):
            kind, detail, rss, secs = run([os.path.join(BIN, "gpt-fast"), c, path])
            record(kind, what, c, detail, rss, secs, base_rss[c], path)
            # What `info` refuses, `run` refuses at the same open.
            if c == "info" and kind == "ok":
                kind, detail, rss, secs = run([os.path.join(BIN, "gpt-fast"), "run", path] + RUN_ARGS)
                record(kind, what, "run", detail, rss, secs, base_rss["run"], path)
        os.remove(path)
    for i in range(n_gguf):
        what, b = gguf_mutant(rng, gguf_orig, keys, counts)
        if "gguf" not in parts:
            continue
        if i % 500 == 0:
            print(f"gguf mutant {i}/{n_gguf}, findings so far: {len(findings)}", flush=True)
        gpath = os.path.join(tmp, f"gguf-{i}.gguf")
        open(gpath, "wb").write(b)
        out = os.path.join(tmp, "out.gpt")
        kind, detail, rss, secs = run([os.path.join(BIN, "gpt-fast-convert"), "-q", gpath, "-o", out])
        record(kind, what, "convert", detail, rss, secs, base_rss["convert"], gpath)
        os.remove(gpath)
    print(f"{'command':<10} {'tried':>6} {'refused':>8} {'loaded':>7} {'findings':>9} {'slowest s':>10}")
    for cmd, (tried, refused, ok, bad, secs) in rows.items():
        print(f"{cmd:<10} {tried:>6} {refused:>8} {ok:>7} {bad:>9} {secs:>10.1f}")
    for cmd, what, detail in findings[:50]:
        print(f"FINDING {cmd} [{what}]: {detail}")
    leftovers = [f for f in os.listdir(tmp) if ".tmp" in f]
    print("temporary files left:", len(leftovers))
    return 1 if findings else 0

if __name__ == "__main__":
    sys.exit(main())
