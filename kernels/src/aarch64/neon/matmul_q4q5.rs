//! The NEON Q4_0/Q4_1/Q5_0/Q5_1 matmul, with SDOT (dotprod) or widening
//! multiplies: the q8 kernel's tiling (the driver in [`crate::driver::q4q5`])
//! over unpacked nibbles.

use std::arch::aarch64::*;
use std::ops::Range;

use gpt_fast_quant::q4q5::Kind;

use super::simd::{dot16_sdot, dot16_widening, load16_i8, load8_f16, store4};
use crate::driver::q4q5::{self, Q4Q5Tile};
use crate::driver::tiles::TileSums;
use crate::q4q5::{Q4Q5Weight, Q8SumActs, Q4Q5_BLOCK, TILE_BLOCK_FIFTH_BYTES, TILE_BLOCK_NIBBLE_BYTES};

/// As [`crate::reference::matmul_q4q5`], with SDOT (the dotprod extension).
///
/// Per tile of 8 interleaved rows and block of 32 columns, each row's 16
/// nibble bytes give its first 16 quants (masked) and its last 16 (shifted),
/// plus the fifth bits for Q5; quants are at most 31, so they are valid i8 and
/// the 16-byte dot products are exact. Per block the row sums become
/// `fma(isum, d·xs, acc)` then `fma(m', sum, acc)`, as on x86.
///
/// # Safety
/// The CPU must support NEON and the dotprod extension.
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn matmul_q4q5_sdot(
    w: &Q4Q5Weight,
    cols: usize,
    rows: Range<usize>,
    x: &Q8SumActs,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    by_kind(w, cols, rows, x, n, out, out_stride, |acc, w, x| dot16_sdot(acc, w, x));
}

/// As [`matmul_q4q5_sdot`], for CPUs without dotprod: widening multiplies
/// ([`dot16_widening`]: exact, since `31 × 128 × 2 < 32767`).
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn matmul_q4q5(
    w: &Q4Q5Weight,
    cols: usize,
    rows: Range<usize>,
    x: &Q8SumActs,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    by_kind(w, cols, rows, x, n, out, out_stride, |acc, w, x| dot16_widening(acc, w, x));
}

/// The two matmuls' body; `dot` is one of the 16-byte integer dot products.
#[inline]
#[target_feature(enable = "neon")]
fn by_kind(
    w: &Q4Q5Weight,
    cols: usize,
    rows: Range<usize>,
    x: &Q8SumActs,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    dot: impl Fn(int32x4_t, int8x16_t, int8x16_t) -> int32x4_t + Copy,
) {
    match w.kind {
        Kind::Q4_0 => with_kind::<false, false>(w, cols, rows, x, n, out, out_stride, dot),
        Kind::Q4_1 => with_kind::<false, true>(w, cols, rows, x, n, out, out_stride, dot),
        Kind::Q5_0 => with_kind::<true, false>(w, cols, rows, x, n, out, out_stride, dot),
        Kind::Q5_1 => with_kind::<true, true>(w, cols, rows, x, n, out, out_stride, dot),
    }
}

/// One kind: `Q5` (fifth bits), `MIN` (a minimum per block).
#[inline]
#[target_feature(enable = "neon")]
fn with_kind<const Q5: bool, const MIN: bool>(
    w: &Q4Q5Weight,
    cols: usize,
    rows: Range<usize>,
    x: &Q8SumActs,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    dot: impl Fn(int32x4_t, int8x16_t, int8x16_t) -> int32x4_t + Copy,
) {
    q4q5::matmul(w, cols, rows, x, n, out, out_stride, |tile, tokens, sums| match tokens {
        4 => tile_kernel::<4, Q5, MIN>(&tile, sums, dot),
        3 => tile_kernel::<3, Q5, MIN>(&tile, sums, dot),
        2 => tile_kernel::<2, Q5, MIN>(&tile, sums, dot),
        _ => tile_kernel::<1, Q5, MIN>(&tile, sums, dot),
    });
}

