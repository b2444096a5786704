//! ggml's table types: 4-bit codes that index a fixed table of 16 values
//! instead of standing for evenly spaced levels. IQ4_NL and IQ4_XS use a
//! non-linear table fitted to weight distributions; MXFP4 (the OCP
//! microscaling format) uses the FP4 E2M1 values under a power-of-two scale.
//!
//! Layouts from `ggml-common.h`; decoding as in `dequantize_row_iq4_nl`,
//! `dequantize_row_iq4_xs` and `dequantize_row_mxfp4` (`ggml-quants.c`).
//! Nibble order in every type: value `j` of a 32-value group is the low
//! nibble of byte `j` (`j < 16`), value `j + 16` its high nibble.

use half::f16;

use super::kquants::QK_K;

/// Elements per IQ4_NL block.
pub const QK4_NL: usize = 32;
/// Elements per MXFP4 block.
pub const QK_MXFP4: usize = 32;

/// The IQ4_NL / IQ4_XS code book (ggml's `kvalues_iq4nl`).
const IQ4_NL_VALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// The FP4 E2M1 values doubled, so they are integers (ggml's `kvalues_mxfp4`);
/// the block scale is halved to match (see `e8m0_to_f32_half`). Code 8 is
/// E2M1's negative zero, decoded as +0 like ggml does.
const MXFP4_VALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Decodes 32 values whose codes sit in `qs` (nibble order above) as
/// `d * table[code]`.
fn decode_nibbles(table: &[i8; 16], d: f32, qs: &[u8; 16], out: &mut [f32]) {
    let (lo, hi) = out.split_at_mut(16);
    for ((&q, y_lo), y_hi) in qs.iter().zip(lo).zip(hi) {
        *y_lo = d * f32::from(table[usize::from(q & 0x0F)]);
        *y_hi = d * f32::from(table[usize::from(q >> 4)]);
    }
}

/// IQ4_NL: 32 values as 4-bit codes into the IQ4_NL table, one f16 scale;
/// each decodes to `d * table[code]`. 18 bytes.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockIq4Nl {
    /// Scale.
    pub d: f16,
    /// Codes, two per byte.
    pub qs: [u8; QK4_NL / 2],
}

impl BlockIq4Nl {
    /// The block's values in order: the same f32 operations in the same
    /// order as ggml's `dequantize_row_iq4_nl`, so bit-identical to it.
    pub fn dequantize_block(&self, out: &mut [f32; QK4_NL]) {
        decode_nibbles(&IQ4_NL_VALUES, self.d.to_f32(), &self.qs, out);
    }
}

/// IQ4_XS: 256 values in 8 sub-blocks of 32, value = `d * (sc - 32) * table[code]`
/// with IQ4_NL codes and a 6-bit scale per sub-block. 136 bytes.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockIq4Xs {
    /// Super-block scale.
    pub d: f16,
    /// High 2 bits of the sub-block scales: bits `2s..2s+2` for sub-block `s`.
    pub scales_h: u16,
    /// Low 4 bits of the sub-block scales: nibble `s % 2` of byte `s / 2`.
    pub scales_l: [u8; QK_K / 64],
    /// Codes, 16 bytes per sub-block, two per byte.
    pub qs: [u8; QK_K / 2],
}

impl BlockIq4Xs {
    /// The signed scale of sub-block `s` (0..8), stored offset by 32.
    fn scale(&self, s: usize) -> i8 {
        let low = (self.scales_l[s / 2] >> (4 * (s % 2))) & 0x0F;
        let high = ((self.scales_h >> (2 * s)) & 0x03) as u8;
        (low | (high << 4)) as i8 - 32
    }

