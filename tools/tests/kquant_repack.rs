//! The K-quant repacking keeps every weight value: each Q4_K and Q6_K tensor
//! of the real Gemma 3 270M Q4_K_M file (fetched by `tools/fetch-model.sh
//! gemma3`), repacked into gpt-fast's tiles, dequantizes row by row to the bits
//! ggml's decoder gives for the GGUF tensor (which `gemma3_gguf.rs` checks
//! against the gguf Python package). The file has no Q5_K tensor; Q5_K's
//! repacking is covered on random blocks by the quant crate's tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use gpt_fast::import::gguf::{GgufFile, GgufTensorInfo};
use gpt_fast_quant::ggml::GgmlType;
use gpt_fast_quant::kquant::{self, q4_k::Q4K, q6_k::Q6K, KFormat, PackedKLayout};

fn gemma3() -> GgufFile {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(root.join("tools/fetch-model.sh")).arg("gemma3").output().expect("run tools/fetch-model.sh");
    assert!(out.status.success(), "fetch-model.sh gemma3: {}", String::from_utf8_lossy(&out.stderr));
    GgufFile::open(&PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())).unwrap()
}

/// Repacks `info` and compares every row's bits; returns the rows checked.
fn check<F: KFormat>(file: &GgufFile, info: &GgufTensorInfo) -> usize {
    let (cols, rows) = (info.dims[0] as usize, info.dims[1] as usize);
    let want = file.tensor_f32(info).unwrap();
    let layout = PackedKLayout::new::<F>(rows, cols).unwrap();
    let mut packed = vec![0u8; layout.n_bytes()];
    kquant::repack::<F>(file.tensor_bytes(info), &layout, &mut packed);
    let mut row_out = vec![0f32; cols];
    for row in 0..rows {
        kquant::dequantize_row::<F>(&packed, &layout, row, &mut row_out);
        let want = &want[row * cols..][..cols];
        if let Some(i) = (0..cols).find(|&i| row_out[i].to_bits() != want[i].to_bits()) {
            panic!("{} row {row} column {i}: {} vs GGUF {}", info.name, row_out[i], want[i]);
        }
    }
    rows
}

#[test]
fn gemma3_k_quant_tensors_repack_bit_for_bit() {
    let file = gemma3();
    let (mut q4_k, mut q6_k) = (0, 0);
    for info in file.tensors() {
        match info.ty {
            GgmlType::Q4_K => q4_k += check::<Q4K>(&file, info),
            GgmlType::Q6_K => q6_k += check::<Q6K>(&file, info),
            _ => {}
        }
    }
    // 18 attn_output (640 rows) + 9 ffn_down (640 rows) are Q4_K, 9 ffn_down Q6_K.
    assert_eq!((q4_k, q6_k), (27 * 640, 9 * 640), "rows checked per type");
}