/// One tile of 8 rows against `T` tokens: `sums[t][r]` = row `r` · token `t`.
/// `acc[t][h]` lane `i` is row `4h + i` for token `t`.
#[inline]
#[target_feature(enable = "neon")]
fn tile_kernel<const T: usize, const Q5: bool, const MIN: bool>(
    tile: &Q4Q5Tile,
    sums: &mut TileSums,
    dot: impl Fn(int32x4_t, int8x16_t, int8x16_t) -> int32x4_t + Copy,
) {
    let Q4Q5Tile { nibbles, high_bits, scales, mins, xq, xs, sums: xsums, nb } = *tile;
    let cols = nb * Q4Q5_BLOCK;
    let zero = vdupq_n_s32(0);
    let low4 = vdupq_n_s8(0x0F);
    let offset = if Q5 { -16.0 } else { -8.0 };
    let mut acc = [[vdupq_n_f32(0.0); 2]; T];
    for b in 0..nb {
        let wblock: &[i8] = bytemuck::cast_slice(&nibbles[b * TILE_BLOCK_NIBBLE_BYTES..][..TILE_BLOCK_NIBBLE_BYTES]);
        let xv: [[int8x16_t; 2]; T] = std::array::from_fn(|t| {
            let xb = &xq[t * cols + b * Q4Q5_BLOCK..][..Q4Q5_BLOCK];
            [load16_i8(xb), load16_i8(&xb[16..])]
        });
        // Row dot products (4 partial sums each) are folded by `addp` as soon
        // as a pair exists, so few partial vectors per token are live.
        let mut quads = [[zero; 2]; T];
        for h in 0..2 {
            let mut pairs = [[zero; 2]; T];
            for p in 0..2 {
                let mut dots = [[zero; 2]; T];
                for i in 0..2 {
                    let r = 4 * h + 2 * p + i;
                    let v = load16_i8(&wblock[r * 16..]);
                    let mut lo = vandq_s8(v, low4);
                    let mut hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(vreinterpretq_u8_s8(v)));
                    if Q5 {
                        let [bits_lo, bits_hi] = fifth_bits(&high_bits[b * TILE_BLOCK_FIFTH_BYTES..], r);
                        lo = vorrq_s8(lo, bits_lo);
                        hi = vorrq_s8(hi, bits_hi);
                    }
                    for t in 0..T {
                        dots[t][i] = dot(dot(zero, lo, xv[t][0]), hi, xv[t][1]);
                    }
                }
                // [a0+a1, a2+a3, b0+b1, b2+b3]: two partial sums per row.
                for t in 0..T {
                    pairs[t][p] = vpaddq_s32(dots[t][0], dots[t][1]);
                }
            }
            // One full sum per row: rows 4h..4h + 4 in order.
            for t in 0..T {
                quads[t][h] = vpaddq_s32(pairs[t][0], pairs[t][1]);
            }
        }
        let d = load8_f16(&scales[b * 8..]);
        let m = if MIN { load8_f16(&mins[b * 8..]) } else { d.map(|d| vmulq_n_f32(d, offset)) };
        for t in 0..T {
            let (x_scale, x_sum) = (xs[t * nb + b], xsums[t * nb + b]);
            for h in 0..2 {
                // |isum| <= 32 × 31 × 128 < 2^24: the conversion is exact.
                let isum = vcvtq_f32_s32(quads[t][h]);
                acc[t][h] = vfmaq_f32(acc[t][h], isum, vmulq_n_f32(d[h], x_scale));
                acc[t][h] = vfmaq_n_f32(acc[t][h], m[h], x_sum);
            }
        }
    }
    for (sums, acc) in sums.iter_mut().zip(&acc) {
        store4(sums, acc[0]);
        store4(&mut sums[4..], acc[1]);
    }
}

/// Row `r`'s fifth bits as `0x10` bytes, `[0]` for values 0-15, `[1]` for
/// 16-31, from the tile-block's 32 bytes of them: the 16 that line up with
/// the row's nibble bytes, tested against the row pair's two bits
/// (`gpt_fast_quant::q4q5::fifth_bit_at`).
#[inline]
#[target_feature(enable = "neon")]
fn fifth_bits(block_bits: &[u8], r: usize) -> [int8x16_t; 2] {
    let bits = vreinterpretq_u8_s8(load16_i8(bytemuck::cast_slice(&block_bits[16 * (r % 2)..][..16])));
    let (pair_bit, sixteen) = (1u8 << (r / 2 * 2), vdupq_n_u8(0x10));
    [pair_bit, pair_bit << 1].map(|bit| vreinterpretq_s8_u8(vandq_u8(vtstq_u8(bits, vdupq_n_u8(bit)), sixteen)))
}
