//! The AVX2 K-quant matmuls (Q4_K, Q5_K, Q6_K weights packed in tiles by
//! `gpt_fast_quant::kquant`, q8 activations with block sums). The loops over
//! tiles and tokens are [`crate::driver::ktile`]'s; this file holds the tiles.
//!
//! Per tile of 8 rows, per 32-value block and token, the 8 rows' quants are
//! dotted with the token's 32 activation quants in integers (exact) by
//! `maddubs`: the K-quants' quants are unsigned (Q6_K's before its `- 32`),
//! so no sign trick is needed, and with quants below 64 and activations in
//! [-127, 127] a pair of products stays below 16,002 (no saturation). The 8
//! row sums are gathered by `hadd` into one vector, converted to f32 and
//! fused-multiply-added with their scales, as the q8 kernel does. What
//! differs from the reference is that fusing (two roundings fewer per block).

use std::arch::x86_64::*;
use std::ops::Range;

use gpt_fast_quant::kquant::{q4_k, q5_k, q6_k};
use half::f16;

use super::matmul::{hsum_quads, prefetch_ahead};
use super::simd::{load32_i8, load8_f16};
use crate::driver::ktile::{self, KTile};
use crate::driver::q8::TileSums;
use crate::{Q8Acts, Q8_BLOCK};

/// Values per super-block, and 32-value blocks per super-block.
const SUPERBLOCK: usize = ktile::SUPERBLOCK;
const BLOCKS: usize = SUPERBLOCK / Q8_BLOCK;

macro_rules! entry {
    ($(#[$doc:meta])* $name:ident, $record:expr, $tile:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA and F16C.
        #[target_feature(enable = "avx2,fma,f16c")]
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
            ktile::matmul(w, $record, cols, rows, x, x_sums, n, out, out_stride, |tile, sums| match tile.tokens {
                4 => $tile::<4>(&tile, sums),
                3 => $tile::<3>(&tile, sums),
                2 => $tile::<2>(&tile, sums),
                _ => $tile::<1>(&tile, sums),
            });
        }
    };
}

entry!(
    /// As [`crate::reference::matmul_q4_k`].
    matmul_q4_k, q4_k::RECORD_BYTES, q4_k_tile
);
entry!(
    /// As [`crate::reference::matmul_q5_k`].
    matmul_q5_k, q5_k::RECORD_BYTES, q5_k_tile
);
entry!(
    /// As [`crate::reference::matmul_q6_k`].
    matmul_q6_k, q6_k::RECORD_BYTES, q6_k_tile
);

/// 32 bytes from the front of `s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load32(s: &[u8]) -> __m256i {
    load32_i8(bytemuck::cast_slice(&s[..32]))
}

/// 8 f16 (16 little-endian bytes) from the front of `s`, widened to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load8_f16_bytes(s: &[u8]) -> __m256 {
    let v: [f16; 8] = bytemuck::pod_read_unaligned(&s[..16]);
    load8_f16(&v)
}

/// 8 bytes (one per row) widened to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn u8x8_to_f32(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
}

/// The 8-byte group `k` (0..4) of `v`, in the low half of the result.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn group8(v: __m256i, k: usize) -> __m128i {
    let half = if k < 2 { _mm256_castsi256_si128(v) } else { _mm256_extracti128_si256::<1>(v) };
    if k.is_multiple_of(2) {
        half
    } else {
        _mm_srli_si128::<8>(half)
    }
}

/// Per token `t`, the 8 sums `Σ_l q_r[l] · x_t[l]` of rows `r` (`row(r)`
/// gives row `r`'s 32 unsigned quants and the i16 weights `madd` applies to
/// its pair sums) against `xv[t]`, minus `offset[t]`'s pair sums first when
/// `OFFSET` (Q6_K's `- 32`). The row sums are folded by `hadd` as soon as a
/// pair exists, so few partial vectors are live.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // h, p, i together name the row: 4h + 2p + i
fn row_dots<const T: usize, const OFFSET: bool>(
    xv: &[__m256i; T],
    offset: &[__m256i; T],
    row: impl Fn(usize) -> (__m256i, __m256i),
) -> [__m256i; T] {
    let mut quads = [[_mm256_setzero_si256(); 2]; T];
    for h in 0..2 {
        let mut pairs = [[_mm256_setzero_si256(); 2]; T];
        for p in 0..2 {
            let mut dots = [[_mm256_setzero_si256(); 2]; T];
            for i in 0..2 {
                let (q, weights) = row(4 * h + 2 * p + i);
                for t in 0..T {
                    let mut prod = _mm256_maddubs_epi16(q, xv[t]);
                    if OFFSET {
                        prod = _mm256_sub_epi16(prod, offset[t]);
                    }
                    dots[t][i] = _mm256_madd_epi16(prod, weights);
                }
            }
            for t in 0..T {
                pairs[t][p] = _mm256_hadd_epi32(dots[t][0], dots[t][1]);
            }
        }
        for t in 0..T {
            quads[t][h] = _mm256_hadd_epi32(pairs[t][0], pairs[t][1]);
        }
    }
    std::array::from_fn(|t| hsum_quads(quads[t]))
}

