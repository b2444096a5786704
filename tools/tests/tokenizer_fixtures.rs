//! gpt-fast's tokenizer against llama.cpp on the real SmolLM2 vocabulary.
//!
//! The fixtures in `tests/fixtures/tokenizer/` come from
//! `tools/fixtures/tokenizer_fixtures.py` (llama-cpp-python 0.3.36); the GGUF
//! is the one `tools/fetch-model.sh` fetches (run here, as the GGUF reader's
//! tests do).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;

use gpt_fast::import::gguf::GgufFile;
use gpt_fast::import::tokenizer_import::{from_gguf, from_hf_tokenizer_json};
use gpt_fast::tokenizer::{PreTokenizer, StreamDecoder, TokenType, Tokenizer};
use serde_json::Value;

/// Counts this thread's allocations, to check the steady-state paths.
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator; the
// thread-local counter is const-initialised, so touching it never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The SmolLM2 tokenizer, imported from the GGUF the way `convert` does.
fn smollm2() -> Tokenizer {
    let script = root().join("tools/fetch-model.sh");
    let out = Command::new(script).output().expect("run tools/fetch-model.sh");
    assert!(out.status.success(), "fetch-model.sh: {}", String::from_utf8_lossy(&out.stderr));
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let file = GgufFile::open(&path).unwrap();
    let spec = from_gguf(&file).unwrap();
    Tokenizer::new(spec).unwrap()
}

fn fixture(name: &str) -> Value {
    let path = root().join("tests/fixtures/tokenizer").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn import_reads_smollm2_metadata() {
    let tok = smollm2();
    let spec = tok.spec();
    assert_eq!(spec.pre, PreTokenizer::SmolLm);
    assert_eq!(spec.tokens.len(), 49152);
    assert_eq!(spec.merges.len(), 48900);
    assert_eq!(spec.tokens[1], b"<|im_start|>");
    assert_eq!(spec.token_types.iter().filter(|&&t| t == TokenType::Control).count(), 17);
    // "Ġt" in the file is " t" here.
    assert_eq!(tok.token_bytes(spec.merges[0][2]), Some(&b" t"[..]));
    assert!(spec.chat_template.contains("<|im_start|>"));
}

#[test]
fn encodes_like_llama_cpp() {
    let tok = smollm2();
    let cases = fixture("smollm2.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 200);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let special = case["special"].as_bool().unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let got = tok.encode(text, special);
        if got != want {
            failures.push(format!("{text:?} special={special}\n  want {want:?}\n   got {got:?}"));
        }
        // Round trip, less the bytes SmolLM2 has no token for (llama.cpp
        // drops them too).
        let spellable: Vec<u8> = text.bytes().filter(|&b| tok.byte_token(b).is_some()).collect();
        let bytes: Vec<u8> = got.iter().flat_map(|&id| tok.token_bytes(id).unwrap().to_vec()).collect();
        assert_eq!(bytes, spellable, "round trip of {text:?}");
        if spellable.len() == text.len() {
            assert_eq!(tok.decode(&got).unwrap(), text);
        }
    }
    assert!(failures.is_empty(), "{} of {} differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// The Hugging Face import path against Hugging Face `tokenizers` itself, on
/// the tiny Llama fixture's `tokenizer.json` (SmolLM2's pre-tokenizer, a
/// 352-token vocabulary, so merges stop early and most text stays bytes).
#[test]
fn hf_import_encodes_like_hf_tokenizers() {
    let json = fixture("../hf/tiny-llama/tokenizer.json");
    let tok = Tokenizer::new(from_hf_tokenizer_json(&json).unwrap()).unwrap();
    assert_eq!(tok.spec().pre, PreTokenizer::SmolLm);
    let cases = fixture("tiny_llama_hf.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 200);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        // `tokenizers` always matches special added tokens.
        let got = tok.encode(text, true);
        if got != want {
            failures.push(format!("{text:?}\n  want {want:?}\n   got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn decodes_like_llama_cpp() {
    let tok = smollm2();
    let data = fixture("smollm2_decode.json");
    for case in data["decode"].as_array().unwrap() {
        let ids: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let hex = case["hex"].as_str().unwrap();
        let want: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let got: Vec<u8> = ids.iter().flat_map(|&id| tok.token_bytes(id).unwrap().to_vec()).collect();
        assert_eq!(got, want, "{ids:?}");
        assert_eq!(tok.decode(&ids).unwrap(), String::from_utf8_lossy(&want));
        let mut dec = StreamDecoder::new();
        let mut out = String::new();
        for &id in &ids {
            dec.push(&tok, id, &mut out).unwrap();
        }
        dec.finish(&mut out);
        assert_eq!(out, String::from_utf8_lossy(&want));
    }
}

#[test]
fn steady_state_does_not_allocate() {
    let tok = smollm2();
    let text = "<|im_start|>user\nDon't split 12,345 or 😀👍🏽 or 中文 — résumé!\n  <|im_end|>\n";
    assert_eq!(encode_decode_without_allocating(&tok, text), text);
}

/// Encodes `text` twice (the first call warms the cache and scratch) and
/// stream-decodes the ids, asserting that the second encode and the decode
/// allocate nothing; returns the decoded text.
fn encode_decode_without_allocating(tok: &Tokenizer, text: &str) -> String {
    let mut ids = Vec::with_capacity(1024);
    tok.encode_into(text, true, &mut ids);
    let want = ids.clone();
    ids.clear();
    let before = allocations();
    tok.encode_into(text, true, &mut ids);
    assert_eq!(allocations() - before, 0, "encode_into allocated");
    assert_eq!(ids, want);

    let mut out = String::with_capacity(1024);
    let mut dec = StreamDecoder::new();
    let before = allocations();
    for &id in &ids {
        dec.push(tok, id, &mut out).unwrap();
    }
    dec.finish(&mut out);
    assert_eq!(allocations() - before, 0, "StreamDecoder allocated");
    out
}

/// The same steady-state check for SentencePiece, on llama.cpp's Llama 2
/// test vocabulary (cached by tools/fetch-llamacpp-src.sh; skipped loudly
/// without it): decoding reads the piece table, encoding reuses its buffers.
#[test]
fn sentencepiece_steady_state_does_not_allocate() {
    let path = root().join(".cache/llama-cpp-python-0.3.36/vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf");
    if !path.is_file() {
        eprintln!("\n*** SKIPPED: {} missing; run tools/fetch-llamacpp-src.sh\n", path.display());
        return;
    }
    let tok = Tokenizer::new(from_gguf(&GgufFile::open(&path).unwrap()).unwrap()).unwrap();
    let text = "<s>Don't split 12,345 or 😀👍🏽 or 中文 — résumé!\n  ok";
    // The stream keeps the space prefix the encoder added after <s>.
    assert_eq!(encode_decode_without_allocating(&tok, text), text.replacen("<s>", "<s> ", 1));
}
