//! ggml's K-quants: 256-element super-blocks of 16 or 32-element sub-blocks,
//! each sub-block with its own quantized scale (and minimum).
//!
//! Layouts from `ggml-common.h`; decoding as in `dequantize_row_q2_K`,
//! `dequantize_row_q3_K`, `dequantize_row_q4_K`, `dequantize_row_q5_K`,
//! `dequantize_row_q6_K` and `get_scale_min_k4` (`ggml-quants.c`). The loops
//! below walk sub-blocks rather than ggml's pointer-bumping groups, but every
//! value goes through the same f32 operations: `(d * sc) * q - (dmin * m)` and
//! `(d * sc) * q`.

use half::f16;

/// Elements per K-quant super-block.
pub const QK_K: usize = 256;
/// Bytes of packed 6-bit scales and minimums in Q4_K and Q5_K.
const K_SCALE_SIZE: usize = 12;

/// Unpacks the 6-bit scale and minimum of sub-block `j` (0..8) from the 12
/// packed bytes of Q4_K and Q5_K (ggml's `get_scale_min_k4`).
///
/// Bytes 0..4 hold scales 0..4 in their low 6 bits, bytes 4..8 minimums 0..4;
/// sub-blocks 4..8 keep their low 4 bits in bytes 8..12 (scale low, minimum
/// high nibble) and their top 2 bits in the spare top bits of bytes 0..8.
pub(crate) fn scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        let scale = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        let min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (scale, min)
    }
}

/// Where the 2-bit field of value `v` (0..256) sits in the 64 bytes of 2-bit
/// quants of Q2_K and Q3_K: byte `32 * (v / 128) + v % 32`, shifted right by
/// the returned amount. Each half of 128 values uses 32 bytes, and its four
/// quarters of 32 values take bits 0..2, 2..4, 4..6, 6..8 of those bytes.
fn two_bit_position(v: usize) -> (usize, u32) {
    (32 * (v / 128) + v % 32, 2 * ((v % 128) / 32) as u32)
}

/// Q2_K: 256 values in 16 sub-blocks of 16, value = `d * sc * q - dmin * m`
/// with 2-bit `q` and 4-bit per-sub-block `sc` (low nibble of `scales[s]`) and
/// `m` (high nibble). 84 bytes.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ2K {
    /// Sub-block scales (low nibble) and minimums (high nibble).
    pub scales: [u8; QK_K / 16],
    /// Quants, four per byte (see `two_bit_position`).
    pub qs: [u8; QK_K / 4],
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block minimums.
    pub dmin: f16,
}

impl BlockQ2K {
    /// The block's values in order: the same f32 operations in the same
    /// order as ggml's `dequantize_row_q2_K`, so bit-identical to it.
    pub fn dequantize_block(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let dmin = self.dmin.to_f32();
        for (sub, y) in out.chunks_exact_mut(16).enumerate() {
            let d_sub = d * f32::from(self.scales[sub] & 0x0F);
            let m_sub = dmin * f32::from(self.scales[sub] >> 4);
            for (l, y) in y.iter_mut().enumerate() {
                let (byte, shift) = two_bit_position(16 * sub + l);
                *y = d_sub * f32::from((self.qs[byte] >> shift) & 3) - m_sub;
            }
        }
    }
}

/// Q3_K: 256 values in 16 sub-blocks of 16, value = `d * (sc - 32) * (q - 4)`
/// with 3-bit `q` and 6-bit per-sub-block `sc`. 110 bytes.
///
/// The low two bits of `q` are placed as in Q2_K; the third bit of value `v`
/// is bit `v / 32` of `hmask[v % 32]`, and it is inverted: a set bit means no
/// offset (`q` in 4..8), a clear one subtracts 4.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ3K {
    /// Third quant bits (see above).
    pub hmask: [u8; QK_K / 8],
    /// Low two quant bits, four per byte (see `two_bit_position`).
    pub qs: [u8; QK_K / 4],
    /// Sub-block scales, 6 bits each (see `BlockQ3K::scale`).
    pub scales: [u8; K_SCALE_SIZE],
    /// Super-block scale.
    pub d: f16,
}