/// The 6-bit scales and minimums of 8 rows' 8 sub-blocks from the
/// `[byte][row]` planes of their 12 packed bytes (ggml's
/// `get_scale_min_k4`, for all of them at once): `[sub-block][row]` bytes,
/// sub-blocks 0..4 then 4..8, scales then minimums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scales_mins(planes: &[u8]) -> ([__m256i; 2], [__m256i; 2]) {
    let (a, b, c) = (load32(planes), load32(&planes[32..]), load32(&planes[64..]));
    let (low6, low4, top2) = (_mm256_set1_epi8(63), _mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
    // Sub-blocks 4..8 keep their low 4 bits in bytes 8..12 and their top two
    // in bits 6..8 of bytes 0..8: a 16-bit shift by 2 moves those to bits 4..6
    // of the same byte (the mask drops what crossed from the next byte).
    let sc_hi = _mm256_or_si256(_mm256_and_si256(c, low4), _mm256_and_si256(_mm256_srli_epi16::<2>(a), top2));
    let m_hi = _mm256_or_si256(
        _mm256_and_si256(_mm256_srli_epi16::<4>(c), low4),
        _mm256_and_si256(_mm256_srli_epi16::<2>(b), top2),
    );
    ([_mm256_and_si256(a, low6), sc_hi], [_mm256_and_si256(b, low6), m_hi])
}

