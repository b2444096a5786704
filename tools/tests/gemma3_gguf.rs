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
