//! The NEON K-quant matmuls (Q4_K, Q5_K, Q6_K weights packed in tiles by
//! `gpt_fast_quant::kquant`, q8 activations with block sums), with SDOT where
//! the CPU has dotprod and widening multiplies without. The loops over tiles
//! and tokens are [`crate::driver::ktile`]'s; this file holds the tiles.
//!
//! The tile stores 4 columns of all 8 rows per 32 bytes (`kquant`'s 4-byte
//! units): a 4-value dot product of 16 of those bytes (rows 0-3 or 4-7) with
//! the token's 4 activation quants broadcast to every lane leaves row `r`'s
//! sum in lane `r % 4`, so the 8 row sums come out as two vectors with no
//! horizontal additions. Quants are taken as i8 (Q4_K/Q5_K's are 0..32,
//! Q6_K's `q - 32` is -32..32); the sums are exact in i32 for either dot
//! product, converted to f32 and fused-multiply-added with their scales, as
//! the q8 kernel does.

use std::arch::aarch64::*;
use std::ops::Range;

use gpt_fast_quant::kquant::{q4_k, q5_k, q6_k};
use half::f16;

use super::simd::{dot16_sdot, load16_i8, load8_f16, store16_i8, store4};
use crate::driver::ktile::{self, KTile};
use crate::driver::tiles::TileSums;
use crate::{Q8Acts, Q8_BLOCK};

const SUPERBLOCK: usize = ktile::SUPERBLOCK;
/// 32-value blocks per super-block.
const BLOCKS: usize = SUPERBLOCK / Q8_BLOCK;

macro_rules! entry {
    ($(#[$doc:meta])* $name:ident, $features:literal, $dot:ident, $record:expr, $tile:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        #[doc = concat!("The CPU must support ", $features, ".")]
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)] // the matmul signature plus the activation sums
        pub unsafe fn $name(
            w: &[u8],
            cols: usize,
            rows: Range<usize>,
            x: &Q8Acts,
            x_sums: &[f32],
            n: usize,
            out: &mut [f32],
            out_stride: usize,
        ) {
            ktile::matmul(w, $record, cols, rows, x, x_sums, n, out, out_stride, |tile, sums| {
                let dot = |acc, w, x| $dot(acc, w, x);
                match tile.tokens {
                    4 => $tile::<4>(&tile, sums, dot),
                    3 => $tile::<3>(&tile, sums, dot),
                    2 => $tile::<2>(&tile, sums, dot),
                    _ => $tile::<1>(&tile, sums, dot),
                }
            });
        }
    };
}

entry!(
    /// As [`crate::reference::matmul_q4_k`], with SDOT.
    matmul_q4_k_sdot, "neon,dotprod", dot16_sdot, q4_k::RECORD_BYTES, q4_k_tile
);
entry!(
    /// As [`crate::reference::matmul_q4_k`], with widening multiplies.
    matmul_q4_k, "neon", dot4_widening, q4_k::RECORD_BYTES, q4_k_tile
);
entry!(
    /// As [`crate::reference::matmul_q5_k`], with SDOT.
    matmul_q5_k_sdot, "neon,dotprod", dot16_sdot, q5_k::RECORD_BYTES, q5_k_tile
);
entry!(
    /// As [`crate::reference::matmul_q5_k`], with widening multiplies.
    matmul_q5_k, "neon", dot4_widening, q5_k::RECORD_BYTES, q5_k_tile
);
entry!(
    /// As [`crate::reference::matmul_q6_k`], with SDOT.
    matmul_q6_k_sdot, "neon,dotprod", dot16_sdot, q6_k::RECORD_BYTES, q6_k_tile
);
entry!(
    /// As [`crate::reference::matmul_q6_k`], with widening multiplies.
    matmul_q6_k, "neon", dot4_widening, q6_k::RECORD_BYTES, q6_k_tile
);

/// As [`dot16_sdot`] with base NEON, keeping each 4-byte group's sum in its
/// own lane: `smull`/`smull2` give the 16 products in i16, `addp` sums
/// adjacent pairs (at most `2 × 64 × 128`, no overflow for `|w| <= 64`) and
/// `sadalp` the pairs of those into the i32 lanes.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn dot4_widening(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    let (lo, hi) = (vmull_s8(vget_low_s8(w), vget_low_s8(x)), vmull_high_s8(w, x));
    vpadalq_s16(acc, vpaddq_s16(lo, hi))
}

