//! The AVX-512 Q4_0/Q4_1/Q5_0/Q5_1 matmul: the AVX2 kernel's tiling (the
//! driver in [`crate::driver::q4q5`]) with `vpdpbusd` as the inner product.

use std::arch::x86_64::*;
use std::ops::Range;

use gpt_fast_quant::q4q5::Kind;

use super::simd::{broadcast16_i8, load64_i8};
use crate::driver::q4q5::{self, Q4Q5Tile};
use crate::driver::tiles::TileSums;
use crate::q4q5::{Q4Q5Weight, Q8SumActs, Q4Q5_BLOCK, TILE_BLOCK_FIFTH_BYTES, TILE_BLOCK_NIBBLE_BYTES};
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
            // The block's 32 bytes of fifth bits line up with each 256-bit
            // half (a row pair) of the loads; each half's bit for its values
            // picks the bytes that get 16.
            let bits = broadcast32(&high_bits[b * TILE_BLOCK_FIFTH_BYTES..]);
            for h in 0..2 {
                let [lo_bits, hi_bits] = [0, 1].map(|v| pair_bits(4 * h + v));
                lo[h] = _mm512_mask_add_epi8(lo[h], _mm512_test_epi8_mask(bits, lo_bits), lo[h], sixteen);
                hi[h] = _mm512_mask_add_epi8(hi[h], _mm512_test_epi8_mask(bits, hi_bits), hi[h], sixteen);
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

/// The 32 bytes at the front of `s` in both 256-bit halves.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn broadcast32(s: &[u8]) -> __m512i {
    let a: &[u8; 32] = s.first_chunk().expect("broadcast32: fewer than 32 bytes");
    // SAFETY: `a` is 32 readable bytes; `loadu` has no alignment requirement.
    _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(a.as_ptr().cast()) })
}

/// Bit `bit` in the bytes of the low 256-bit half, bit `bit + 2` in the high
/// half: for a load of rows `4h..4h + 4` (`bit = 4h` for the values 0-15,
/// `4h + 1` for 16-31), the fifth-bit positions of its two row pairs
/// (`gpt_fast_quant::q4q5::fifth_bit_at`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pair_bits(bit: usize) -> __m512i {
    let (lo, hi) = (_mm256_set1_epi8((1u8 << bit) as i8), _mm256_set1_epi8((1u8 << (bit + 2)) as i8));
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}
