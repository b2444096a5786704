//! ggml dequantization against an independent reference: the gguf Python
//! package's numpy decoders (`gguf.quants.dequantize`), whose outputs are
//! committed in tests/fixtures/gguf-dequant/ by tools/fixtures/gguf_dequant.py.
//!
//! Error budget: zero. The numpy reference performs the same f32 operations in
//! the same order as ggml's C reference (`d * q`, `d * q + m`, `(d * sc) * q -
//! dmin * m`, each rounded separately), so every value must match bit for bit,
//! NaN payloads, signed zeros and overflows to infinity (MXFP4's largest
//! exponent) included.

use std::path::PathBuf;

use gpt_fast_quant::ggml::{dequantize, GgmlType};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gguf-dequant").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check(ty: GgmlType) {
    let src = fixture(&format!("{}.bin", ty.name()));
    let expected: Vec<u32> = fixture(&format!("{}.f32", ty.name()))
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(ty.row_bytes(expected.len()), Some(src.len()), "{ty}: fixture sizes disagree");
    let mut got = vec![f32::NAN; expected.len()];
    dequantize(ty, &src, &mut got).unwrap();
    let mismatches: Vec<String> = got
        .iter()
        .zip(&expected)
        .enumerate()
        .filter(|(_, (g, &e))| g.to_bits() != e)
        .map(|(i, (g, &e))| {
            let block = i / ty.block_size();
            format!(
                "[{i}] (block {block}): got {g:e} ({:#010x}), expected {:e} ({e:#010x})",
                g.to_bits(),
                f32::from_bits(e)
            )
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{ty}: {} of {} values differ, first: {:#?}",
        mismatches.len(),
        got.len(),
        &mismatches[..mismatches.len().min(8)]
    );
}

#[test]
fn f32_matches_reference() {
    check(GgmlType::F32);
}

#[test]
fn f16_matches_reference() {
    check(GgmlType::F16);
}

#[test]
fn bf16_matches_reference() {
    check(GgmlType::BF16);
}

#[test]
fn q4_0_matches_reference() {
    check(GgmlType::Q4_0);
}

#[test]
fn q4_1_matches_reference() {
    check(GgmlType::Q4_1);
}

#[test]
fn q8_0_matches_reference() {
    check(GgmlType::Q8_0);
}

#[test]
fn q4_k_matches_reference() {
    check(GgmlType::Q4_K);
}

#[test]
fn q5_k_matches_reference() {
    check(GgmlType::Q5_K);
}

#[test]
fn q6_k_matches_reference() {
    check(GgmlType::Q6_K);
}

#[test]
fn q5_0_matches_reference() {
    check(GgmlType::Q5_0);
}

#[test]
fn q5_1_matches_reference() {
    check(GgmlType::Q5_1);
}

#[test]
fn q2_k_matches_reference() {
    check(GgmlType::Q2_K);
}

#[test]
fn q3_k_matches_reference() {
    check(GgmlType::Q3_K);
}

#[test]
fn iq4_nl_matches_reference() {
    check(GgmlType::IQ4_NL);
}

#[test]
fn iq4_xs_matches_reference() {
    check(GgmlType::IQ4_XS);
}

#[test]
fn tq1_0_matches_reference() {
    check(GgmlType::TQ1_0);
}

#[test]
fn tq2_0_matches_reference() {
    check(GgmlType::TQ2_0);
}

#[test]
fn mxfp4_matches_reference() {
    check(GgmlType::MXFP4);
}

/// Every type gpt-fast reads has a fixture (so a new type cannot skip the
/// reference check).
#[test]
fn every_type_has_a_fixture() {
    for ty in GgmlType::ALL {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gguf-dequant");
        assert!(dir.join(format!("{}.f32", ty.name())).exists(), "{ty}: no fixture");
    }
}

/// Decoding block by block gives the same values as decoding the whole buffer,
/// and a misaligned source slice (as a GGUF tensor inside a mapped file may be)
/// decodes the same.
#[test]
fn blockwise_and_unaligned_decoding_agree() {
    for ty in GgmlType::ALL {
        let src = fixture(&format!("{}.bin", ty.name()));
        let n = src.len() / ty.type_size() * ty.block_size();
        let mut whole = vec![0f32; n];
        dequantize(ty, &src, &mut whole).unwrap();

        let mut shifted = vec![0u8; src.len() + 1];
        shifted[1..].copy_from_slice(&src);
        let mut unaligned = vec![0f32; n];
        dequantize(ty, &shifted[1..], &mut unaligned).unwrap();

        let mut blockwise = vec![0f32; n];
        for (raw, out) in src.chunks_exact(ty.type_size()).zip(blockwise.chunks_exact_mut(ty.block_size())) {
            dequantize(ty, raw, out).unwrap();
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&whole), bits(&unaligned), "{ty}");
        assert_eq!(bits(&whole), bits(&blockwise), "{ty}");
    }
}