/// 16 bytes from the front of `s`.
#[inline]
#[target_feature(enable = "neon")]
fn load16(s: &[u8]) -> uint8x16_t {
    vreinterpretq_u8_s8(load16_i8(bytemuck::cast_slice(&s[..16])))
}

/// The 32 bytes at the front of `s` (rows 0-3, rows 4-7 of a 4-byte unit).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn load32(s: &[u8]) -> [uint8x16_t; 2] {
    [load16(s), load16(&s[16..])]
}

/// 8 f16 (16 little-endian bytes) from the front of `s`, widened to f32.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn load8_f16_bytes(s: &[u8]) -> [float32x4_t; 2] {
    let v: [f16; 8] = bytemuck::pod_read_unaligned(&s[..16]);
    load8_f16(&v)
}

/// 8 bytes (one per row) as f32, rows 0-3 and 4-7.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn u8x8_to_f32(s: &[u8]) -> [float32x4_t; 2] {
    let wide = vmovl_u8(vcreate_u8(u64::from_le_bytes(s[..8].try_into().expect("8 bytes"))));
    [vcvtq_f32_u32(vmovl_u16(vget_low_u16(wide))), vcvtq_f32_u32(vmovl_high_u16(wide))]
}

/// 8 signed bytes (one per row) as i32, rows 0-3 and 4-7.
#[inline]
#[target_feature(enable = "neon")]
fn i8x8_to_i32(s: &[u8]) -> [int32x4_t; 2] {
    let wide = vmovl_s8(vcreate_s8(u64::from_le_bytes(s[..8].try_into().expect("8 bytes"))));
    [vmovl_s16(vget_low_s16(wide)), vmovl_high_s16(wide)]
}

/// The 4 activation quants at `xq[at..at + 4]` in every 32-bit lane.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn broadcast4(xq: &[i8], at: usize) -> int8x16_t {
    let x: [i8; 4] = xq[at..at + 4].try_into().expect("4 quants");
    vreinterpretq_s8_u32(vdupq_n_u32(u32::from_le_bytes(x.map(|v| v as u8))))
}

/// The 6-bit scales and minimums of 8 rows' 8 sub-blocks from the
/// `[byte][row]` planes of their 12 packed bytes (ggml's `get_scale_min_k4`,
/// for all of them at once), as `[sub-block][row]` bytes.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn scales_mins(planes: &[u8]) -> ([u8; 64], [u8; 64]) {
    let (mut sc, mut m) = ([0u8; 64], [0u8; 64]);
    let (low6, low4) = (vdupq_n_u8(63), vdupq_n_u8(0x0F));
    for i in 0..2 {
        let (a, b, c) = (load16(&planes[16 * i..]), load16(&planes[32 + 16 * i..]), load16(&planes[64 + 16 * i..]));
        // Sub-blocks 4..8: low 4 bits in bytes 8..12, top two in bits 6..8 of bytes 0..8.
        let sc_hi = vorrq_u8(vandq_u8(c, low4), vshlq_n_u8::<4>(vshrq_n_u8::<6>(a)));
        let m_hi = vorrq_u8(vshrq_n_u8::<4>(c), vshlq_n_u8::<4>(vshrq_n_u8::<6>(b)));
        let store = |dst: &mut [u8], v: uint8x16_t| {
            store16_i8(bytemuck::cast_slice_mut(&mut dst[..16]), vreinterpretq_s8_u8(v))
        };
        store(&mut sc[16 * i..], vandq_u8(a, low6));
        store(&mut sc[32 + 16 * i..], sc_hi);
        store(&mut m[16 * i..], vandq_u8(b, low6));
        store(&mut m[32 + 16 * i..], m_hi);
    }
    (sc, m)
}

/// One group's per-row scales as Q4_K's tiles (and q4_kr's) take them: `d`,
/// `dmin` (rows 0-3, 4-7) and the 6-bit scales and minimums of its 8
/// sub-blocks ([`scales_mins`]).
pub(super) struct GroupScales {
    pub d: [float32x4_t; 2],
    pub dmin: [float32x4_t; 2],
    pub scales: [u8; 64],
    pub mins: [u8; 64],
}