/// Q4_K and Q5_K's tile: `high_bits(j, r)` is OR-ed into row `r`'s nibbles of
/// sub-block `j` (Q5_K's fifth bits; zero for Q4_K).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q45_tile<const T: usize>(
    tile: &KTile,
    sums: &mut TileSums,
    record_bytes: usize,
    (d_at, dmin_at, scales_at, qs_at): (usize, usize, usize, usize),
    high_bits: impl Fn(&[u8], usize, usize) -> __m256i,
) {
    let KTile { w, xq, xs, xsums, superblocks, .. } = *tile;
    let (cols, nb) = (superblocks * SUPERBLOCK, superblocks * BLOCKS);
    let (ones, low4) = (_mm256_set1_epi16(1), _mm256_set1_epi8(0x0F));
    let mut acc = [_mm256_setzero_ps(); T];
    for sb in 0..superblocks {
        let rec = &w[sb * record_bytes..][..record_bytes];
        if T == 1 {
            prefetch_ahead(bytemuck::cast_slice(rec));
        }
        let (d, dmin) = (load8_f16_bytes(&rec[d_at..]), load8_f16_bytes(&rec[dmin_at..]));
        let (scales, mins) = scales_mins(&rec[scales_at..]);
        for j in 0..BLOCKS {
            let b = sb * BLOCKS + j;
            let xv: [__m256i; T] = std::array::from_fn(|t| load32_i8(&xq[t * cols + b * Q8_BLOCK..]));
            let group = &rec[qs_at + (j / 2) * 256..][..256];
            let isums = row_dots::<T, false>(&xv, &xv, |r| {
                let q = load32(&group[r * 32..]);
                let q = if j % 2 == 0 { q } else { _mm256_srli_epi16::<4>(q) };
                (_mm256_or_si256(_mm256_and_si256(q, low4), high_bits(rec, j, r)), ones)
            });
            let d_sc = _mm256_mul_ps(d, u8x8_to_f32(group8(scales[j / 4], j % 4)));
            let dmin_m = _mm256_mul_ps(dmin, u8x8_to_f32(group8(mins[j / 4], j % 4)));
            for t in 0..T {
                let scale = _mm256_mul_ps(d_sc, _mm256_set1_ps(xs[t * nb + b]));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isums[t]), scale, acc[t]);
                acc[t] = _mm256_fnmadd_ps(dmin_m, _mm256_set1_ps(xsums[t * nb + b]), acc[t]);
            }
        }
    }
    for (sums, &acc) in sums.iter_mut().zip(&acc) {
        super::simd::store8(sums, acc);
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_k_tile<const T: usize>(tile: &KTile, sums: &mut TileSums) {
    let at = (q4_k::D, q4_k::DMIN, q4_k::SCALES, q4_k::QS);
    q45_tile::<T>(tile, sums, q4_k::RECORD_BYTES, at, |_, _, _| _mm256_setzero_si256());
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_k_tile<const T: usize>(tile: &KTile, sums: &mut TileSums) {
    let at = (q5_k::D, q5_k::DMIN, q5_k::SCALES, q5_k::QS);
    q45_tile::<T>(tile, sums, q5_k::RECORD_BYTES, at, |rec, j, r| {
        // Bit j of each of row r's 32 qh bytes, moved to bit 4.
        let bit = _mm256_set1_epi8(1 << j);
        let qh = _mm256_and_si256(load32(&rec[q5_k::QH + r * 32..]), bit);
        _mm256_and_si256(_mm256_cmpeq_epi8(qh, bit), _mm256_set1_epi8(0x10))
    });
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_tile<const T: usize>(tile: &KTile, sums: &mut TileSums) {
    let KTile { w, xq, xs, superblocks, .. } = *tile;
    let (cols, nb) = (superblocks * SUPERBLOCK, superblocks * BLOCKS);
    let (low4, low2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x03));
    let thirty_two = _mm256_set1_epi8(32);
    let mut acc = [_mm256_setzero_ps(); T];
    for sb in 0..superblocks {
        let rec = &w[sb * q6_k::RECORD_BYTES..][..q6_k::RECORD_BYTES];
        if T == 1 {
            prefetch_ahead(bytemuck::cast_slice(rec));
        }
        let d = load8_f16_bytes(&rec[q6_k::D..]);
        for c in 0..BLOCKS {
            let b = sb * BLOCKS + c;
            let (half, quarter) = (c / 4, c % 4);
            let xv: [__m256i; T] = std::array::from_fn(|t| load32_i8(&xq[t * cols + b * Q8_BLOCK..]));
            // 32 × the pair sums of x: subtracted from q·x's pair sums, q - 32.
            let offset: [__m256i; T] = std::array::from_fn(|t| _mm256_maddubs_epi16(thirty_two, xv[t]));
            // i16 lanes 0..8: the 8 rows' scales of sub-block 2c, lanes 8..16 of 2c + 1.
            let scales = _mm256_cvtepi8_epi16(load16(&rec[q6_k::SCALES + 16 * c..]));
            let ql = &rec[q6_k::QL + (2 * half + quarter % 2) * 256..][..256];
            let qh = &rec[q6_k::QH + half * 256..][..256];
            let (nibble_shift, high_shift) =
                (_mm_cvtsi32_si128(4 * (quarter / 2) as i32), _mm_cvtsi32_si128(2 * quarter as i32));
            let isums = row_dots::<T, true>(&xv, &offset, |r| {
                let low = _mm256_and_si256(_mm256_srl_epi16(load32(&ql[r * 32..]), nibble_shift), low4);
                let high = _mm256_and_si256(_mm256_srl_epi16(load32(&qh[r * 32..]), high_shift), low2);
                let q = _mm256_or_si256(low, _mm256_slli_epi16::<4>(high));
                // Row r's two scales, each over its 16-value half.
                let pick = _mm256_set1_epi16(i16::from_le_bytes([2 * r as u8, 2 * r as u8 + 1]));
                (q, _mm256_shuffle_epi8(scales, pick))
            });
            for t in 0..T {
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(xs[t * nb + b]));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isums[t]), scale, acc[t]);
            }
        }
    }
    for (sums, &acc) in sums.iter_mut().zip(&acc) {
        super::simd::store8(sums, acc);
    }
}

/// 16 bytes from the front of `s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load16(s: &[u8]) -> __m128i {
    let a: &[u8; 16] = s.first_chunk().expect("load16: fewer than 16 bytes");
    // SAFETY: `a` is 16 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(a.as_ptr().cast()) }
}
