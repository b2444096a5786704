#!/usr/bin/env python3
"""Issue #18's mutation campaign at a smaller scale (not run in CI).

Mutates a synthetic model file (random byte flips, header fields with the
header CRC recomputed, truncations) and the tiny Llama GGUF (random flips,
huge metadata counts), runs `gpt-fast info` / `gpt-fast verify` on each model
mutant and `gpt-fast-convert` on each GGUF mutant under a 20 s timeout, and
prints a table: tried / refused cleanly / loaded / findings. A finding is a
signal, a panic (exit 101), a timeout, an error of more than one line, or a
peak RSS more than 64 MB over the unmutated input's.

    tools/mutation-campaign.py [N_MODEL] [N_GGUF] [SEED]
Needs the test-profile binaries (cargo test --no-run, or cargo build --profile test).
"""
import os, random, struct, subprocess, sys, tempfile, zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "debug")
TIMEOUT = 20
RSS_SLACK_KB = 64 * 1024

def run(cmd):
    """(kind, detail, peak_rss_kb) with kind in ok / refused / finding."""
    try:
        p = subprocess.run(["/usr/bin/time", "-f", "RSS %M"] + cmd, capture_output=True, timeout=TIMEOUT, text=True, errors="replace")
    except subprocess.TimeoutExpired:
        return "finding", "timeout", 0
    lines = p.stderr.rstrip("\n").split("\n")
    rss = int(lines[-1].split()[1]) if lines and lines[-1].startswith("RSS ") else 0
    err = [l for l in lines if not l.startswith("RSS ") and not l.startswith("Command ")]
    if p.returncode == 0:
        return "ok", "", rss
    if p.returncode < 0 or "terminated by signal" in p.stderr:
        return "finding", "signal: " + p.stderr[-200:], rss
    if p.returncode == 101 or "panicked" in p.stderr:
        return "finding", "panic: " + p.stderr[-300:], rss
    if len(err) != 1:
        return "finding", f"{len(err)} lines: " + p.stderr[:300], rss
    return "refused", err[0], rss

def fix_crc(b):
    data_offset = struct.unpack_from("<Q", b, 24)[0]
    if 16 <= data_offset <= len(b):
        struct.pack_into("<I", b, 12, zlib.crc32(bytes(b[16:data_offset])) & 0xFFFFFFFF)

# Header fields (offset, format) of docs/FORMAT.md's 256-byte header.
HEADER_U32 = {"arch": 72, "n_layers": 76, "dim": 80, "n_heads": 84, "n_kv_heads": 88, "head_dim": 92,
              "ffn_dim": 96, "vocab_size": 100, "max_seq_len": 104, "flags": 116, "weight_dtype": 120}
HEADER_U64 = {"file_len": 16, "data_offset": 24, "dir_offset": 32, "n_tensors": 40, "tok_offset": 48, "tok_len": 56}
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

def gguf_mutant(rng, orig, keys):
    b = bytearray(orig)
    if rng.random() < 0.5 and keys:
        key, at = rng.choice(keys)
        struct.pack_into("<I", b, at, rng.choice(HUGE))
        return f"gguf {key}", b
    end = min(len(b), 1 << 16)
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(8, end)
        b[at] = rng.randrange(256)
    return "gguf flip", b

def u32_keys(data):
    """(key, offset of its u32 value) for every u32 metadata entry."""
    keys, pos = [], 24
    n_kv = struct.unpack_from("<Q", data, 16)[0]
    size = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    def skip(ty):
        nonlocal pos
        if ty in size:
            pos += size[ty]
        elif ty == 8:
            pos += 8 + struct.unpack_from("<Q", data, pos)[0]
        elif ty == 9:
            et, n = struct.unpack_from("<IQ", data, pos)
            pos += 12
            for _ in range(n):
                skip(et)
    for _ in range(n_kv):
        n = struct.unpack_from("<Q", data, pos)[0]
        key = data[pos + 8 : pos + 8 + n].decode()
        pos += 8 + n
        ty = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        if ty == 4:
            keys.append((key, pos))
        skip(ty)
    return keys

def main():
    n_model = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    n_gguf = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 18)
    tmp = tempfile.mkdtemp(prefix="gpt-fast-campaign-")
    model = os.path.join(tmp, "base.gpt")
    subprocess.run([os.path.join(BIN, "gpt-fast-convert"), "-q", "--synthetic", "test-llama", "-o", model], check=True)
    orig = open(model, "rb").read()
    gguf_orig = open(os.path.join(ROOT, "tests/fixtures/hf/tiny-llama.gguf"), "rb").read()
    keys = u32_keys(gguf_orig)
    gguf_base = os.path.join(tmp, "base.gguf")
    open(gguf_base, "wb").write(gguf_orig)
    base_rss = {c: run([os.path.join(BIN, "gpt-fast"), c, model])[2] for c in ("info", "verify")}
    base_rss["convert"] = run([os.path.join(BIN, "gpt-fast-convert"), "-q", gguf_base, "-o", os.path.join(tmp, "o.gpt")])[2]
    rows, findings = {}, []
    def record(kind, what, cmd, detail, rss, base):
        if kind != "finding" and rss > base + RSS_SLACK_KB:
            kind, detail = "finding", f"peak RSS {rss} kB vs {base} kB"
        row = rows.setdefault(cmd, [0, 0, 0, 0])
        row[0] += 1
        row[{"refused": 1, "ok": 2, "finding": 3}[kind]] += 1
        if kind == "finding":
            findings.append((cmd, what, detail))
    path = os.path.join(tmp, "m.gpt")
    for _ in range(n_model):
        what, b = model_mutant(rng, orig)
        open(path, "wb").write(b)
        for c in ("info", "verify"):
            kind, detail, rss = run([os.path.join(BIN, "gpt-fast"), c, path])
            record(kind, what, c, detail, rss, base_rss[c])
    gpath = os.path.join(tmp, "m.gguf")
    for _ in range(n_gguf):
        what, b = gguf_mutant(rng, gguf_orig, keys)
        open(gpath, "wb").write(b)
        out = os.path.join(tmp, "out.gpt")
        kind, detail, rss = run([os.path.join(BIN, "gpt-fast-convert"), "-q", gpath, "-o", out])
        record(kind, what, "convert", detail, rss, base_rss["convert"])
    print(f"{'command':<10} {'tried':>6} {'refused':>8} {'loaded':>7} {'findings':>9}")
    for cmd, (tried, refused, ok, bad) in rows.items():
        print(f"{cmd:<10} {tried:>6} {refused:>8} {ok:>7} {bad:>9}")
    for cmd, what, detail in findings[:20]:
        print(f"FINDING {cmd} [{what}]: {detail}")
    leftovers = [f for f in os.listdir(tmp) if ".tmp" in f]
    print("temporary files left:", len(leftovers))
    return 1 if findings else 0

if __name__ == "__main__":
    sys.exit(main())