    /// The block's values in order: the same f32 operations in the same
    /// order as ggml's `dequantize_row_iq4_xs`, so bit-identical to it.
    pub fn dequantize_block(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for ((sub, y), qs) in out.chunks_exact_mut(32).enumerate().zip(self.qs.chunks_exact(16)) {
            let d_sub = d * f32::from(self.scale(sub));
            decode_nibbles(&IQ4_NL_VALUES, d_sub, qs.try_into().expect("chunks_exact(16)"), y);
        }
    }
}

/// MXFP4: 32 FP4 (E2M1) values under one E8M0 (power of two) scale. 17 bytes.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockMxfp4 {
    /// Scale exponent: the scale is `2^(e - 127)`.
    pub e: u8,
    /// E2M1 codes, two per byte.
    pub qs: [u8; QK_MXFP4 / 2],
}

/// Half the E8M0 scale `2^(e - 127)`, as an f32 built from its bits (ggml's
/// `ggml_e8m0_to_fp32_half`): subnormal for `e < 2`. ggml gives `e = 255` (NaN
/// in the OCP spec) the finite value 2^127, and so does this.
fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 { 0x0020_0000u32 << e } else { u32::from(e - 1) << 23 };
    f32::from_bits(bits)
}

impl BlockMxfp4 {
    /// The block's values in order: the same f32 operations in the same
    /// order as ggml's `dequantize_row_mxfp4`, so bit-identical to it.
    pub fn dequantize_block(&self, out: &mut [f32; QK_MXFP4]) {
        decode_nibbles(&MXFP4_VALUES, e8m0_to_f32_half(self.e), &self.qs, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iq4_nl_uses_the_table() {
        let mut qs = [0x88u8; 16]; // code 8 is the table's 1
        qs[1] = 0xF0; // value 1: code 0 (-127); value 17: code 15 (113)
        let block = BlockIq4Nl { d: f16::from_f32(0.5), qs };
        let mut out = [f32::NAN; 32];
        block.dequantize_block(&mut out);
        assert_eq!((out[1], out[17], out[0]), (-63.5, 56.5, 0.5));
    }

    #[test]
    fn iq4_xs_sub_block_scales() {
        let mut block = BlockIq4Xs { d: f16::from_f32(1.0), scales_h: 0, scales_l: [0; 4], qs: [0x88; QK_K / 2] };
        // Sub-block 5: low nibble = high nibble of scales_l[2], high bits = bits 10..12.
        block.scales_l[2] = 0x30;
        block.scales_h = 0b10 << 10;
        assert_eq!(block.scale(5), (0x3 | (0b10 << 4)) - 32);
        block.qs[16 * 5 + 2] = 0x8F; // sub-block 5, value 2: code 15
        let mut out = [f32::NAN; QK_K];
        block.dequantize_block(&mut out);
        assert_eq!(out[5 * 32 + 2], 3.0 * 113.0);
        assert_eq!(out[5 * 32 + 18], 3.0);
        assert_eq!(out[0], -32.0);
    }

    #[test]
    fn mxfp4_scale() {
        assert_eq!(e8m0_to_f32_half(127), 0.5);
        assert_eq!(e8m0_to_f32_half(130), 4.0);
        // Exact powers of two: `2f32.powi(-128)` is 0 when computed at run
        // time (2^128 overflows before the reciprocal), as Miri does; only
        // LLVM's constant folding made it 2^-128 in an optimized build.
        assert_eq!(e8m0_to_f32_half(0), f32::MIN_POSITIVE / 4.0);
        assert_eq!(e8m0_to_f32_half(1), f32::MIN_POSITIVE / 2.0);
        assert_eq!(e8m0_to_f32_half(255), (1u128 << 127) as f32);
        let mut qs = [0u8; 16];
        qs[0] = 0xD7; // value 0: code 7 (12 -> 6.0); value 16: code 13 (-6 -> -3.0)
        let block = BlockMxfp4 { e: 127, qs };
        let mut out = [f32::NAN; 32];
        block.dequantize_block(&mut out);
        assert_eq!((out[0], out[16], out[1]), (6.0, -3.0, 0.0));
    }
}
