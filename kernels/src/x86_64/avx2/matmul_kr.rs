//! The AVX2 matmul of gpt-fast's q4_kr weights (`gpt_fast_quant::q4_kr`,
//! q8 activations with block sums); the loops over tiles and tokens are
//! [`crate::driver::q4_kr`]'s. A q4_kr group is a Q4_K super-block record
//! without its `d`, `dmin`, so the tile reads it as the Q4_K tile does
//! ([`super::matmul_k`]: 4 columns of all 8 rows per 32 bytes, `maddubs`
//! with the token's 4 quants broadcast, row `r`'s sum in lane `r`), with the
//! rows' `d`, `dmin` loaded once per tile and a cut last group.

use std::arch::x86_64::*;
use std::ops::Range;

use gpt_fast_quant::q4_kr::{self, GROUP_SUBS};

use super::matmul::prefetch_ahead;
use super::matmul_k::{broadcast4, load32, load8_f16_bytes, scales_mins, GroupScales};
use crate::driver::q4_kr::{self as driver, KrTile};
use crate::driver::tiles::TileSums;
use crate::{Q8Acts, Q8_BLOCK};

/// As [`crate::reference::matmul_q4_kr`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)] // the matmul signature plus the activation sums
pub unsafe fn matmul_q4_kr(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    x_sums: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    driver::matmul(w, cols, rows, x, x_sums, n, out, out_stride, |tile, sums| match tile.tokens {
        4 => q4_kr_tile::<4>(&tile, sums),
        3 => q4_kr_tile::<3>(&tile, sums),
        2 => q4_kr_tile::<2>(&tile, sums),
        _ => q4_kr_tile::<1>(&tile, sums),
    });
}

/// The 6-bit scales and minimums of a cut group of at most 4 sub-blocks
/// (8 scale bytes per row: `[byte][row]`, sub-block `j`'s scale in byte `j`,
/// its minimum in byte `j + 4`), as [`scales_mins`] gives a whole group's.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn scales_mins_low(planes: &[u8]) -> ([__m256i; 2], [__m256i; 2]) {
    let (low6, zero) = (_mm256_set1_epi8(63), _mm256_setzero_si256());
    let v = load32(planes);
    let m = load32(&planes[32..]);
    ([_mm256_and_si256(v, low6), zero], [_mm256_and_si256(m, low6), zero])
}

/// One tile: per group, per pair of sub-blocks `(2p, 2p + 1)` (low and high
/// nibbles of the same 32 bytes per 4 columns), 8 chunks of i16 pairs
/// (below 2^15: `8 × 2 × 15 × 128`) widened by `madd`, then scaled per
/// sub-block as Q4_K's. A cut group's missing high sub-block is skipped (its
/// activations lie past the row).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // i picks the sub-block's scales and activations too
fn q4_kr_tile<const T: usize>(tile: &KrTile, sums: &mut TileSums) {
    let KrTile { w, xq, xs, xsums, layout, .. } = *tile;
    let (cols, nb) = (layout.cols, layout.cols / Q8_BLOCK);
    let (ones, low4, zero) = (_mm256_set1_epi16(1), _mm256_set1_epi8(0x0F), _mm256_setzero_si256());
    let (d, dmin) = (load8_f16_bytes(w), load8_f16_bytes(&w[q4_kr::DMIN..]));
    let mut acc = [_mm256_setzero_ps(); T];
    for g in 0..=layout.groups {
        let subs = if g < layout.groups { GROUP_SUBS } else { layout.tail_subs };
        if subs == 0 {
            break;
        }
        let rec = &w[layout.group_offset(g)..layout.quants_offset(g)];
        let qs = &w[layout.quants_offset(g)..];
        if T == 1 {
            prefetch_ahead(bytemuck::cast_slice(&w[layout.group_offset(g)..]));
        }
        let (scales, mins) = if rec.len() >= 12 * 8 { scales_mins(rec) } else { scales_mins_low(rec) };
        let group = GroupScales { d, dmin, scales, mins };
        for p in 0..subs.div_ceil(2) {
            let b0 = g * GROUP_SUBS + 2 * p;
            let halves = if 2 * p + 1 < subs { 2 } else { 1 };
            let mut pairs = [[zero; 2]; T];
            for k in 0..8 {
                let v = load32(&qs[(8 * p + k) * 32..]);
                let q = [_mm256_and_si256(v, low4), _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4)];
                for (t, pairs) in pairs.iter_mut().enumerate() {
                    for i in 0..halves {
                        let x = broadcast4(xq, t * cols + (b0 + i) * Q8_BLOCK + 4 * k);
                        pairs[i] = _mm256_add_epi16(pairs[i], _mm256_maddubs_epi16(q[i], x));
                    }
                }
            }
            for i in 0..halves {
                let mut isums = [zero; T];
                for t in 0..T {
                    isums[t] = _mm256_madd_epi16(pairs[t][i], ones);
                }
                group.add_sub_block(&mut acc, 2 * p + i, isums, xs, xsums, nb, b0 + i);
            }
        }
    }
    for (sums, &acc) in sums.iter_mut().zip(&acc) {
        super::simd::store8(sums, acc);
    }
}