impl GroupScales {
    /// Adds sub-block `j`'s share for each token `t` to `acc[t]`: with its
    /// rows' integer sums `isums[t]` (rows 0-3, 4-7) against activation
    /// block `b` (of `nb` per token row of `xs`, `xsums`),
    /// `fma(isum, d·sc·xs, acc)` then `fms(dmin·m, xsum, acc)`.
    #[inline]
    #[target_feature(enable = "neon")]
    #[allow(clippy::too_many_arguments)] // the sub-block, its activations and the accumulators
    pub(super) fn add_sub_block<const T: usize>(
        &self,
        acc: &mut [[float32x4_t; 2]; T],
        j: usize,
        isums: &[[int32x4_t; 2]; T],
        xs: &[f32],
        xsums: &[f32],
        nb: usize,
        b: usize,
    ) {
        let (sc, m) = (u8x8_to_f32(&self.scales[8 * j..]), u8x8_to_f32(&self.mins[8 * j..]));
        for t in 0..T {
            let (x_scale, x_sum) = (xs[t * nb + b], vdupq_n_f32(xsums[t * nb + b]));
            for h in 0..2 {
                let scale = vmulq_n_f32(vmulq_f32(self.d[h], sc[h]), x_scale);
                acc[t][h] = vfmaq_f32(acc[t][h], vcvtq_f32_s32(isums[t][h]), scale);
                acc[t][h] = vfmsq_f32(acc[t][h], vmulq_f32(self.dmin[h], m[h]), x_sum);
            }
        }
    }
}

/// `[t]`: sub-block `i` of `isums[t][i]`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn sub_block<const T: usize>(isums: &[[[int32x4_t; 2]; 2]; T], i: usize) -> [[int32x4_t; 2]; T] {
    let mut sub = [[vdupq_n_s32(0); 2]; T];
    for (sub, isums) in sub.iter_mut().zip(isums) {
        *sub = isums[i];
    }
    sub
}

/// Q4_K's and Q5_K's tile (`Q5`: OR the fifth bits from `qh_at` into the
/// nibbles).
#[inline]
#[target_feature(enable = "neon")]
#[allow(clippy::needless_range_loop)] // i picks the sub-block's scales and activations too
fn q45_tile<const T: usize, const Q5: bool>(
    tile: &KTile,
    sums: &mut TileSums,
    dot: impl Fn(int32x4_t, int8x16_t, int8x16_t) -> int32x4_t + Copy,
    record_bytes: usize,
    (d_at, dmin_at, scales_at, qs_at, qh_at): (usize, usize, usize, usize, usize),
) {
    let KTile { w, xq, xs, xsums, superblocks, .. } = *tile;
    let (cols, nb) = (superblocks * SUPERBLOCK, superblocks * BLOCKS);
    let (low4, bit4, zero) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x10), vdupq_n_s32(0));
    let mut acc = [[vdupq_n_f32(0.0); 2]; T];
    for sb in 0..superblocks {
        let rec = &w[sb * record_bytes..][..record_bytes];
        let (d, dmin) = (load8_f16_bytes(&rec[d_at..]), load8_f16_bytes(&rec[dmin_at..]));
        let (scales, mins) = scales_mins(&rec[scales_at..]);
        let group = GroupScales { d, dmin, scales, mins };
        // Quant group g: sub-blocks 2g (low nibbles) and 2g + 1 (high).
        for g in 0..BLOCKS / 2 {
            let b0 = sb * BLOCKS + 2 * g;
            let bits = [vdupq_n_u8(1 << (2 * g)), vdupq_n_u8(2 << (2 * g))];
            // isums[t][i][h]: token t, sub-block 2g + i, rows 4h..4h + 4.
            let mut isums = [[[zero; 2]; 2]; T];
            for k in 0..8 {
                let v = load32(&rec[qs_at + (8 * g + k) * 32..]);
                let mut q = [v.map(|v| vandq_u8(v, low4)), v.map(|v| vshrq_n_u8::<4>(v))];
                if Q5 {
                    let qh = load32(&rec[qh_at + k * 32..]);
                    for (q, bit) in q.iter_mut().zip(bits) {
                        for (q, qh) in q.iter_mut().zip(qh) {
                            *q = vorrq_u8(*q, vandq_u8(vtstq_u8(qh, bit), bit4));
                        }
                    }
                }
                for (t, isums) in isums.iter_mut().enumerate() {
                    for (i, (isum, q)) in isums.iter_mut().zip(&q).enumerate() {
                        let x = broadcast4(xq, t * cols + (b0 + i) * Q8_BLOCK + 4 * k);
                        for (s, &q) in isum.iter_mut().zip(q) {
                            *s = dot(*s, vreinterpretq_s8_u8(q), x);
                        }
                    }
                }
            }
            for i in 0..2 {
                group.add_sub_block(&mut acc, 2 * g + i, &sub_block(&isums, i), xs, xsums, nb, b0 + i);
            }
        }
    }
    for (sums, acc) in sums.iter_mut().zip(&acc) {
        store4(sums, acc[0]);
        store4(&mut sums[4..], acc[1]);
    }
}

