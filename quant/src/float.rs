//! The float dtypes' table entries: f32 and f16, row-major, little-endian.

use half::f16;

use crate::dtype::{ActForm, DTypeTraits};

pub(crate) const F32_TRAITS: DTypeTraits = DTypeTraits {
    id: 0,
    name: "f32",
    block_cols: 1,
    block_bytes: 4,
    row_bytes: None,
    tile_rows: 1,
    precision: 32,
    act: ActForm::F32,
    decode_row: decode_row_f32,
    encode: Some(encode_f32),
    ggml: None,
    repack_ggml: None,
};

pub(crate) const F16_TRAITS: DTypeTraits = DTypeTraits {
    id: 1,
    name: "f16",
    block_cols: 1,
    block_bytes: 2,
    row_bytes: None,
    tile_rows: 1,
    precision: 16,
    act: ActForm::F32,
    decode_row: decode_row_f16,
    encode: Some(encode_f16),
    ggml: None,
    repack_ggml: None,
};

fn encode_f32(_rows: usize, _cols: usize, src: &[f32], dst: &mut [u8]) {
    for (d, v) in dst.chunks_exact_mut(4).zip(src) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

fn encode_f16(_rows: usize, _cols: usize, src: &[f32], dst: &mut [u8]) {
    for (d, &v) in dst.chunks_exact_mut(2).zip(src) {
        d.copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
    }
}

fn decode_row_f32(bytes: &[u8], _rows: usize, cols: usize, row: usize, out: &mut [f32]) {
    let src = &bytes[row * cols * 4..][..cols * 4];
    for (o, b) in out.iter_mut().zip(src.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

fn decode_row_f16(bytes: &[u8], _rows: usize, cols: usize, row: usize, out: &mut [f32]) {
    let src = &bytes[row * cols * 2..][..cols * 2];
    for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    }
}
