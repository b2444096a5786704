"""First-piece latency of the Python package, warm model, a 16-token prompt:
the counterpart of capi/examples/first_token.rs (same text, threads, context
and greedy sampling); tools/bench-first-token.sh runs the two alternately.

    python bench_first_token.py MODEL [ROUNDS]
"""

import statistics
import sys
import time

import gpt_fast

TEXT = "The quick brown fox jumps over the lazy dog while the farmer walks his cattle home"
PROMPT_TOKENS = 16


def main():
    path = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    model = gpt_fast.Model(path, context=512, threads=2)
    text = model.detokenize(model.tokenize(TEXT)[:PROMPT_TOKENS])
    assert len(model.tokenize(text)) == PROMPT_TOKENS
    samples = []
    # Round 0 warms caches, pages and the pool; it is not counted.
    for round in range(rounds + 1):
        start = time.perf_counter()
        stream = model.generate(text, max_tokens=1, stream=True, temperature=0)
        next(stream)
        elapsed = time.perf_counter() - start
        list(stream)
        if round:
            samples.append(elapsed)
    print(f"first piece, Python  {statistics.median(samples) * 1e3:.2f} ms  ({rounds} rounds, median)")


if __name__ == "__main__":
    main()
