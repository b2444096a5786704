//! ggml's ternary types for BitNet-style models: every value is `-1`, `0` or
//! `+1` times one f16 scale per 256-value block.
//!
//! Layouts from `ggml-common.h`; decoding as in `dequantize_row_tq1_0` and
//! `dequantize_row_tq2_0` (`ggml-quants.c`).

use half::f16;

use super::kquants::QK_K;

/// Bytes of TQ1_0's five-trits-per-byte quants (the first 240 values).
const TQ1_0_QS: usize = (QK_K - 4 * QK_K / 64) / 5;

/// TQ1_0: 256 ternary values packed five (and, for the last 16, four) per byte
/// as base-3 fixed-point fractions; ~1.69 bits per value. 54 bytes.
///
/// A byte `b` holds trits `t0 t1 t2 t3 t4` as `b = ceil(256 * 0.t0t1t2t3t4 (base 3))`,
/// so trit `n` is the integer part of `3 * frac(b * 3^n / 256)`: ggml computes
/// it as `((b * 3^n mod 256) * 3) >> 8`. Value order: trit `n` of `qs[m]` for
/// `m < 32` is value `32n + m`; trit `n` of `qs[32 + m]` (`m < 16`) is value
/// `160 + 16n + m`; trit `n` of `qh[j]` (four trits each) is value `240 + 4n + j`.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockTq1_0 {
    /// Five trits per byte.
    pub qs: [u8; TQ1_0_QS],
    /// Four trits per byte.
    pub qh: [u8; QK_K / 64],
    /// Scale.
    pub d: f16,
}

/// Trit `n` of a packed byte, as `-1`, `0` or `1`.
fn trit(byte: u8, n: u32) -> i8 {
    // The multiplication wraps on purpose: it drops the trits before `n`.
    let shifted = byte.wrapping_mul(3u8.pow(n));
    ((u16::from(shifted) * 3) >> 8) as i8 - 1
}

impl BlockTq1_0 {
    /// The block's values in order: the same f32 operations in the same
    /// order as ggml's `dequantize_row_tq1_0`, so bit-identical to it.
    pub fn dequantize_block(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let (head, rest) = out.split_at_mut(160);
        let (middle, tail) = rest.split_at_mut(80);
        let groups: [(&mut [f32], &[u8], u32); 3] =
            [(head, &self.qs[..32], 5), (middle, &self.qs[32..], 5), (tail, &self.qh, 4)];
        for (out, bytes, n_trits) in groups {
            for (n, out) in (0..n_trits).zip(out.chunks_exact_mut(bytes.len())) {
                for (y, &b) in out.iter_mut().zip(bytes) {
                    *y = f32::from(trit(b, n)) * d;
                }
            }
        }
    }
}

/// TQ2_0: 256 ternary values as 2-bit codes `q` (value `q - 1`), four per
/// byte, under one f16 scale. 66 bytes.
///
/// Value `128h + 32k + m` (half `h`, quarter `k`) is bits `2k..2k+2` of
/// `qs[32h + m]`, the same placement as Q2_K's quants.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockTq2_0 {
    /// Codes, four per byte.
    pub qs: [u8; QK_K / 4],
    /// Scale.
    pub d: f16,
}

impl BlockTq2_0 {
    /// The block's values in order: the same f32 operations in the same
    /// order as ggml's `dequantize_row_tq2_0`, so bit-identical to it.
    pub fn dequantize_block(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for (v, y) in out.iter_mut().enumerate() {
            let byte = self.qs[32 * (v / 128) + v % 32];
            let q = ((byte >> (2 * ((v % 128) / 32))) & 3) as i8;
            *y = f32::from(q - 1) * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packs five trits (each -1, 0 or 1) into a byte the way ggml's quantizer does.
    fn pack(trits: &[i8]) -> u8 {
        let fraction = trits.iter().fold(0u16, |acc, &t| acc * 3 + (t + 1) as u16);
        let scale = 3u16.pow(5 - trits.len() as u32);
        let fraction = fraction * scale;
        (fraction * 256).div_ceil(243) as u8
    }

    #[test]
    fn trits_round_trip() {
        let trits = [1, -1, 0, 1, 1];
        let b = pack(&trits);
        let got: Vec<i8> = (0..5).map(|n| trit(b, n)).collect();
        assert_eq!(got, trits);
    }

    #[test]
    fn tq1_0_value_order() {
        let mut block = BlockTq1_0 { qs: [pack(&[0; 5]); TQ1_0_QS], qh: [pack(&[0; 4]); 4], d: f16::from_f32(2.0) };
        block.qs[3] = pack(&[0, 0, 1, 0, 0]); // value 32 * 2 + 3
        block.qs[32 + 5] = pack(&[0, -1, 0, 0, 0]); // value 160 + 16 + 5
        block.qh[2] = pack(&[0, 0, 0, 1]); // value 240 + 12 + 2
        let mut out = [f32::NAN; QK_K];
        block.dequantize_block(&mut out);
        assert_eq!((out[67], out[181], out[254]), (2.0, -2.0, 2.0));
        assert_eq!(out.iter().filter(|&&y| y != 0.0).count(), 3);
    }

    #[test]
    fn tq2_0_codes() {
        let mut block = BlockTq2_0 { qs: [0b01_01_01_01; QK_K / 4], d: f16::from_f32(0.5) };
        block.qs[32 + 7] = 0b01_10_01_00; // second half, value 7: quarter 0 -> -1, quarter 2 -> +1
        let mut out = [f32::NAN; QK_K];
        block.dequantize_block(&mut out);
        assert_eq!((out[128 + 7], out[128 + 64 + 7], out[0]), (-0.5, 0.5, 0.0));
    }
}
