//! The repacking of GGUF's 32-value block types keeps every weight value, on
//! real files (fetched by `tools/fetch-model.sh`): each Q4_1 tensor of
//! SmolLM2-135M-Instruct (the shipped Q4_1 GGUF) and each Q5_0 tensor of
//! Gemma 3 270M Q4_K_M, repacked into gpt-fast's tiles (`quant::q4q5`), and
//! each Q8_0 tensor of both, packed into gpt-fast's q8, dequantize row by row
//! to the bits ggml's decoder gives for the GGUF tensor (which
//! `gemma3_gguf.rs` and `quant/tests/ggml_fixtures.rs` check against the gguf
//! Python package). Neither file has Q4_0 or Q5_1 tensors; those are covered
//! on random blocks by the quant crate's tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use gpt_fast::import::gguf::{GgufFile, GgufTensorInfo};
use gpt_fast_quant::ggml::GgmlType;
use gpt_fast_quant::q4q5::{self, Kind, PackedLayout};
use gpt_fast_quant::q8::{self, PackedQ8Layout};

fn fetch(model: &str) -> GgufFile {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(root.join("tools/fetch-model.sh")).arg(model).output().expect("run tools/fetch-model.sh");
    assert!(out.status.success(), "fetch-model.sh {model}: {}", String::from_utf8_lossy(&out.stderr));
    GgufFile::open(&PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())).unwrap()
}

/// Compares each row `dequantize_row` gives with the GGUF's; returns the rows.
fn compare(info: &GgufTensorInfo, want: &[f32], dequantize_row: impl Fn(usize, &mut [f32])) -> usize {
    let (cols, rows) = (info.dims[0] as usize, info.dims[1] as usize);
    let mut row_out = vec![0f32; cols];
    for row in 0..rows {
        dequantize_row(row, &mut row_out);
        let want = &want[row * cols..][..cols];
        if let Some(i) = (0..cols).find(|&i| row_out[i].to_bits() != want[i].to_bits()) {
            panic!("{} row {row} column {i}: {} vs GGUF {}", info.name, row_out[i], want[i]);
        }
    }
    rows
}

/// Repacks one tensor of a q4q5 kind and compares every row's bits.
fn check_q4q5(file: &GgufFile, info: &GgufTensorInfo, kind: Kind) -> usize {
    let (cols, rows) = (info.dims[0] as usize, info.dims[1] as usize);
    let layout = PackedLayout::new(kind, rows, cols).unwrap();
    let (src, row_bytes) = (file.tensor_bytes(info), layout.gguf_row_bytes());
    let mut packed = vec![0u8; layout.n_bytes()];
    q4q5::pack_rows(&layout, |r| &src[r * row_bytes..][..row_bytes], &mut packed);
    compare(info, &file.tensor_f32(info).unwrap(), |r, out| q4q5::dequantize_row(&packed, &layout, r, out))
}

/// Packs one Q8_0 tensor into q8 and compares every row's bits.
fn check_q8_0(file: &GgufFile, info: &GgufTensorInfo) -> usize {
    let (cols, rows) = (info.dims[0] as usize, info.dims[1] as usize);
    let layout = PackedQ8Layout::new(rows, cols).unwrap();
    let (src, row_bytes) = (file.tensor_bytes(info), cols / 32 * 34);
    let mut packed = vec![0u8; layout.n_bytes()];
    assert!(q8::pack_q8_0_rows(&layout, |r| &src[r * row_bytes..][..row_bytes], &mut packed), "{}: -128", info.name);
    compare(info, &file.tensor_f32(info).unwrap(), |r, out| q8::dequantize_row(&packed, &layout, r, out))
}

/// Tensors checked per type, and their rows.
fn check_file(file: &GgufFile) -> [(GgmlType, usize, usize); 3] {
    let mut counts = [(GgmlType::Q4_1, 0, 0), (GgmlType::Q5_0, 0, 0), (GgmlType::Q8_0, 0, 0)];
    for info in file.tensors().iter().filter(|t| t.dims.len() == 2) {
        let rows = match info.ty {
            GgmlType::Q8_0 => check_q8_0(file, info),
            ty => match Kind::from_ggml(ty) {
                Some(kind) => check_q4q5(file, info, kind),
                None => continue,
            },
        };
        if let Some(c) = counts.iter_mut().find(|c| c.0 == info.ty) {
            c.1 += 1;
            c.2 += rows;
        }
    }
    counts
}

#[test]
fn smollm2_q4_1_and_q8_0_tensors_repack_bit_for_bit() {
    let counts = check_file(&fetch("smollm2"));
    // 30 layers × 7 matrices are Q4_1 (5184 rows a layer); token_embd is Q8_0.
    let want = [(GgmlType::Q4_1, 210, 30 * 5184), (GgmlType::Q5_0, 0, 0), (GgmlType::Q8_0, 1, 49152)];
    assert_eq!(counts, want, "tensors and rows checked per type");
}

#[test]
fn gemma3_q5_0_and_q8_0_tensors_repack_bit_for_bit() {
    let counts = check_file(&fetch("gemma3"));
    let [(_, q4_1, _), (_, q5_0, _), (_, q8_0, _)] = counts;
    assert_eq!((q4_1, q5_0, q8_0), (0, 81, 10), "tensors checked per type: {counts:?}");
}
