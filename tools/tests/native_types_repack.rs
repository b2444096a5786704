//! `convert --quant keep` changes no weight value, for every GGUF type it
//! keeps: each matrix of each file below goes through the per-dtype table's
//! `repack_ggml` (what `convert` runs) and dequantizes, row by row through
//! the table's `decode_row`, to the bits ggml's decoder gives for the GGUF
//! tensor (checked against the gguf Python package by quant/tests/ggml_fixtures.rs).
//!
//! Files: the two fetched models (Q4_1 + Q8_0; Q4_K + Q5_0 + Q6_K + Q8_0),
//! always; and, where tools/fixtures/native_types_llamacpp.py has written
//! them into .cache/native-types/, SmolLM2 requantized by llama.cpp to every
//! mix of llama-quantize that gpt-fast keeps (which adds Q4_0, Q5_1 and
//! Q5_K). The test names what it checked and what it could not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use gpt_fast::format::DType;
use gpt_fast::import::gguf::GgufFile;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn fetched(model: &str) -> PathBuf {
    let out = Command::new(root().join("tools/fetch-model.sh")).arg(model).output().expect("run tools/fetch-model.sh");
    assert!(out.status.success(), "fetch-model.sh {model}: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Repacks every kept matrix of `path` and compares each row's bits; adds
/// the rows checked per GGUF type name to `rows`.
fn check_file(path: &Path, rows_per_type: &mut BTreeMap<String, usize>) {
    let file = GgufFile::open(path).unwrap();
    for info in file.tensors().iter().filter(|t| t.dims.len() == 2) {
        let Some(dtype) = DType::from_ggml(info.ty) else { continue };
        let (cols, rows) = (info.dims[0] as usize, info.dims[1] as usize);
        let repack = dtype.traits().repack_ggml.unwrap();
        let mut packed = vec![0u8; dtype.n_bytes(rows as u64, cols as u64).unwrap() as usize];
        assert!(repack(file.tensor_bytes(info), rows, cols, &mut packed), "{}: {} refused", info.name, dtype.name());
        let want = file.tensor_f32(info).unwrap();
        let mut row_out = vec![0f32; cols];
        for row in 0..rows {
            dtype.decode_row(&packed, rows, cols, row, &mut row_out);
            let want = &want[row * cols..][..cols];
            if let Some(i) = (0..cols).find(|&i| row_out[i].to_bits() != want[i].to_bits()) {
                panic!("{}: {} row {row} column {i}: {} vs GGUF {}", path.display(), info.name, row_out[i], want[i]);
            }
        }
        *rows_per_type.entry(format!("{:?}", info.ty)).or_default() += rows;
    }
}

#[test]
fn kept_weights_are_the_ggufs_values_bit_for_bit() {
    let mut files = vec![fetched("smollm2"), fetched("gemma3")];
    let native = root().join(".cache/native-types");
    let requantized: Vec<PathBuf> = std::fs::read_dir(&native)
        .map(|dir| {
            let mut v: Vec<PathBuf> = dir
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "gguf") && !p.to_string_lossy().contains(".F32."))
                .collect();
            v.sort();
            v
        })
        .unwrap_or_default();
    if requantized.is_empty() {
        println!("only the fetched models: {} is made by tools/fixtures/native_types_llamacpp.py", native.display());
    }
    files.extend(requantized);
    let mut rows = BTreeMap::new();
    for path in &files {
        check_file(path, &mut rows);
    }
    println!("rows checked bit for bit, per GGUF type, over {} files: {rows:?}", files.len());
    // The fetched models alone cover these; the requantized files add the rest.
    for ty in ["Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q6_K"] {
        assert!(rows.get(ty).is_some_and(|&r| r > 0), "{ty} not checked: {rows:?}");
    }
    let every_kept = DType::ALL.iter().filter(|d| d.traits().repack_ggml.is_some()).count();
    if files.len() > 2 {
        assert_eq!(rows.len(), every_kept, "every kept GGUF type is checked: {rows:?}");
    }
}
