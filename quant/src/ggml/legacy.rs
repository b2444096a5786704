//! ggml's original 32-element block types: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.
//!
//! Layouts from `ggml-common.h`; decoding as in `dequantize_row_q4_0`,
//! `dequantize_row_q4_1`, `dequantize_row_q5_0`, `dequantize_row_q5_1` and
//! `dequantize_row_q8_0` (`ggml-quants.c`).

use half::f16;

/// Elements per Q4_0 block.
pub const QK4_0: usize = 32;
/// Elements per Q4_1 block.
pub const QK4_1: usize = 32;
/// Elements per Q5_0 block.
pub const QK5_0: usize = 32;
/// Elements per Q5_1 block.
pub const QK5_1: usize = 32;
/// Elements per Q8_0 block.
pub const QK8_0: usize = 32;

/// Q4_0: 32 values as 4-bit unsigned quants around 8, one f16 scale.
///
/// Value `j < 16` is the low nibble of `qs[j]`, value `j + 16` its high nibble;
/// each decodes to `(nibble - 8) * d`. 18 bytes.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Quants, two per byte: first half of the block low, second half high.
    pub qs: [u8; QK4_0 / 2],
}

impl BlockQ4_0 {
    /// The block's values in order: the same f32 operations in the same
    /// order as ggml's `dequantize_row_q4_0`, so bit-identical to it.
    pub fn dequantize_block(&self, out: &mut [f32; QK4_0]) {
        let d = self.d.to_f32();
        let (lo, hi) = out.split_at_mut(QK4_0 / 2);
        for ((&q, y_lo), y_hi) in self.qs.iter().zip(lo).zip(hi) {
            *y_lo = f32::from(i16::from(q & 0x0F) - 8) * d;
            *y_hi = f32::from(i16::from(q >> 4) - 8) * d;
        }
    }
}

/// Q4_1: 32 values as 4-bit unsigned quants with an f16 scale and minimum.
///
/// Nibble order as in [`BlockQ4_0`]; each decodes to `nibble * d + m`. 20 bytes.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (the value of quant 0).
    pub m: f16,
    /// Quants, two per byte: first half of the block low, second half high.
    pub qs: [u8; QK4_1 / 2],
}

impl BlockQ4_1 {
    /// The block's values in order: the same f32 operations in the same
    /// order as ggml's `dequantize_row_q4_1`, so bit-identical to it.
    pub fn dequantize_block(&self, out: &mut [f32; QK4_1]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        let (lo, hi) = out.split_at_mut(QK4_1 / 2);
        for ((&q, y_lo), y_hi) in self.qs.iter().zip(lo).zip(hi) {
            *y_lo = f32::from(q & 0x0F) * d + m;
            *y_hi = f32::from(q >> 4) * d + m;
        }
    }
}

/// The 5-bit quants of a Q5_0 or Q5_1 block: value `j < 16` is the low nibble
/// of `qs[j]`, value `j + 16` its high nibble (as in Q4_0), and the fifth bit of
/// value `i` is bit `i` of the little-endian `qh`.
fn five_bit_quants(qh: [u8; 4], qs: &[u8; 16]) -> [u8; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut q = [0u8; 32];
    for (j, &byte) in qs.iter().enumerate() {
        let high_bit = |i: usize| (((qh >> i) & 1) as u8) << 4;
        q[j] = (byte & 0x0F) | high_bit(j);
        q[j + 16] = (byte >> 4) | high_bit(j + 16);
    }
    q
}

/// Q5_0: 32 values as 5-bit unsigned quants around 16, one f16 scale; each
/// decodes to `(q - 16) * d`. 22 bytes.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits, bit `i` (of the little-endian u32) for value `i`.
    pub qh: [u8; 4],
    /// Low 4 bits, two per byte, nibbles ordered as in [`BlockQ4_0`].
    pub qs: [u8; QK5_0 / 2],
}

impl BlockQ5_0 {
    /// The block's values in order: the same f32 operations in the same
    /// order as ggml's `dequantize_row_q5_0`, so bit-identical to it.
    pub fn dequantize_block(&self, out: &mut [f32; QK5_0]) {
        let d = self.d.to_f32();
        for (y, q) in out.iter_mut().zip(five_bit_quants(self.qh, &self.qs)) {
            *y = f32::from(i16::from(q) - 16) * d;
        }
    }
}