impl BlockQ3K {
    /// The signed scale of sub-block `s` (0..16): its low 4 bits are nibble
    /// `s / 8` of `scales[s % 8]`, its high 2 bits bits `2 * (s / 4)..` of
    /// `scales[8 + s % 4]`, and it is stored offset by 32.
    fn scale(&self, s: usize) -> i8 {
        let low = (self.scales[s % 8] >> (4 * (s / 8))) & 0x0F;
        let high = (self.scales[8 + s % 4] >> (2 * (s / 4))) & 0x03;
        (low | (high << 4)) as i8 - 32
    }

    /// The block's values in order: the same f32 operations in the same
    /// order as ggml's `dequantize_row_q3_K`, so bit-identical to it.
    pub fn dequantize_block(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for (sub, y) in out.chunks_exact_mut(16).enumerate() {
            let d_sub = d * f32::from(self.scale(sub));
            for (l, y) in y.iter_mut().enumerate() {
                let v = 16 * sub + l;
                let (byte, shift) = two_bit_position(v);
                let low = ((self.qs[byte] >> shift) & 3) as i8;
                let offset = if (self.hmask[v % 32] >> (v / 32)) & 1 == 1 { 0 } else { 4 };
                *y = d_sub * f32::from(low - offset);
            }
        }
    }
}

/// Q4_K: 256 values in 8 sub-blocks of 32, value = `d * sc * q - dmin * m`
/// with 4-bit `q` and 6-bit per-sub-block `sc`, `m`. 144 bytes.
///
/// Quants: 4 groups of 32 bytes; in group `g`, low nibbles hold sub-block
/// `2g`, high nibbles sub-block `2g + 1`.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block minimums.
    pub dmin: f16,
    /// Sub-block scales and minimums, 6 bits each (see `scale_min_k4`).
    pub scales: [u8; K_SCALE_SIZE],
    /// Quants, two per byte.
    pub qs: [u8; QK_K / 2],
}

impl BlockQ4K {
    /// The 6-bit scale and minimum of sub-block `sub` (0..8).
    pub fn scale_min(&self, sub: usize) -> (u8, u8) {
        scale_min_k4(sub, &self.scales)
    }

    /// Quant `l` (0..32) of sub-block `sub` (0..8), in 0..16.
    pub fn quant(&self, sub: usize, l: usize) -> u8 {
        (self.qs[32 * (sub / 2) + l] >> (4 * (sub % 2))) & 0x0F
    }

    /// The block's values in order: the same f32 operations in the same
    /// order as ggml's `dequantize_row_q4_K`, so bit-identical to it.
    pub fn dequantize_block(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let dmin = self.dmin.to_f32();
        for (sub, y) in out.chunks_exact_mut(32).enumerate() {
            let (sc, m) = self.scale_min(sub);
            let d_sub = d * f32::from(sc);
            let m_sub = dmin * f32::from(m);
            for (l, y) in y.iter_mut().enumerate() {
                *y = d_sub * f32::from(self.quant(sub, l)) - m_sub;
            }
        }
    }
}

/// Q5_K: as [`BlockQ4K`] with a fifth quant bit: value = `d * sc * q - dmin * m`,
/// `q` in 0..32. 176 bytes.
///
/// The fifth bit of value `l` of sub-block `s` is bit `s` of `qh[l]`.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ5K {
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block minimums.
    pub dmin: f16,
    /// Sub-block scales and minimums, 6 bits each (see `scale_min_k4`).
    pub scales: [u8; K_SCALE_SIZE],
    /// High (fifth) bits: bit `s` of byte `l` for value `l` of sub-block `s`.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits, two per byte, nibbles ordered as in [`BlockQ4K`].
    pub qs: [u8; QK_K / 2],
}

