//! The AVX2 Q4_0/Q4_1/Q5_0/Q5_1 matmul: decode of a Q4_1 GGUF model spends
//! most of its time here with one token.

use std::arch::x86_64::*;
use std::ops::Range;

use gpt_fast_quant::q4q5::Kind;

use super::matmul::{prefetch_ahead, Q8_PREFETCH_BYTES};
use super::simd::{broadcast16_i8, load32_i8, load8_f16, store8};
use crate::driver::q4q5::{self, Q4Q5Tile};
use crate::driver::tiles::TileSums;
use crate::q4q5::{
    Q4Q5Weight, Q8SumActs, Q4Q5_BLOCK, ROW_NIBBLE_BYTES, TILE_BLOCK_FIFTH_BYTES, TILE_BLOCK_NIBBLE_BYTES,
};

/// Bytes of one tile's block in a scale or minimum plane (8 rows' f16).
const F16_BLOCK_BYTES: usize = 8 * std::mem::size_of::<half::f16>();

/// As [`crate::reference::matmul_q4q5`].
///
/// Per tile of 8 interleaved rows and block of 32 columns, one 256-bit load
/// holds two rows' 16 nibble bytes: masking gives their first 16 quants,
/// shifting their last 16 (plus the fifth bits for Q5), against the token's
/// first and last 16 activation quants broadcast to both halves. The quants
/// are unsigned, as `maddubs` wants its first operand, so no sign trick is
/// needed: a pair of products is at most `2 × 31 × 128 = 7936`, the sum of
/// the two halves' pairs `15872` and `hadd`'s sum of two of those
/// `31744 < 32767`, so nothing saturates or wraps and the integer dot product
/// is exact. Per block the row sums become
/// `fma(isum, d·xs, acc)` then `fma(m', sum, acc)`: two roundings fewer than
/// the reference, the only difference from it. Every token count runs the same
/// operations per token, so results do not depend on the batch.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matmul_q4q5(
    w: &Q4Q5Weight,
    cols: usize,
    rows: Range<usize>,
    x: &Q8SumActs,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    match w.kind {
        Kind::Q4_0 => by_kind::<false, false>(w, cols, rows, x, n, out, out_stride),
        Kind::Q4_1 => by_kind::<false, true>(w, cols, rows, x, n, out, out_stride),
        Kind::Q5_0 => by_kind::<true, false>(w, cols, rows, x, n, out, out_stride),
        Kind::Q5_1 => by_kind::<true, true>(w, cols, rows, x, n, out, out_stride),
    }
}

/// [`matmul_q4q5`] for one kind: `Q5` (fifth bits), `MIN` (a minimum per block).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn by_kind<const Q5: bool, const MIN: bool>(
    w: &Q4Q5Weight,
    cols: usize,
    rows: Range<usize>,
    x: &Q8SumActs,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    q4q5::matmul(w, cols, rows, x, n, out, out_stride, |tile, tokens, sums| match tokens {
        4 => tile_kernel::<4, Q5, MIN>(&tile, sums),
        3 => tile_kernel::<3, Q5, MIN>(&tile, sums),
        2 => tile_kernel::<2, Q5, MIN>(&tile, sums),
        _ => tile_kernel::<1, Q5, MIN>(&tile, sums),
    });
}

