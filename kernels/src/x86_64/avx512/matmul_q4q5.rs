//! The AVX-512 Q4_0/Q4_1/Q5_0/Q5_1 matmul: the AVX2 kernel's tiling (the
//! driver in [`crate::driver::q4q5`]) with `vpdpbusd` as the inner product.

use std::arch::x86_64::*;
use std::ops::Range;

use gpt_fast_quant::q4q5::Kind;

use super::simd::{broadcast16_i8, load64_i8};
use crate::driver::q4q5::{self, Q4Q5Tile};
use crate::driver::tiles::TileSums;
use crate::q4q5::{Q4Q5Weight, Q8SumActs, Q4Q5_BLOCK, TILE_BLOCK_NIBBLE_BYTES};
use crate::x86_64::avx2::matmul::prefetch_ahead;
use crate::x86_64::avx2::simd::{load8_f16, store8};

/// As [`crate::reference::matmul_q4q5`]. One 512-bit load holds four rows'
/// nibble bytes (one row per 128-bit lane); masking and shifting give their
/// first and last 16 quants, which `vpdpbusd` multiplies (unsigned, as it wants
/// its first operand) with the token's activation quants broadcast to every
/// lane, 4 products summed per i32 lane, exactly. The float steps per block are
/// the AVX2 kernel's (`fma(isum, d·xs, acc)`, `fma(m', sum, acc)`), so both
/// give the same bits.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn matmul_q4q5_vnni(
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

/// [`matmul_q4q5_vnni`] for one kind: `Q5` (fifth bits), `MIN` (a minimum per block).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
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
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile_kernel<const T: usize, const Q5: bool, const MIN: bool>(tile: &Q4Q5Tile, sums: &mut TileSums) {
    let Q4Q5Tile { nibbles, high_bits, scales, mins, xq, xs, sums: xsums, nb } = *tile;
    let cols = nb * Q4Q5_BLOCK;
    let low4 = _mm512_set1_epi8(0x0F);
    let sixteen = _mm512_set1_epi8(0x10);
    let offset = _mm256_set1_ps(if Q5 { -16.0 } else { -8.0 });
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        let wblock: &[i8] = bytemuck::cast_slice(&nibbles[b * TILE_BLOCK_NIBBLE_BYTES..][..TILE_BLOCK_NIBBLE_BYTES]);
        if T == 1 {
            prefetch_ahead(wblock);
        }
        // [h]: rows 4h..4h + 4, one per 128-bit lane; `lo` their values 0-15, `hi` 16-31.
        let v: [__m512i; 2] = std::array::from_fn(|h| load64_i8(&wblock[h * 64..]));
        let mut lo = v.map(|v| _mm512_and_si512(v, low4));
        let mut hi = v.map(|v| _mm512_and_si512(_mm512_srli_epi16::<4>(v), low4));
        if Q5 {
            let masks = fifth_bit_masks(&high_bits[b * 8..][..8]);
            for h in 0..2 {
                lo[h] = _mm512_mask_add_epi8(lo[h], masks[h][0], lo[h], sixteen);
                hi[h] = _mm512_mask_add_epi8(hi[h], masks[h][1], hi[h], sixteen);
            }
        }
        let d = load8_f16(&scales[b * 8..]);
        let m = if MIN { load8_f16(&mins[b * 8..]) } else { _mm256_mul_ps(d, offset) };
        for t in 0..T {
            let xb = &xq[t * cols + b * Q4Q5_BLOCK..][..Q4Q5_BLOCK];
            let (x_lo, x_hi) = (broadcast16_i8(xb), broadcast16_i8(&xb[16..]));
            let dots: [__m512i; 2] =
                std::array::from_fn(|h| _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, lo[h], x_lo), hi[h], x_hi));
            // |isum| <= 32 × 31 × 128 < 2^24: the conversion is exact.
            let isum = _mm256_cvtepi32_ps(row_sums(dots));
            acc[t] = _mm256_fmadd_ps(isum, _mm256_mul_ps(d, _mm256_set1_ps(xs[t * nb + b])), acc[t]);
            acc[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(xsums[t * nb + b]), acc[t]);
        }
    }
    for t in 0..T {
        store8(&mut sums[t], acc[t]);
    }
}

/// The 8 row sums, in row order, of `dots[0]` (rows 0-3) and `dots[1]`
/// (rows 4-7), each with 4 partial sums per row in its row's 128-bit lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn row_sums(dots: [__m512i; 2]) -> __m256i {
    // Lane c: [a0+a2, b0+b2, a1+a3, b1+b3] (a = row c, b = row 4 + c), then [Σa, Σb, Σa, Σb].
    let ab = _mm512_add_epi32(_mm512_unpacklo_epi32(dots[0], dots[1]), _mm512_unpackhi_epi32(dots[0], dots[1]));
    let s = _mm512_add_epi32(ab, _mm512_shuffle_epi32::<0b01_00_11_10>(ab));
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_castsi512_si256(_mm512_permutexvar_epi32(order, s))
}

/// Byte masks of the quants whose fifth bit is set, for the two loads of a
/// block's four-row nibbles (`qh[r]`: row `r`'s bits, bit `i` for value `i`):
/// `[h][0]` for rows `4h..4h + 4` masked (values 0-15 of each lane), `[h][1]`
/// for them shifted (16-31). Mask bit `16c + i` is row `4h + c`'s bit `i`
/// (or `16 + i`), so each mask is a 2-byte gather from the rows' words: one
/// byte shuffle of the block's 32 bytes of fifth bits gives all four. Built
/// bit by bit in scalar code, the masks cost more than the dot products and
/// held Q5 decode to two thirds of the read bandwidth.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn fifth_bit_masks(qh: &[u32]) -> [[__mmask64; 2]; 2] {
    let qh: &[u32; 8] = qh.first_chunk().expect("fifth_bit_masks: fewer than 8 rows");
    // SAFETY: `qh` is 32 readable bytes; `loadu` has no alignment requirement.
    let v = unsafe { _mm256_loadu_si256(qh.as_ptr().cast()) };
    // Per 128-bit lane (four rows' words): their low halves, then their high halves.
    let gather = _mm256_setr_epi8(
        0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
    );
    let m = _mm256_shuffle_epi8(v, gather);
    let mut masks = [[0u64; 2]; 2];
    // SAFETY: `masks` is 32 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(masks.as_mut_ptr().cast(), m) };
    masks
}
