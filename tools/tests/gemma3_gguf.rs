//! Real model #2, Gemma 3 270M (Q4_K_M GGUF, fetched by
//! `tools/fetch-model.sh gemma3`): the file parses and every one of its
//! tensors dequantizes bit for bit as the gguf Python package's numpy
//! reference does. The expected values are checksums in
//! `tests/fixtures/gemma3/tensors.json`, written by
//! `tools/fixtures/gemma3_tensors.py` (the checksum is defined there).
//!
//! The file mixes five tensor types (F32, Q8_0, Q5_0, Q4_K, Q6_K); Q5_0 was
//! the one gpt-fast could not read before. The forward pass is not tested here.

use std::path::{Path, PathBuf};
use std::process::Command;

use gpt_fast::import::gguf::GgufFile;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn gemma3() -> GgufFile {
    let out =
        Command::new(root().join("tools/fetch-model.sh")).arg("gemma3").output().expect("run tools/fetch-model.sh");
    assert!(out.status.success(), "fetch-model.sh gemma3: {}", String::from_utf8_lossy(&out.stderr));
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    GgufFile::open(&path).unwrap()
}

/// The fixture's checksum of f32 values (see tools/fixtures/gemma3_tensors.py).
fn checksum(values: &[f32]) -> u64 {
    values.iter().enumerate().fold(0u64, |sum, (i, v)| {
        let weight = (i as u64) % 65521 + 1;
        sum.wrapping_add((u64::from(v.to_bits()) + 1).wrapping_mul(weight))
    })
}

#[test]
fn metadata() {
    let file = gemma3();
    let get = |key: &str| file.get(key).unwrap_or_else(|| panic!("missing {key}"));
    assert_eq!(get("general.architecture").as_str(), Some("gemma3"));
    assert_eq!(get("gemma3.block_count").as_u64(), Some(18));
    assert_eq!(get("gemma3.embedding_length").as_u64(), Some(640));
    assert_eq!(get("gemma3.attention.sliding_window").as_u64(), Some(512));
    assert_eq!(get("tokenizer.ggml.model").as_str(), Some("llama"));
    assert_eq!(get("tokenizer.ggml.tokens").as_array().map(<[_]>::len), Some(262144));
}

#[test]
fn every_tensor_matches_the_reference() {
    let file = gemma3();
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/gemma3/tensors.json")).unwrap())
            .unwrap();
    let expected = fixture["tensors"].as_array().unwrap();
    assert_eq!(file.tensors().len(), expected.len(), "tensor count");
    let mut mismatches = Vec::new();
    for (info, want) in file.tensors().iter().zip(expected) {
        assert_eq!(info.name, want["name"].as_str().unwrap(), "tensor order");
        assert_eq!(info.ty.name(), want["type"].as_str().unwrap(), "{}", info.name);
        let dims: Vec<u64> = want["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        assert_eq!(info.dims, dims, "{}", info.name);
        let values = file.tensor_f32(info).unwrap();
        let non_finite = values.iter().filter(|v| !v.is_finite()).count() as u64;
        assert_eq!(non_finite, want["non_finite"].as_u64().unwrap(), "{}", info.name);
        if checksum(&values) != want["checksum"].as_u64().unwrap() {
            let max_abs = values.iter().filter(|v| v.is_finite()).fold(0f32, |m, v| m.max(v.abs()));
            mismatches.push(format!("{} ({}): max |x| {max_abs} vs {}", info.name, info.ty, want["max_abs"]));
        }
    }
    assert!(mismatches.is_empty(), "{} tensors differ from the reference: {mismatches:#?}", mismatches.len());
    // Every type the file uses was seen (a regression in one would be named above).
    let mut types: Vec<&str> = file.tensors().iter().map(|t| t.ty.name()).collect();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types, ["F32", "Q4_K", "Q5_0", "Q6_K", "Q8_0"]);
}

/// The file has no chat template, so `run --chat` takes the Gemma turn
/// format from its vocabulary: one user turn encodes as BOS,
/// `<start_of_turn>`, "user\n…", `<end_of_turn>`, "\n", `<start_of_turn>`,
/// "model\n".
#[test]
fn chats_in_the_gemma_turn_format() {
    let file = gemma3();
    assert!(file.get("tokenizer.chat_template").is_none(), "the file gained a template: test it instead");
    let spec = gpt_fast::import::tokenizer_import::from_gguf(&file).unwrap();
    let template = gpt_fast::chat::ChatTemplate::for_tokenizer(&spec).unwrap();
    assert_eq!(template.default_name(), Some("gemma"));
    let rendered = template.render(&[gpt_fast::chat::Message::new("user", "Hi")], true).unwrap();
    let prompt = gpt_fast::chat::strip_leading_bos(&rendered, &spec).to_string();
    let tokenizer = gpt_fast::tokenizer::Tokenizer::new(spec).unwrap();
    let ids = tokenizer.encode_prompt(&prompt, true);
    let id = |text: &str| tokenizer.encode_prompt(text, true)[1..].to_vec();
    let (bos, start, end) = (2, id("<start_of_turn>")[0], id("<end_of_turn>")[0]);
    assert_eq!((start, end), (105, 106), "Gemma 3's turn tokens");
    let mut want = vec![bos, start];
    want.extend(id("user\nHi"));
    want.push(end);
    want.extend(id("\n"));
    want.push(start);
    want.extend(id("model\n"));
    assert_eq!(ids, want, "{prompt:?}");
}
