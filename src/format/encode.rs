//! f32 values to a tensor's stored bytes and back: the one place that knows how
//! each dtype lays out its data.

use gpt_fast_quant::q8::{self, PackedQ8Layout};
use half::f16;

use super::spec::DType;

/// Encodes a row-major `[rows, cols]` f32 tensor as `dtype` into `out`
/// (cleared first). Panics if `data` is not `rows * cols` long or q8 is asked
/// of a shape it cannot hold: callers check shapes against the spec first.
pub fn encode_tensor(dtype: DType, rows: usize, cols: usize, data: &[f32], out: &mut Vec<u8>) {
    assert_eq!(data.len(), rows * cols, "tensor data does not match its shape");
    out.clear();
    match dtype {
        DType::F32 => out.extend_from_slice(bytemuck::cast_slice(data)),
        DType::F16 => out.extend(data.iter().flat_map(|&v| f16::from_f32(v).to_bits().to_le_bytes())),
        DType::Q8 => {
            let layout = PackedQ8Layout::new(rows, cols).expect("q8 shape checked by the caller");
            out.resize(layout.n_bytes(), 0);
            q8::quantize_packed(data, &layout, out);
        }
    }
}

/// Decodes row `row` of a stored `[rows, cols]` tensor into `out` (`cols` values).
pub fn decode_row(dtype: DType, bytes: &[u8], rows: usize, cols: usize, row: usize, out: &mut [f32]) {
    assert!(row < rows && out.len() == cols, "row {row} of [{rows}, {cols}]");
    match dtype {
        DType::F32 => {
            let src = &bytes[row * cols * 4..][..cols * 4];
            for (o, b) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        DType::F16 => {
            let src = &bytes[row * cols * 2..][..cols * 2];
            for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        DType::Q8 => {
            let layout = PackedQ8Layout::new(rows, cols).expect("validated q8 shape");
            q8::dequantize_row(bytes, &layout, row, out);
        }
    }
}

/// Decodes a whole stored tensor to row-major f32.
pub fn decode_tensor(dtype: DType, bytes: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    if cols > 0 {
        for (r, chunk) in out.chunks_exact_mut(cols).enumerate() {
            decode_row(dtype, bytes, rows, cols, r, chunk);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dtype_round_trips_within_its_precision() {
        let (rows, cols) = (9, 64);
        let data: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let mut bytes = Vec::new();
        for (dtype, tol) in [(DType::F32, 0.0), (DType::F16, 1e-3), (DType::Q8, 2.0 / 127.0)] {
            encode_tensor(dtype, rows, cols, &data, &mut bytes);
            assert_eq!(bytes.len() as u64, dtype.n_bytes(rows as u64, cols as u64).unwrap());
            let back = decode_tensor(dtype, &bytes, rows, cols);
            for (a, b) in data.iter().zip(&back) {
                assert!((a - b).abs() <= tol, "{dtype:?}: {a} vs {b}");
            }
        }
    }
}
