"""Drives OpenAI-compatible servers with the `openai` client, side by side
(tools/load-test.sh starts them and says how they were built).

Usage: load_test.py NAME=URL:PID [NAME=URL:PID ...] [--rounds R] [--requests N] [--max-tokens T]

For each server, rounds alternating between the servers (the one that goes
first rotates), so a change in the machine's load hits all:
- throughput at 1 and 8 concurrent streams: each stream a chat completion of
  `DECODE` tokens (ignore_eos, greedy); aggregate tok/s = completion tokens of
  all streams / wall time from the first request to the last stream's end;
- time to first token with 8 streams: request sent to first content chunk,
  p50 over all streams of all rounds.
Then, per server, the bounded load test: N requests from 16 concurrent
clients, mixed streaming and non-streaming, 5% malformed (must get a 4xx and
the server must go on), 5% disconnecting mid-stream (closed after the first
chunks); every other request must succeed with a finish reason. The server's
RSS (VmRSS of PID) is read after a warm-up (the first 10% of the requests)
and at the end.

Prints one table with `uptime`'s load average before and after.
"""

import argparse
import concurrent.futures
import http.client
import json
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

import openai

DECODE = 128
LOAD_MAX_TOKENS = 48
PROMPTS = [
    "Tell me a story about a lighthouse keeper.",
    "Explain how a bicycle stays upright.",
    "Write a poem about autumn leaves.",
    "What makes bread rise?",
    "Describe a walk through a busy market.",
    "Why is the sky blue?",
    "Give me advice for learning to cook.",
    "Summarize the plot of a heist movie you invent.",
]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)


def stream_once(c, prompt, max_tokens, seed):
    """One streamed chat completion on client `c`: (ttft seconds, completion tokens)."""
    start = time.perf_counter()
    ttft = None
    tokens = 0
    chunks = 0
    stream = c.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        seed=seed,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            chunks += 1
            if ttft is None:
                ttft = time.perf_counter() - start
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    # Without usage in the stream, one content chunk a token.
    return ttft, tokens or chunks


def throughput(url, streams):
    # The clients are made before the clock starts: building an `openai`
    # client takes milliseconds of this machine's CPU, which the servers'
    # figures should not pay for.
    clients = [client(url) for _ in range(streams)]
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        start = time.perf_counter()
        results = list(pool.map(lambda i: stream_once(clients[i], PROMPTS[i % len(PROMPTS)], DECODE, i), range(streams)))
        wall = time.perf_counter() - start
    for c in clients:
        c.close()
    tokens = sum(t for _, t in results)
    if tokens != streams * DECODE:
        raise RuntimeError(f"{url}: {tokens} tokens from {streams} streams of {DECODE}")
    return tokens / wall, [t for t, _ in results]


