//! The NEON K-quant matmuls (Q4_K, Q5_K, Q6_K weights packed in tiles by
//! `gpt_fast_quant::kquant`, q8 activations with block sums), with SDOT where
//! the CPU has dotprod and widening multiplies without. The loops over tiles
//! and tokens are [`crate::driver::ktile`]'s; this file holds the tiles.
//!
//! Per tile of 8 rows, per 32-value block and token, each row's quants (as
//! i8: Q4_K/Q5_K's are 0..32, Q6_K's `q - 32` is -32..32) are dotted with
//! the token's 32 activation quants in integers (exact for either dot
//! product: `|w| <= 32`), the row sums gathered by `addp` into two vectors
//! (rows 0-3, 4-7), converted to f32 and fused-multiply-added with their
//! scales, as the q8 kernel does.

use std::arch::aarch64::*;
use std::ops::Range;

use gpt_fast_quant::kquant::{q4_k, q5_k, q6_k};
use half::f16;

use super::simd::{dot16_sdot, dot16_widening, load16_i8, load8_f16, store16_i8, store4};
use crate::driver::ktile::{self, KTile};
use crate::driver::q8::TileSums;
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
    matmul_q4_k, "neon", dot16_widening, q4_k::RECORD_BYTES, q4_k_tile
);
entry!(
    /// As [`crate::reference::matmul_q5_k`], with SDOT.
    matmul_q5_k_sdot, "neon,dotprod", dot16_sdot, q5_k::RECORD_BYTES, q5_k_tile
);
entry!(
    /// As [`crate::reference::matmul_q5_k`], with widening multiplies.
    matmul_q5_k, "neon", dot16_widening, q5_k::RECORD_BYTES, q5_k_tile
);
entry!(
    /// As [`crate::reference::matmul_q6_k`], with SDOT.
    matmul_q6_k_sdot, "neon,dotprod", dot16_sdot, q6_k::RECORD_BYTES, q6_k_tile
);
entry!(
    /// As [`crate::reference::matmul_q6_k`], with widening multiplies.
    matmul_q6_k, "neon", dot16_widening, q6_k::RECORD_BYTES, q6_k_tile
);

/// 16 bytes from the front of `s`.
#[inline]
#[target_feature(enable = "neon")]
fn load16(s: &[u8]) -> uint8x16_t {
    vreinterpretq_u8_s8(load16_i8(bytemuck::cast_slice(&s[..16])))
}

/// 8 f16 (16 little-endian bytes) from the front of `s`, widened to f32.
#[inline]
#[target_feature(enable = "neon")]
fn load8_f16_bytes(s: &[u8]) -> [float32x4_t; 2] {
    let v: [f16; 8] = bytemuck::pod_read_unaligned(&s[..16]);
    load8_f16(&v)
}

/// 8 bytes (one per row) as f32, rows 0-3 and 4-7.
#[inline]
#[target_feature(enable = "neon")]
fn u8x8_to_f32(s: &[u8]) -> [float32x4_t; 2] {
    let wide = vmovl_u8(vcreate_u8(u64::from_le_bytes(s[..8].try_into().expect("8 bytes"))));
    [vcvtq_f32_u32(vmovl_u16(vget_low_u16(wide))), vcvtq_f32_u32(vmovl_high_u16(wide))]
}