/// One tile of 8 rows against `T` tokens: `sums[t][r]` = row `r` · token `t`.
/// Lanes hold rows in the order `[0, 2, 4, 6, 1, 3, 5, 7]` (what the `hadd`
/// reduction gives); scales are permuted to match, sums put back at the end.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_kernel<const T: usize, const Q5: bool, const MIN: bool>(tile: &Q4Q5Tile, sums: &mut TileSums) {
    let Q4Q5Tile { nibbles, high_bits, scales, mins, xq, xs, sums: xsums, nb } = *tile;
    let cols = nb * Q4Q5_BLOCK;
    let low4 = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let to_reduced_order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    let offset = _mm256_set1_ps(if Q5 { -16.0 } else { -8.0 });
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        let wblock: &[i8] = bytemuck::cast_slice(&nibbles[b * TILE_BLOCK_NIBBLE_BYTES..][..TILE_BLOCK_NIBBLE_BYTES]);
        if T == 1 {
            prefetch_ahead(wblock);
            // The other planes are separate streams: the same number of
            // blocks ahead, one prefetch per line.
            if Q5 && b % 2 == 0 {
                prefetch_plane(high_bits, b * TILE_BLOCK_FIFTH_BYTES, TILE_BLOCK_FIFTH_BYTES);
            }
            if b % 4 == 0 {
                prefetch_plane(bytemuck::cast_slice(scales), b * F16_BLOCK_BYTES, F16_BLOCK_BYTES);
                if MIN {
                    prefetch_plane(bytemuck::cast_slice(mins), b * F16_BLOCK_BYTES, F16_BLOCK_BYTES);
                }
            }
        }
        // The block's fifth bits: those of row pair (2k, 2k + 1) lie in
        // bit 2k (values 0-15) and 2k + 1 (16-31) of the bytes that line up
        // with the pair's nibble bytes.
        let fifth = if Q5 { load32_i8(bytemuck::cast_slice(&high_bits[b * TILE_BLOCK_FIFTH_BYTES..])) } else { low4 };
        let xv: [[__m256i; 2]; T] = std::array::from_fn(|t| {
            let xb = &xq[t * cols + b * Q4Q5_BLOCK..][..Q4Q5_BLOCK];
            [broadcast16_i8(xb), broadcast16_i8(&xb[16..])]
        });
        // Row pairs are folded by hadd as soon as two exist, so few partial
        // vectors per token are live: first in i16 (two row pairs' 16-bit
        // partial sums into one vector), then widened once.
        let mut halves = [[_mm256_setzero_si256(); 2]; T];
        for (h, wquad) in wblock.chunks_exact(4 * ROW_NIBBLE_BYTES).enumerate() {
            let mut prods = [[_mm256_setzero_si256(); 2]; T];
            for (p, wpair) in wquad.chunks_exact(2 * ROW_NIBBLE_BYTES).enumerate() {
                let k = 2 * h + p;
                let v = load32_i8(wpair);
                let mut lo = _mm256_and_si256(v, low4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4);
                if Q5 {
                    lo = _mm256_or_si256(lo, sixteen_where(fifth, 2 * k));
                    hi = _mm256_or_si256(hi, sixteen_where(fifth, 2 * k + 1));
                }
                for t in 0..T {
                    // Rows 2k (low half) and 2k + 1 (high half), 8 partial sums each.
                    prods[t][p] =
                        _mm256_add_epi16(_mm256_maddubs_epi16(lo, xv[t][0]), _mm256_maddubs_epi16(hi, xv[t][1]));
                }
            }
            for t in 0..T {
                // Rows 4h, 4h + 2 (low half) and 4h + 1, 4h + 3 (high), 2 partial sums each.
                halves[t][h] = _mm256_madd_epi16(_mm256_hadd_epi16(prods[t][0], prods[t][1]), ones);
            }
        }
        let d = _mm256_permutevar8x32_ps(load8_f16(&scales[b * 8..]), to_reduced_order);
        let m = if MIN {
            _mm256_permutevar8x32_ps(load8_f16(&mins[b * 8..]), to_reduced_order)
        } else {
            _mm256_mul_ps(d, offset)
        };
        for t in 0..T {
            // |isum| <= 32 × 31 × 128 < 2^24: the conversion is exact.
            let isum = _mm256_cvtepi32_ps(_mm256_hadd_epi32(halves[t][0], halves[t][1]));
            acc[t] = _mm256_fmadd_ps(isum, _mm256_mul_ps(d, _mm256_set1_ps(xs[t * nb + b])), acc[t]);
            acc[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(xsums[t * nb + b]), acc[t]);
        }
    }
    let to_row_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for t in 0..T {
        store8(&mut sums[t], _mm256_permutevar8x32_ps(acc[t], to_row_order));
    }
}

/// Prefetches (into L2) the line of `plane` (`[block][block_bytes]`) that a
/// one-token matmul reads as many blocks after the one at byte `at` as
/// [`prefetch_ahead`] runs ahead in the nibbles. A hint: past the end of the
/// plane it is dropped.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn prefetch_plane(plane: &[u8], at: usize, block_bytes: usize) {
    let ahead = Q8_PREFETCH_BYTES / TILE_BLOCK_NIBBLE_BYTES * block_bytes;
    _mm_prefetch::<_MM_HINT_T1>(plane.as_ptr().wrapping_add(at + ahead).cast());
}

/// `0x10` in each byte of `bits` whose bit `bit` (`< 8`) is set, else 0:
/// one 16-bit shift that brings that bit to bit 4 (bits crossing from the
/// neighbouring byte land elsewhere and are masked off) and a mask.
/// `bit` is a constant in the unrolled caller, so the match folds.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sixteen_where(bits: __m256i, bit: usize) -> __m256i {
    let moved = match bit {
        0 => _mm256_slli_epi16::<4>(bits),
        1 => _mm256_slli_epi16::<3>(bits),
        2 => _mm256_slli_epi16::<2>(bits),
        3 => _mm256_add_epi8(bits, bits),
        4 => bits,
        5 => _mm256_srli_epi16::<1>(bits),
        6 => _mm256_srli_epi16::<2>(bits),
        _ => _mm256_srli_epi16::<3>(bits),
    };
    _mm256_and_si256(moved, _mm256_set1_epi8(0x10))
}