impl BlockQ5K {
    /// The 6-bit scale and minimum of sub-block `sub` (0..8).
    pub fn scale_min(&self, sub: usize) -> (u8, u8) {
        scale_min_k4(sub, &self.scales)
    }

    /// Quant `l` (0..32) of sub-block `sub` (0..8), in 0..32.
    pub fn quant(&self, sub: usize, l: usize) -> u8 {
        let low = (self.qs[32 * (sub / 2) + l] >> (4 * (sub % 2))) & 0x0F;
        low | (((self.qh[l] >> sub) & 1) << 4)
    }

    /// The block's values in order: the same f32 operations in the same
    /// order as ggml's `dequantize_row_q5_K`, so bit-identical to it.
    pub fn dequantize_block(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let dmin = self.dmin.to_f32();
        for (sub, y) in out.chunks_exact_mut(32).enumerate() {
            let (sc, m) = self.scale_min(sub);
            let d_sub = d * f32::from(sc);
            let m_sub = dmin * f32::from(m);
            for (l, y) in y.iter_mut().enumerate() {
                *y = d_sub * f32::from(self.quant(sub, l)) - m_sub;
            }
        }
    }
}

/// Q6_K: 256 values in 16 sub-blocks of 16, value = `d * sc * (q - 32)` with
/// 6-bit `q` and int8 per-sub-block `sc`. 210 bytes.
///
/// Two halves of 128 values; half `h` uses `ql[64h..][..64]`, `qh[32h..][..32]`
/// and `scales[8h..][..8]`. Within a half, value `32k + l` (quarter `k` in 0..4,
/// `l` in 0..32) takes its low 4 bits from `ql[32 * (k % 2) + l]` (low nibble
/// for `k < 2`, high nibble otherwise), its high 2 bits from bits `2k..2k+2` of
/// `qh[l]`, and scale `scales[2k + l / 16]`.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ6K {
    /// Low 4 bits of the quants.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits of the quants.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}

impl BlockQ6K {
    /// Quant `v` (0..256), `q - 32` in -32..32.
    pub fn quant(&self, v: usize) -> i8 {
        let (half, quarter, l) = (v / 128, (v % 128) / 32, v % 32);
        let low = (self.ql[64 * half + 32 * (quarter % 2) + l] >> (4 * (quarter / 2))) & 0x0F;
        let high = (self.qh[32 * half + l] >> (2 * quarter)) & 0x03;
        (low | (high << 4)) as i8 - 32
    }

