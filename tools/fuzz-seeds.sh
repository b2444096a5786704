#!/usr/bin/env bash
# Seed corpora for the fuzz targets, generated from the repository's real
# fixtures (nothing binary is committed under fuzz/): synthetic model files
# written by the converter, the tiny Llama GGUF, the tiny HF models' JSON, the
# tokenizer fixtures' texts, and llama.cpp's chat templates. Idempotent; writes fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=fuzz/corpus
mkdir -p "$corpus"/{model_file,gguf,hf_json,tokenizer,chat_template,server_request}
cargo build -q --profile test -p gpt-fast-tools --bin gpt-fast-convert
convert=target/debug/gpt-fast-convert
for config in test-llama test-gpt2; do
  for quant in q8 f16; do
    out="$corpus/model_file/$config-$quant"
    [ -s "$out" ] || "$convert" -q --synthetic "$config" --quant "$quant" -o "$out"
  done
done
cp tests/fixtures/hf/tiny-llama.gguf "$corpus/gguf/tiny-llama.gguf"
for model in tiny-llama tiny-gpt2; do
  dir=tests/fixtures/hf/$model
  { cat "$dir/config.json"; printf '\0'; cat "$dir/tokenizer.json"; } > "$corpus/hf_json/$model"
done
# Tokenizer inputs: a selector byte (which vocabulary, special tokens or not)
# then text; the fixtures' JSON is plenty of varied text.
for f in tests/fixtures/tokenizer/*.json; do
  for sel in 0 1 2 3; do
    { printf "\\x0$sel"; head -c 4000 "$f"; } > "$corpus/tokenizer/$(basename "$f" .json)-$sel"
  done
done
# Chat templates: each of llama.cpp's templates, a NUL, then a conversation
# (turns separated by NUL, role SOH content), as the target reads its input.
templates="$(tools/fetch-llamacpp-src.sh)/models/templates"
for f in "$templates"/*.jinja; do
  { cat "$f"; printf '\0system\1Be brief.\0user\1Hello!\0assistant\1Hi.\0user\1What is 2+2?'; } \
    > "$corpus/chat_template/$(basename "$f" .jinja)"
done
# Request bodies: a selector byte (0: chat, 1: completions) then JSON in the
# shapes the openai client sends (tools/serve/openai_client_test.py).
printf '\x00{"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "stream": true, "stream_options": {"include_usage": true}, "temperature": 0.7, "top_p": 0.9, "max_tokens": 16, "stop": ["\\n"], "seed": 3, "logprobs": true, "top_logprobs": 2, "presence_penalty": 0.5, "n": 1}' > "$corpus/server_request/chat"
printf '\x01{"model": "m", "prompt": ["Once upon a time"], "max_tokens": 8, "logprobs": 3, "frequency_penalty": 0.2, "stop": "."}' > "$corpus/server_request/completions"
