//! The AVX-512 q8 matmul: for a few tokens (decode), the AVX2 kernel's tiling
//! (the driver in [`crate::driver::q8`]) with `vpdpbusd` as the inner product; for more, the GEMM
//! in `gemm_q8`.

use std::arch::x86_64::*;
use std::ops::Range;

use half::f16;

use super::gemm_q8::{gemm_q8, GEMM_MAX_COLS};
use super::simd::load64_i8;
use crate::driver::q8::{self, Q8Tile, TileSums};
use crate::x86_64::avx2::matmul::prefetch_ahead;
use crate::x86_64::avx2::simd::{load32_i8, load8_f16, store8};
use crate::{Q8Acts, Q8_BLOCK, Q8_TILE_ROWS};

/// Tokens from which [`matmul_q8_vnni`] runs the GEMM (`gemm_q8`, tokens in
/// lanes) rather than the tiling below. Measured on a Xeon (Emerald Rapids,
/// 1536 × 576 and 576 × 1536): at 3 tokens the tiling is faster, at 4 both
/// are alike, at 5 the GEMM is 1.2-1.3× faster, at 8 1.4-2×. Both give the
/// same bits, so the threshold changes no result.
const GEMM_MIN_TOKENS: usize = 5;

/// As [`crate::reference::matmul_q8`], with the same tiling as the AVX2 kernel
/// (the driver in [`crate::driver::q8`]) and a different inner product: one 512-bit register holds a
/// block of two rows, and `vpdpbusd` (u8 × i8, 4 products summed per i32 lane)
/// does 64 multiply-adds at once.
///
/// `vpdpbusd` needs one unsigned operand, so weights are offset by 128
/// (`w + 128` in [0, 255]) and the excess `128 Σx` per lane group is
/// subtracted by starting the accumulator at `-128 Σx`. That correction
/// depends on the token only, so one `vpdpbusd` per token and block serves
/// all 8 rows. Offsetting the activations instead needs one per row pair
/// (`-128 Σw`): the one-token tile then ran 8 `vpdpbusd` per block instead of
/// 5, and 10% slower on a cache-resident matrix. All of it is exact i32
/// arithmetic (no saturation), with the same i32 per lane either way, so any
/// i8 quants work, -128 included; as in AVX2 the only float difference from
/// the reference is one FMA per block. The GEMM does the same float
/// operations per output, so the result for a token does not depend on how
/// many come with it.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn matmul_q8_vnni(
    quants: &[i8],
    scales: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    if n >= GEMM_MIN_TOKENS && cols > 0 && cols <= GEMM_MAX_COLS {
        gemm_q8(quants, scales, cols, rows, x, n, out, out_stride);
        return;
    }
    q8::matmul(quants, scales, cols, rows, x, n, out, out_stride, |tile, sums| match tile.tokens {
        4 => q8_tile::<4>(&tile, sums),
        3 => q8_tile::<3>(&tile, sums),
        2 => q8_tile::<2>(&tile, sums),
        _ => q8_tile::<1>(&tile, sums),
    });
}

/// One tile of 8 rows against `T` tokens, as the AVX2 `q8_tile`, except that
/// lanes come out in row order `[0, 2, 4, 6, 1, 3, 5, 7]` from the reduction;
/// the scales are permuted to match and the sums are put back in order at the end.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8_tile<const T: usize>(tile: &Q8Tile, sums: &mut TileSums) {
    let Q8Tile { wq, ws, xq, xs, nb, .. } = *tile;
    let cols = nb * Q8_BLOCK;
    let offset = _mm512_set1_epi8(-128); // 0x80: as an unsigned byte, 128
    let to_reduced_order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        let wblock = &wq[b * Q8_BLOCK * Q8_TILE_ROWS..][..Q8_BLOCK * Q8_TILE_ROWS];
        if T == 1 {
            prefetch_ahead(wblock);
        }
        // w[k] holds rows 2k (low 256 bits) and 2k + 1 (high 256 bits), as w + 128 in u8.
        let w: [__m512i; 4] = std::array::from_fn(|k| _mm512_xor_si512(load64_i8(&wblock[k * 2 * Q8_BLOCK..]), offset));
        let w_scales = _mm256_permutevar8x32_ps(load8_f16(&ws[b * Q8_TILE_ROWS..]), to_reduced_order);
        for t in 0..T {
            let x = _mm512_broadcast_i64x4(load32_i8(&xq[t * cols + b * Q8_BLOCK..]));
            // -128 Σx per group of 4 bytes: cancels the +128 offset of the weights.
            let zero = _mm512_setzero_si512();
            let bias = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, offset, x));
            let d: [__m512i; 4] = std::array::from_fn(|k| _mm512_dpbusd_epi32(bias, w[k], x));
            let isum = _mm256_cvtepi32_ps(reduce(d));
            let scale = _mm256_mul_ps(w_scales, _mm256_set1_ps(xs[t * nb + b]));
            acc[t] = _mm256_fmadd_ps(isum, scale, acc[t]);
        }
    }
    let to_row_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for t in 0..T {
        store8(&mut sums[t], _mm256_permutevar8x32_ps(acc[t], to_row_order));
    }
}

/// Row sums of `d` (`d[k]`: row 2k in 128-bit chunks 0-1, row 2k + 1 in chunks
/// 2-3, 4 partial sums per chunk), in the order `[0, 2, 4, 6, 1, 3, 5, 7]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn reduce(d: [__m512i; 4]) -> __m256i {
    // Per 128-bit chunk: [a0+a2, b0+b2, a1+a3, b1+b3], then [Σa, Σb, Σc, Σd].
    let ab = _mm512_add_epi32(_mm512_unpacklo_epi32(d[0], d[1]), _mm512_unpackhi_epi32(d[0], d[1]));
    let cd = _mm512_add_epi32(_mm512_unpacklo_epi32(d[2], d[3]), _mm512_unpackhi_epi32(d[2], d[3]));
    let s = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
    // Chunks c0..c3 of `s`: c0 and c1 hold halves of rows 0, 2, 4, 6; c2 and c3
    // of rows 1, 3, 5, 7. Sum c0 + c1 and c2 + c3.
    let (lo, hi) = (_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s));
    let (even, odd) = (_mm256_permute2x128_si256::<0x20>(lo, hi), _mm256_permute2x128_si256::<0x31>(lo, hi));
    _mm256_add_epi32(even, odd)
}