/// Q5_1: 32 values as 5-bit unsigned quants with an f16 scale and minimum;
/// each decodes to `q * d + m`. 24 bytes.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (the value of quant 0).
    pub m: f16,
    /// Fifth bits, bit `i` (of the little-endian u32) for value `i`.
    pub qh: [u8; 4],
    /// Low 4 bits, two per byte, nibbles ordered as in [`BlockQ4_0`].
    pub qs: [u8; QK5_1 / 2],
}

impl BlockQ5_1 {
    /// The block's values in order: the same f32 operations in the same
    /// order as ggml's `dequantize_row_q5_1`, so bit-identical to it.
    pub fn dequantize_block(&self, out: &mut [f32; QK5_1]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for (y, q) in out.iter_mut().zip(five_bit_quants(self.qh, &self.qs)) {
            *y = f32::from(q) * d + m;
        }
    }
}

/// Q8_0: 32 values as int8 quants with one f16 scale; each decodes to `q * d`.
/// 34 bytes.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quants, in order.
    pub qs: [i8; QK8_0],
}

impl BlockQ8_0 {
    /// The block's values in order: the same f32 operations in the same
    /// order as ggml's `dequantize_row_q8_0`, so bit-identical to it.
    pub fn dequantize_block(&self, out: &mut [f32; QK8_0]) {
        let d = self.d.to_f32();
        for (y, &q) in out.iter_mut().zip(&self.qs) {
            *y = f32::from(q) * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_nibble_order() {
        let mut qs = [0x88u8; 16];
        qs[0] = 0x9F; // value 0: 15 - 8 = 7; value 16: 9 - 8 = 1
        let block = BlockQ4_0 { d: f16::from_f32(0.5), qs };
        let mut out = [f32::NAN; 32];
        block.dequantize_block(&mut out);
        assert_eq!(out[0], 3.5);
        assert_eq!(out[16], 0.5);
        assert!(out.iter().enumerate().all(|(i, &y)| i == 0 || i == 16 || y == 0.0));
    }

    #[test]
    fn q4_1_adds_the_minimum() {
        let mut qs = [0u8; 16];
        qs[15] = 0xF1;
        let block = BlockQ4_1 { d: f16::from_f32(2.0), m: f16::from_f32(-1.0), qs };
        let mut out = [f32::NAN; 32];
        block.dequantize_block(&mut out);
        assert_eq!(out[15], 1.0);
        assert_eq!(out[31], 29.0);
        assert_eq!(out[0], -1.0);
    }

    #[test]
    fn q5_0_fifth_bit() {
        let mut qs = [0u8; 16];
        qs[2] = 0x3F; // value 2: low nibble 15; value 18: low bits 3
                      // Fifth bits of values 2 (byte 0, bit 2) and 18 (byte 2, bit 2).
        let block = BlockQ5_0 { d: f16::from_f32(0.5), qh: [0b100, 0, 0b100, 0], qs };
        let mut out = [f32::NAN; 32];
        block.dequantize_block(&mut out);
        assert_eq!(out[2], (31 - 16) as f32 * 0.5);
        assert_eq!(out[18], (19 - 16) as f32 * 0.5);
        assert_eq!(out[0], -8.0);
    }

    #[test]
    fn q5_1_adds_the_minimum() {
        let block = BlockQ5_1 { d: f16::from_f32(2.0), m: f16::from_f32(-1.0), qh: [0, 0, 0, 0x80], qs: [0x10; 16] };
        let mut out = [f32::NAN; 32];
        block.dequantize_block(&mut out);
        assert_eq!(out[0], -1.0);
        assert_eq!(out[16], 1.0);
        assert_eq!(out[31], (1 + 16) as f32 * 2.0 - 1.0);
    }

    #[test]
    fn q8_0_is_signed() {
        let mut qs = [0i8; 32];
        qs[3] = -128;
        qs[31] = 127;
        let block = BlockQ8_0 { d: f16::from_f32(0.25), qs };
        let mut out = [f32::NAN; 32];
        block.dequantize_block(&mut out);
        assert_eq!((out[3], out[31], out[0]), (-32.0, 31.75, 0.0));
    }
}
