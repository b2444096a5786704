"""The gpt_fast Python package on SmolLM2-135M-Instruct converted to q8
(tools/python-test.sh makes the file and sets GPT_FAST_TEST_MODEL), checked
against llama.cpp's tokenizer and logits (tests/fixtures, made by
tools/fixtures/*.py with llama-cpp-python)."""

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

import gpt_fast

FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures"


@pytest.fixture(scope="module")
def model():
    return gpt_fast.Model(os.environ["GPT_FAST_TEST_MODEL"], context=512, threads=2)


def fixture(name):
    return json.loads((FIXTURES / name).read_text())


def argmax(values):
    return max(range(len(values)), key=values.__getitem__)


def test_tokenize_is_llama_cpps(model):
    cases = fixture("tokenizer/smollm2.json")
    assert len(cases) >= 200
    wrong = [c for c in cases if model.tokenize(c["text"], add_bos=False, parse_special=c["special"]) != c["ids"]]
    assert not wrong, f"{len(wrong)} of {len(cases)} differ, first: {wrong[0]}"


def test_detokenize_is_llama_cpps(model):
    for case in fixture("tokenizer/smollm2_decode.json")["decode"]:
        want = bytes.fromhex(case["hex"]).decode("utf-8", errors="replace")
        assert model.detokenize(case["ids"]) == want, case["ids"]


def test_logits_are_llama_cpps(model):
    # q8 quantizes weights and activations per block of 32: the budget of
    # tools/tests/smollm2_reference.rs for q8 against llama.cpp's f32.
    for prompt in fixture("smollm2/reference.json")["prompts"]:
        last = prompt["positions"][-1]
        logits = model.logits(prompt["ids"])
        assert len(logits) == model.n_vocab
        assert argmax(logits) == last["argmax"], prompt["text"]
        budget = 0.06 * last["max_abs"]
        for token, want in zip(last["top_ids"], last["top_logits"]):
            assert abs(logits[token] - want) <= budget, (prompt["text"], token, logits[token], want)


def test_greedy_generation_follows_the_logits(model):
    prompt = "The capital of France is"
    ids = model.tokenize(prompt)
    generated = []
    for _ in range(6):
        generated.append(argmax(model.logits(ids + generated)))
    text = model.generate(prompt, max_tokens=6, temperature=0)
    assert text == model.detokenize(generated)
    # The first token is llama.cpp's most likely one.
    reference = fixture("smollm2/reference.json")["prompts"][0]
    assert reference["text"] == prompt
    assert generated[0] == reference["positions"][-1]["argmax"]


def test_a_stream_yields_the_same_text_in_pieces(model):
    prompt = "Write a haiku about the sea."
    pieces = list(model.generate(prompt, max_tokens=24, stream=True, temperature=0))
    assert len(pieces) > 1 and all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == model.generate(prompt, max_tokens=24, temperature=0)
    # Sampled with a seed: the same seed, the same text.
    sampled = [model.generate(prompt, max_tokens=16, temperature=0.9, seed=7) for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_closing_a_stream_stops_the_generation(model):
    stream = model.generate("Count from one to one hundred:", max_tokens=200, stream=True, temperature=0)
    first = [next(stream), next(stream)]
    stream.close()
    rest = list(stream)
    # The pieces already made before the worker saw the flag, then the end.
    assert len(first) + len(rest) < 200
    # The model is free again.
    assert model.generate("Hello", max_tokens=2, temperature=0)


def test_generation_runs_without_the_gil(model):
    """With a switch interval of an hour the GIL changes hands only when its
    holder releases it: the counting thread does at each step (sleep(0)),
    this one only if generate does. Had generate held it, the counter could
    not move during the call."""
    counter = [0]
    done = threading.Event()

    def count():
        while not done.is_set():
            counter[0] += 1
            time.sleep(0)

    old = sys.getswitchinterval()
    sys.setswitchinterval(3600)
    try:
        worker = threading.Thread(target=count)
        worker.start()
        before = counter[0]
        model.generate("The capital of France is", max_tokens=8, temperature=0)
        during = counter[0] - before
        done.set()
    finally:
        done.set()
        sys.setswitchinterval(old)
    worker.join()
    assert during > 0


def test_errors_are_gpt_fast_errors(model):
    with pytest.raises(gpt_fast.Error, match="/no/such/model.bin"):
        gpt_fast.Model("/no/such/model.bin")
    with pytest.raises(gpt_fast.Error):
        model.generate("")
    with pytest.raises(gpt_fast.Error, match="top-p"):
        model.generate("Hi", top_p=2.0)
    with pytest.raises(gpt_fast.Error, match="out of range"):
        model.logits([model.n_vocab])
    with pytest.raises(gpt_fast.Error):
        model.logits([])
    with pytest.raises(gpt_fast.Error):
        model.detokenize([model.n_vocab + 5])
    with pytest.raises(gpt_fast.Error, match="context"):
        gpt_fast.Model(os.environ["GPT_FAST_TEST_MODEL"], context=10**6)
    # Still usable after each.
    assert model.generate("Hi", max_tokens=1, temperature=0) is not None