#[inline]
#[target_feature(enable = "neon")]
fn q4_k_tile<const T: usize>(
    tile: &KTile,
    sums: &mut TileSums,
    dot: impl Fn(int32x4_t, int8x16_t, int8x16_t) -> int32x4_t + Copy,
) {
    let at = (q4_k::D, q4_k::DMIN, q4_k::SCALES, q4_k::QS, 0);
    q45_tile::<T, false>(tile, sums, dot, q4_k::RECORD_BYTES, at);
}

#[inline]
#[target_feature(enable = "neon")]
fn q5_k_tile<const T: usize>(
    tile: &KTile,
    sums: &mut TileSums,
    dot: impl Fn(int32x4_t, int8x16_t, int8x16_t) -> int32x4_t + Copy,
) {
    let at = (q5_k::D, q5_k::DMIN, q5_k::SCALES, q5_k::QS, q5_k::QH);
    q45_tile::<T, true>(tile, sums, dot, q5_k::RECORD_BYTES, at);
}

#[inline]
#[target_feature(enable = "neon")]
fn q6_k_tile<const T: usize>(
    tile: &KTile,
    sums: &mut TileSums,
    dot: impl Fn(int32x4_t, int8x16_t, int8x16_t) -> int32x4_t + Copy,
) {
    let KTile { w, xq, xs, superblocks, .. } = *tile;
    let (cols, nb) = (superblocks * SUPERBLOCK, superblocks * BLOCKS);
    let (low4, low2, thirty_two, zero) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x03), vdupq_n_s8(32), vdupq_n_s32(0));
    let mut acc = [[vdupq_n_f32(0.0); 2]; T];
    for sb in 0..superblocks {
        let rec = &w[sb * q6_k::RECORD_BYTES..][..q6_k::RECORD_BYTES];
        let d = load8_f16_bytes(&rec[q6_k::D..]);
        for c in 0..BLOCKS {
            let b = sb * BLOCKS + c;
            let (half, quarter) = (c / 4, c % 4);
            // The rows' scales of sub-blocks 2c (values 0..16) and 2c + 1.
            let scales = [0, 8].map(|o| i8x8_to_i32(&rec[q6_k::SCALES + 16 * c + o..]));
            let ql = q6_k::QL + (16 * half + 8 * (quarter % 2)) * 32;
            let qh = q6_k::QH + 8 * half * 32;
            let high_shift = vdupq_n_s8(-2 * quarter as i8);
            // isums[t][s][h]: token t, sub-block 2c + s, rows 4h..4h + 4.
            let mut isums = [[[zero; 2]; 2]; T];
            for m in 0..8 {
                let (low, high) = (load32(&rec[ql + m * 32..]), load32(&rec[qh + m * 32..]));
                let q: [int8x16_t; 2] = std::array::from_fn(|h| {
                    let low = if quarter < 2 { vandq_u8(low[h], low4) } else { vshrq_n_u8::<4>(low[h]) };
                    let high = vandq_u8(vshlq_u8(high[h], high_shift), low2);
                    vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(low, vshlq_n_u8::<4>(high))), thirty_two)
                });
                for (t, isums) in isums.iter_mut().enumerate() {
                    let x = broadcast4(xq, t * cols + b * Q8_BLOCK + 4 * m);
                    for (s, &q) in isums[m / 4].iter_mut().zip(&q) {
                        *s = dot(*s, q, x);
                    }
                }
            }
            for t in 0..T {
                let x_scale = xs[t * nb + b];
                for h in 0..2 {
                    let isum = vmlaq_s32(vmulq_s32(isums[t][0][h], scales[0][h]), isums[t][1][h], scales[1][h]);
                    acc[t][h] = vfmaq_f32(acc[t][h], vcvtq_f32_s32(isum), vmulq_n_f32(d[h], x_scale));
                }
            }
        }
    }
    for (sums, acc) in sums.iter_mut().zip(&acc) {
        store4(sums, acc[0]);
        store4(&mut sums[4..], acc[1]);
    }
}