/// Per token `t`, the 8 row sums (rows 0-3, 4-7) of `combine(r, a, b)`, where
/// `a` and `b` are the dot products of row `r`'s two 16-value halves
/// (`row(r)`) with the token's. Sums are folded by `addp` as soon as a pair
/// exists, so few partial vectors are live.
#[inline]
#[target_feature(enable = "neon")]
#[allow(clippy::needless_range_loop)] // h, p, i together name the row: 4h + 2p + i
fn row_dots<const T: usize>(
    xv: &[[int8x16_t; 2]; T],
    dot: impl Fn(int32x4_t, int8x16_t, int8x16_t) -> int32x4_t + Copy,
    row: impl Fn(usize) -> [int8x16_t; 2],
    combine: impl Fn(usize, int32x4_t, int32x4_t) -> int32x4_t,
) -> [[int32x4_t; 2]; T] {
    let zero = vdupq_n_s32(0);
    let mut quads = [[zero; 2]; T];
    for h in 0..2 {
        let mut pairs = [[zero; 2]; T];
        for p in 0..2 {
            let mut dots = [[zero; 2]; T];
            for i in 0..2 {
                let r = 4 * h + 2 * p + i;
                let w = row(r);
                for t in 0..T {
                    dots[t][i] = combine(r, dot(zero, w[0], xv[t][0]), dot(zero, w[1], xv[t][1]));
                }
            }
            for t in 0..T {
                pairs[t][p] = vpaddq_s32(dots[t][0], dots[t][1]);
            }
        }
        for t in 0..T {
            quads[t][h] = vpaddq_s32(pairs[t][0], pairs[t][1]);
        }
    }
    quads
}

/// Token `t`'s 32 activation quants of block `b`, as two registers.
#[inline]
#[target_feature(enable = "neon")]
fn acts<const T: usize>(xq: &[i8], cols: usize, b: usize) -> [[int8x16_t; 2]; T] {
    std::array::from_fn(|t| {
        let xb = &xq[t * cols + b * Q8_BLOCK..][..Q8_BLOCK];
        [load16_i8(xb), load16_i8(&xb[16..])]
    })
}