def malformed(url):
    """A bad body: must be answered with a 4xx."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    body = random.choice([b"{not json", b'{"messages": "nope"}', b'{"messages": [], "max_tokens": -3}', b"[]"])
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    status = conn.getresponse().status
    conn.close()
    return 400 <= status < 500


def disconnecting(url, i):
    """A stream closed after its first chunks."""
    c = client(url)
    stream = c.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
        max_tokens=200,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    for n, _ in enumerate(stream):
        if n >= 3:
            break
    stream.close()
    return True


def valid(url, i, max_tokens):
    c = client(url)
    prompt = PROMPTS[i % len(PROMPTS)] + f" (request {i})"
    args = dict(model="m", messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, seed=i)
    if i % 2:
        finish = None
        for chunk in c.chat.completions.create(stream=True, **args):
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        return finish in ("stop", "length")
    r = c.chat.completions.create(**args)
    return r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens > 0


def load_test(url, pid, n, max_tokens):
    kinds = ["malformed"] * (n * 5 // 100) + ["disconnect"] * (n * 5 // 100)
    kinds += ["valid"] * (n - len(kinds))
    random.Random(7).shuffle(kinds)
    failed = {"valid": 0, "malformed": 0, "disconnect": 0}
    done = [0]
    rss = {}
    lock = threading.Lock()

    def one(i):
        kind = kinds[i]
        try:
            ok = {"valid": lambda: valid(url, i, max_tokens), "malformed": lambda: malformed(url),
                  "disconnect": lambda: disconnecting(url, i)}[kind]()
        except Exception as e:  # noqa: BLE001: any failure counts, and is shown
            print(f"  request {i} ({kind}) failed: {type(e).__name__}: {e}", file=sys.stderr)
            ok = False
        with lock:
            if not ok:
                failed[kind] += 1
            done[0] += 1
            if done[0] == n // 10:
                rss["warm"] = rss_kib(pid)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n)))
    wall = time.perf_counter() - start
    time.sleep(1)  # disconnected slots are freed at the next step
    rss["end"] = rss_kib(pid)
    return failed, rss, wall, kinds.count("valid")


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("servers", nargs="+", help="NAME=URL:PID")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-throughput", action="store_true", help="only the load test")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--max-tokens", type=int, default=LOAD_MAX_TOKENS, help="of each valid load-test request")
    a = p.parse_args()
    servers = []
    for spec in a.servers:
        name, rest = spec.split("=", 1)
        url, pid = rest.rsplit(":", 1)
        servers.append((name, url, int(pid)))
    load_before = uptime()
    tps = {name: {1: [], 8: []} for name, _, _ in servers}
    ttft = {name: [] for name, _, _ in servers}
    for name, url, _ in servers:  # warm-up
        if not a.skip_throughput:
            throughput(url, 2)
    for r in range(0 if a.skip_throughput else a.rounds):
        order = servers[r % len(servers):] + servers[:r % len(servers)]
        for name, url, _ in order:
            for streams in (1, 8):
                rate, ttfts = throughput(url, streams)
                tps[name][streams].append(rate)
                if streams == 8:
                    ttft[name] += ttfts
                print(f"round {r + 1} {name}: {streams} streams {rate:.1f} tok/s", file=sys.stderr)
    loads = {}
    for name, url, pid in servers:
        print(f"{name}: load test, {a.requests} requests from 16 clients", file=sys.stderr)
        loads[name] = load_test(url, pid, a.requests, a.max_tokens)
    load_after = uptime()

    print(f"load before: {load_before}")
    print(f"load after:  {load_after}")
    print(f"decode: {DECODE} tokens a stream (ignore_eos, greedy); medians of {a.rounds} rounds")
    names = [n for n, _, _ in servers]
    row = lambda label, cells: print(f"{label:<42}" + "".join(f"{c:>18}" for c in cells))  # noqa: E731
    row("", names)
    if a.skip_throughput:
        tps = {n: {1: [float("nan")], 8: [float("nan")]} for n in names}
        ttft = {n: [float("nan")] for n in names}
    med = {n: {s: statistics.median(tps[n][s]) for s in (1, 8)} for n in names}
    row("aggregate tok/s, 1 stream", [f"{med[n][1]:.1f}" for n in names])
    row("aggregate tok/s, 8 streams", [f"{med[n][8]:.1f}" for n in names])
    row("8 streams / own 1 stream", [f"{med[n][8] / med[n][1]:.2f}x" for n in names])
    row("TTFT p50, 8 streams (ms)", [f"{1000 * statistics.median(ttft[n]):.0f}" for n in names])
    for n in names:
        failed, rss, wall, n_valid = loads[n]
        growth = 100.0 * (rss["end"] - rss["warm"]) / rss["warm"]
        print(f"{n}: {a.requests} requests in {wall:.0f} s: failed valid {failed['valid']}/{n_valid}, "
              f"malformed not refused {failed['malformed']}, disconnects failed {failed['disconnect']}; "
              f"RSS after warm-up {rss['warm'] // 1024} MiB, at end {rss['end'] // 1024} MiB ({growth:+.1f}%)")
    if len(names) == 2:
        a_, b_ = names
        print(f"{a_} / {b_}: 8 streams {med[a_][8] / med[b_][8]:.2f}x, 1 stream {med[a_][1] / med[b_][1]:.2f}x, "
              f"TTFT p50 {statistics.median(ttft[a_]) / statistics.median(ttft[b_]):.2f}x")


if __name__ == "__main__":
    main()
