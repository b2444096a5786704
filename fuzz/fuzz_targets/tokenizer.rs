//! The tokenizer on arbitrary input: encode of any bytes (as text, lossy),
//! with and without special-token parsing, and decode of arbitrary ids
//! (including ids past the vocabulary, which must be errors). Two real
//! vocabularies: the tiny Llama's and the tiny GPT-2's test fixtures.
#![no_main]

use std::sync::OnceLock;

use gpt_fast::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

fn load(json: &[u8]) -> Tokenizer {
    let value: serde_json::Value = serde_json::from_slice(json).unwrap();
    Tokenizer::new(gpt_fast::import::tokenizer_import::from_hf_tokenizer_json(&value).unwrap()).unwrap()
}

fn tokenizers() -> &'static [Tokenizer; 2] {
    static TOKENIZERS: OnceLock<[Tokenizer; 2]> = OnceLock::new();
    TOKENIZERS.get_or_init(|| {
        [
            load(include_bytes!("../../tests/fixtures/hf/tiny-llama/tokenizer.json")),
            load(include_bytes!("../../tests/fixtures/hf/tiny-gpt2/tokenizer.json")),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let tokenizer = &tokenizers()[usize::from(which & 1)];
    let text = String::from_utf8_lossy(rest);
    let ids = tokenizer.encode(&text, which & 2 != 0);
    // Without special tokens parsed, byte-level BPE round-trips exactly.
    if which & 2 == 0 {
        let back = tokenizer.decode(&ids).expect("ids from encode decode");
        assert_eq!(back, text, "encode/decode round trip");
    }
    let n = tokenizer.n_vocab() as u32;
    let raw: Vec<u32> = rest.chunks_exact(2).map(|c| u32::from(u16::from_le_bytes([c[0], c[1]]))).collect();
    let decoded = tokenizer.decode(&raw);
    if raw.iter().any(|&id| id >= n) {
        assert!(decoded.is_err(), "an id past the vocabulary decoded");
    }
});