/// The 6-bit scales and minimums of 8 rows' 8 sub-blocks from the
/// `[byte][row]` planes of their 12 packed bytes (ggml's `get_scale_min_k4`,
/// for all of them at once), as `[sub-block][row]` bytes.
#[inline]
#[target_feature(enable = "neon")]
fn scales_mins(planes: &[u8]) -> ([u8; 64], [u8; 64]) {
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

/// Q4_K and Q5_K's tile: `high_bits(rec, j, r)` is OR-ed into row `r`'s
/// nibbles of sub-block `j` (Q5_K's fifth bits; zero for Q4_K).
#[inline]
#[target_feature(enable = "neon")]
fn q45_tile<const T: usize>(
    tile: &KTile,
    sums: &mut TileSums,
    dot: impl Fn(int32x4_t, int8x16_t, int8x16_t) -> int32x4_t + Copy,
    record_bytes: usize,
    (d_at, dmin_at, scales_at, qs_at): (usize, usize, usize, usize),
    high_bits: impl Fn(&[u8], usize, usize) -> [uint8x16_t; 2],
) {
    let KTile { w, xq, xs, xsums, superblocks, .. } = *tile;
    let (cols, nb) = (superblocks * SUPERBLOCK, superblocks * BLOCKS);
    let low4 = vdupq_n_u8(0x0F);
    let mut acc = [[vdupq_n_f32(0.0); 2]; T];
    for sb in 0..superblocks {
        let rec = &w[sb * record_bytes..][..record_bytes];
        let (d, dmin) = (load8_f16_bytes(&rec[d_at..]), load8_f16_bytes(&rec[dmin_at..]));
        let (scales, mins) = scales_mins(&rec[scales_at..]);
        for j in 0..BLOCKS {
            let b = sb * BLOCKS + j;
            let xv = acts::<T>(xq, cols, b);
            let group = &rec[qs_at + (j / 2) * 256..][..256];
            let quads = row_dots(
                &xv,
                dot,
                |r| {
                    let high = high_bits(rec, j, r);
                    std::array::from_fn(|i| {
                        let q = load16(&group[r * 32 + 16 * i..]);
                        let q = if j % 2 == 0 { vandq_u8(q, low4) } else { vshrq_n_u8::<4>(q) };
                        vreinterpretq_s8_u8(vorrq_u8(q, high[i]))
                    })
                },
                |_, a, b| vaddq_s32(a, b),
            );
            let (sc, m) = (u8x8_to_f32(&scales[8 * j..]), u8x8_to_f32(&mins[8 * j..]));
            for t in 0..T {
                let (x_scale, x_sum) = (xs[t * nb + b], vdupq_n_f32(xsums[t * nb + b]));
                for h in 0..2 {
                    let scale = vmulq_n_f32(vmulq_f32(d[h], sc[h]), x_scale);
                    acc[t][h] = vfmaq_f32(acc[t][h], vcvtq_f32_s32(quads[t][h]), scale);
                    acc[t][h] = vfmsq_f32(acc[t][h], vmulq_f32(dmin[h], m[h]), x_sum);
                }
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
    let at = (q4_k::D, q4_k::DMIN, q4_k::SCALES, q4_k::QS);
    q45_tile::<T>(tile, sums, dot, q4_k::RECORD_BYTES, at, |_, _, _| [vdupq_n_u8(0); 2]);
}

#[inline]
#[target_feature(enable = "neon")]
fn q5_k_tile<const T: usize>(
    tile: &KTile,
    sums: &mut TileSums,
    dot: impl Fn(int32x4_t, int8x16_t, int8x16_t) -> int32x4_t + Copy,
) {
    let at = (q5_k::D, q5_k::DMIN, q5_k::SCALES, q5_k::QS);
    q45_tile::<T>(tile, sums, dot, q5_k::RECORD_BYTES, at, |rec, j, r| {
        // Bit j of each of row r's 32 qh bytes, moved to bit 4.
        let bit = vdupq_n_u8(1 << j);
        std::array::from_fn(|i| vandq_u8(vtstq_u8(load16(&rec[q5_k::QH + r * 32 + 16 * i..]), bit), vdupq_n_u8(0x10)))
    });
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
    let (low4, low2, thirty_two) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x03), vdupq_n_s8(32));
    let mut acc = [[vdupq_n_f32(0.0); 2]; T];
    for sb in 0..superblocks {
        let rec = &w[sb * q6_k::RECORD_BYTES..][..q6_k::RECORD_BYTES];
        let d = load8_f16_bytes(&rec[q6_k::D..]);
        for c in 0..BLOCKS {
            let b = sb * BLOCKS + c;
            let (half, quarter) = (c / 4, c % 4);
            let xv = acts::<T>(xq, cols, b);
            let ql = &rec[q6_k::QL + (2 * half + quarter % 2) * 256..][..256];
            let qh = &rec[q6_k::QH + half * 256..][..256];
            // Bytes 0..8: the rows' scales of sub-block 2c, 8..16 of 2c + 1.
            let scales = &rec[q6_k::SCALES + 16 * c..][..16];
            let high_shift = vdupq_n_s8(-2 * quarter as i8);
            let quads = row_dots(
                &xv,
                dot,
                |r| {
                    std::array::from_fn(|i| {
                        let low = load16(&ql[r * 32 + 16 * i..]);
                        let low = if quarter < 2 { vandq_u8(low, low4) } else { vshrq_n_u8::<4>(low) };
                        let high = vandq_u8(vshlq_u8(load16(&qh[r * 32 + 16 * i..]), high_shift), low2);
                        vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(low, vshlq_n_u8::<4>(high))), thirty_two)
                    })
                },
                |r, a, b| {
                    let (sc_a, sc_b) = (i32::from(scales[r] as i8), i32::from(scales[8 + r] as i8));
                    vmlaq_n_s32(vmulq_n_s32(a, sc_a), b, sc_b)
                },
            );
            for t in 0..T {
                let x_scale = xs[t * nb + b];
                for h in 0..2 {
                    acc[t][h] = vfmaq_f32(acc[t][h], vcvtq_f32_s32(quads[t][h]), vmulq_n_f32(d[h], x_scale));
                }
            }
        }
    }
    for (sums, acc) in sums.iter_mut().zip(&acc) {
        store4(sums, acc[0]);
        store4(&mut sums[4..], acc[1]);
    }
}