    /// The block's values in order: the same f32 operations in the same
    /// order as ggml's `dequantize_row_q6_K`, so bit-identical to it.
    pub fn dequantize_block(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for (v, y) in out.iter_mut().enumerate() {
            let d_sub = d * f32::from(self.scales[v / 16]);
            *y = d_sub * f32::from(self.quant(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_unpacking() {
        // Sub-block j < 4: low 6 bits of bytes j and j + 4.
        let mut q = [0u8; K_SCALE_SIZE];
        q[1] = 0b11_000101; // scale 1 = 5, top bits belong to scale 5
        q[5] = 0b10_001001; // min 1 = 9, top bits belong to min 5
        q[9] = 0x3A; // scale 5 low nibble 0xA, min 5 low nibble 0x3
        assert_eq!(scale_min_k4(1, &q), (5, 9));
        assert_eq!(scale_min_k4(5, &q), (0b11_1010, 0b10_0011));
        assert_eq!(scale_min_k4(0, &q), (0, 0));
    }

    #[test]
    fn q2_k_layout() {
        let mut block =
            BlockQ2K { scales: [0; QK_K / 16], qs: [0; QK_K / 4], d: f16::from_f32(1.0), dmin: f16::from_f32(0.5) };
        // Value 128 + 64 + 20 (second half, quarter 2, l = 20): byte 32 + 20, bits 4..6;
        // its sub-block is 13.
        block.qs[32 + 20] = 0b11 << 4;
        block.scales[13] = 0x25; // scale 5, minimum 2
        let mut out = [f32::NAN; QK_K];
        block.dequantize_block(&mut out);
        assert_eq!(out[128 + 64 + 20], 5.0 * 3.0 - 1.0);
        assert_eq!(out[13 * 16], -1.0);
        assert_eq!(out[0], 0.0);
    }

    #[test]
    fn q3_k_scales_and_inverted_high_bit() {
        let mut block =
            BlockQ3K { hmask: [0; QK_K / 8], qs: [0; QK_K / 4], scales: [0; K_SCALE_SIZE], d: f16::from_f32(1.0) };
        // Sub-block 14: low nibble = high nibble of scales[6], high bits = bits 6..8 of scales[10].
        block.scales[6] = 0x70;
        block.scales[10] = 0b10 << 6;
        assert_eq!(block.scale(14), (0x7 | (0b10 << 4)) - 32);
        // Value 14 * 16 + 3 = 227: quarter 3 of the second half, l = 3.
        block.qs[32 + 3] = 0b01 << 6;
        block.hmask[3] = 1 << 7; // third bit set: no offset
        let mut out = [f32::NAN; QK_K];
        block.dequantize_block(&mut out);
        assert_eq!(out[227], f32::from(block.scale(14)) * 1.0);
        // Clear third bit: q - 4 with q = 0, under sub-block 14's scale.
        assert_eq!(out[226], f32::from(block.scale(14)) * -4.0);
        // Every other sub-block's scale is -32.
        assert_eq!(out[0], 128.0);
    }

    #[test]
    fn q4_k_sub_block_order() {
        let mut block =
            BlockQ4K { d: f16::from_f32(1.0), dmin: f16::from_f32(0.5), scales: [0; K_SCALE_SIZE], qs: [0; QK_K / 2] };
        block.scales[1] = 2; // scale of sub-block 1
        block.scales[5] = 4; // min of sub-block 1
        block.qs[3] = 0x70; // sub-block 1 (high nibbles of group 0), value 3: q = 7
        let mut out = [f32::NAN; QK_K];
        block.dequantize_block(&mut out);
        assert_eq!(out[32 + 3], 2.0 * 7.0 - 2.0);
        assert_eq!(out[32], -2.0);
        assert_eq!(out[3], 0.0);
    }

    #[test]
    fn q5_k_fifth_bit() {
        let mut block = BlockQ5K {
            d: f16::from_f32(1.0),
            dmin: f16::from_f32(0.0),
            scales: [1; K_SCALE_SIZE],
            qh: [0; QK_K / 8],
            qs: [0; QK_K / 2],
        };
        block.qh[7] = 1 << 3; // value 7 of sub-block 3
        let mut out = [f32::NAN; QK_K];
        block.dequantize_block(&mut out);
        // Sub-block 3's scale: low nibble of byte 7 (1) with top bits of byte 3 (0).
        assert_eq!(out[3 * 32 + 7], 16.0);
        assert_eq!(out.iter().filter(|&&y| y != 0.0).count(), 1);
    }

    #[test]
    fn q6_k_layout() {
        let mut block =
            BlockQ6K { ql: [0; QK_K / 2], qh: [0; QK_K / 4], scales: [1; QK_K / 16], d: f16::from_f32(1.0) };
        // Second half, quarter 3, l = 17: ql[64 + 32 + 17] high nibble, qh[32 + 17] bits 6..8.
        block.ql[64 + 32 + 17] = 0x50;
        block.qh[32 + 17] = 0b10 << 6;
        block.scales[8 + 2 * 3 + 1] = -3;
        let mut out = [f32::NAN; QK_K];
        block.dequantize_block(&mut out);
        assert_eq!(out[128 + 96 + 17], -3.0 * ((0x5 | (0b10 << 4)) - 32) as f32);
        assert_eq!(out[0], -32.0);
    }
}
