"""`gpt-fast serve` driven by the real `openai` client (and raw HTTP where the
client would refuse to send a bad request). Run by tools/serve-test.sh.

Checks: non-streaming and streaming chat give the same text (greedy); text
completions with log-probabilities; usage counts; error bodies (malformed
JSON, wrong types, a prompt longer than the context naming both numbers, a
body over the limit); a client that disconnects mid-stream frees its slot;
4 and 8 concurrent streams each give exactly what the same request gives alone.
"""

import concurrent.futures
import http.client
import json
import sys
import time

import openai

BASE = sys.argv[1]  # http://127.0.0.1:PORT
HOST, PORT = BASE.removeprefix("http://").split(":")
client = openai.OpenAI(base_url=BASE + "/v1", api_key="none", max_retries=0, timeout=300)
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def raw(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(HOST, int(PORT), timeout=300)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), data


def metric(name):
    _, _, body = raw("GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


CHAT = [{"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Name three colours."}]

# Non-streaming and streaming, greedy: the same text.
whole = client.chat.completions.create(model="m", messages=CHAT, max_tokens=24, temperature=0)
text = whole.choices[0].message.content
check(len(text) > 0, f"chat completion text: {text!r}")
check(whole.choices[0].finish_reason in ("stop", "length"), f"finish_reason {whole.choices[0].finish_reason}")
check(whole.usage.prompt_tokens > 10 and 0 < whole.usage.completion_tokens <= 24, f"usage {whole.usage}")
check(whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens, "total_tokens")
chunks = list(client.chat.completions.create(model="m", messages=CHAT, max_tokens=24, temperature=0, stream=True,
                                             stream_options={"include_usage": True}))
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check(streamed == text, f"streamed text equals the whole one: {streamed!r}")
check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens,
      "the last streamed chunk carries the usage")
# The same conversation again: its prompt is already in a slot's cache.
again = client.chat.completions.create(model="m", messages=CHAT, max_tokens=24, temperature=0)
cached = again.usage.prompt_tokens_details.cached_tokens if again.usage.prompt_tokens_details else 0
check(again.choices[0].message.content == text, "a repeated request gives the same text")
check(cached >= again.usage.prompt_tokens - 1, f"a repeated prompt reuses the cached prefix ({cached} cached)")

# Text completions with log-probabilities.
comp = client.completions.create(model="m", prompt="The capital of France is", max_tokens=5, temperature=0,
                                 logprobs=3)
lp = comp.choices[0].logprobs
check(len(lp.tokens) == comp.usage.completion_tokens == len(lp.token_logprobs), "one log-probability per token")
check(all(v <= 0 for v in lp.token_logprobs), "log-probabilities are <= 0")
check(all(len(t) == 3 for t in lp.top_logprobs), "three alternatives per token")
# Greedy: each chosen token is the most likely one.
check(all(abs(max(t.values()) - v) < 1e-5 for t, v in zip(lp.top_logprobs, lp.token_logprobs)),
      "greedy picks the top alternative")

# Errors: OpenAI-style bodies.
status, _, body = raw("POST", "/v1/chat/completions", b"{not json")
check(status == 400 and "not valid JSON" in json.loads(body)["error"]["message"], f"malformed JSON: {status}")
try:
    client.chat.completions.create(model="m", messages=CHAT, temperature="hot")
    check(False, "a string temperature is refused")
except openai.BadRequestError as e:
    check(e.status_code == 400 and "invalid type" in e.message, f"wrong type: {e.message}")
try:
    client.completions.create(model="m", prompt="word " * 5000, max_tokens=4)
    check(False, "a prompt longer than the context is refused")
except openai.BadRequestError as e:
    check("tokens but the context holds" in e.message, f"prompt too long: {e.message}")
status, _, body = raw("POST", "/v1/completions", b'{"prompt": "' + b"x" * 100_000 + b'"}')
check(status == 413 and json.loads(body)["error"]["type"] == "invalid_request_error", f"body over the limit: {status}")
status, _, body = raw("GET", "/v1/models")
check(status == 200 and json.loads(body)["data"][0]["object"] == "model", "GET /v1/models")

# A client that disconnects mid-stream frees its slot: the stream could run
# to the full context (ignore_eos), but stops soon after the client is gone.
generated = metric("gpt_fast_generated_tokens_total")
conn = http.client.HTTPConnection(HOST, int(PORT), timeout=300)
conn.request("POST", "/v1/completions", body=json.dumps(
    {"prompt": "Once upon a time", "max_tokens": 2000, "stream": True, "ignore_eos": True, "seed": 1}))
r = conn.getresponse()
check(r.readline().startswith(b"data: "), "a stream starts")
r.readline()
r.readline()
conn.sock.shutdown(2)
conn.close()
deadline = time.time() + 120
while metric("gpt_fast_active_slots") > 0 and time.time() < deadline:
    time.sleep(0.1)
ran = metric("gpt_fast_generated_tokens_total") - generated
check(metric("gpt_fast_active_slots") == 0 and ran < 900, f"the disconnected stream's slot is freed after {ran:.0f} tokens")

# 4 and then 8 concurrent streams (the server has 8 slots: one batched
# forward a step for all of them), sampled with their own seeds: each alone
# first, then together; the text (and every log-probability) must not change.
def stream(i):
    out = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": f"Tell me a fact about the number {i}."}],
        max_tokens=32 + 3 * i, temperature=0.9, seed=100 + i, stream=True, logprobs=True)
    text, lps = "", []
    for c in out:
        if c.choices:
            text += c.choices[0].delta.content or ""
            if c.choices[0].logprobs and c.choices[0].logprobs.content:
                lps += [t.logprob for t in c.choices[0].logprobs.content]
    return text, lps


alone = [stream(i) for i in range(8)]
for i in range(8):
    check(len(alone[i][0]) > 0, f"stream {i} alone: {alone[i][0]!r}")
for n in (4, 8):
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        together = list(pool.map(stream, range(n)))
    for i in range(n):
        check(together[i] == alone[i], f"stream {i} of {n} is bit-identical with neighbours")
print(f"{len(failures)} failed")
sys.exit(1 if failures else 0)
