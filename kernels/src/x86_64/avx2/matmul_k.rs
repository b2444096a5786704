//! The AVX2 K-quant matmuls (Q4_K, Q5_K, Q6_K weights packed in tiles by
//! `gpt_fast_quant::kquant`, q8 activations with block sums). The loops over
//! tiles and tokens are [`crate::driver::ktile`]'s; this file holds the tiles.
//!
//! Per tile of 8 rows, per 32-value block and token, the tile stores 4
//! columns of all 8 rows per 32 bytes (`kquant`'s 4-byte units), so `maddubs`
//! of those quants with the token's 4 activation quants broadcast to every
//! lane leaves row `r`'s partial sums in lane `r`: the 8 row sums come out as
//! one vector with no horizontal additions. The K-quants' quants are unsigned
//! (Q6_K's before its `- 32`), so `maddubs` needs no sign trick; the i16
//! partial sums are widened by `madd` before they could overflow. The row
//! sums are converted to f32 and fused-multiply-added with their scales, as
//! the q8 kernel does. What differs from the reference is that fusing (two
//! roundings fewer per block).

use std::arch::x86_64::*;
use std::ops::Range;

use gpt_fast_quant::kquant::{q4_k, q5_k, q6_k};
use half::f16;

use super::matmul::prefetch_ahead;
use super::simd::{load32_i8, load8_f16};
use crate::driver::ktile::{self, KTile};
use crate::driver::tiles::TileSums;
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
pub(in crate::x86_64) fn load32(s: &[u8]) -> __m256i {
    load32_i8(bytemuck::cast_slice(&s[..32]))
}

/// 8 f16 (16 little-endian bytes) from the front of `s`, widened to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn load8_f16_bytes(s: &[u8]) -> __m256 {
    let v: [f16; 8] = bytemuck::pod_read_unaligned(&s[..16]);
    load8_f16(&v)
}

/// 8 bytes (one per row) widened to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn u8x8_to_f32(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
}

/// The 8-byte group `k` (0..4) of `v`, in the low half of the result.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn group8(v: __m256i, k: usize) -> __m128i {
    let half = if k < 2 { _mm256_castsi256_si128(v) } else { _mm256_extracti128_si256::<1>(v) };
    if k.is_multiple_of(2) {
        half
    } else {
        _mm_srli_si128::<8>(half)
    }
}

/// The 4 activation quants at `xq[at..at + 4]` in every 32-bit lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn broadcast4(xq: &[i8], at: usize) -> __m256i {
    let x: [i8; 4] = xq[at..at + 4].try_into().expect("4 quants");
    _mm256_set1_epi32(i32::from_le_bytes(x.map(|v| v as u8)))
}

/// The 6-bit scales and minimums of 8 rows' 8 sub-blocks from the
/// `[byte][row]` planes of their 12 packed bytes (ggml's
/// `get_scale_min_k4`, for all of them at once): `[sub-block][row]` bytes,
/// sub-blocks 0..4 then 4..8, scales then minimums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn scales_mins(planes: &[u8]) -> ([__m256i; 2], [__m256i; 2]) {
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

/// One group's per-row scales as Q4_K's tiles (and q4_kr's) take them: `d`,
/// `dmin` (f32, row `r` in lane `r`) and the 6-bit scales and minimums of its
/// 8 sub-blocks ([`scales_mins`]).
pub(in crate::x86_64) struct GroupScales {
    pub d: __m256,
    pub dmin: __m256,
    pub scales: [__m256i; 2],
    pub mins: [__m256i; 2],
}

impl GroupScales {
    /// Adds sub-block `j`'s share for each token `t` to `acc[t]`: with its
    /// rows' integer sums `isums[t]` against activation block `b` (of `nb`
    /// per token row of `xs`, `xsums`), `fma(isum, d·sc·xs, acc)` then
    /// `fnma(dmin·m, xsum, acc)`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)] // the sub-block, its activations and the accumulators
    pub(in crate::x86_64) fn add_sub_block<const T: usize>(
        &self,
        acc: &mut [__m256; T],
        j: usize,
        isums: [__m256i; T],
        xs: &[f32],
        xsums: &[f32],
        nb: usize,
        b: usize,
    ) {
        let d_sc = _mm256_mul_ps(self.d, u8x8_to_f32(group8(self.scales[j / 4], j % 4)));
        let dmin_m = _mm256_mul_ps(self.dmin, u8x8_to_f32(group8(self.mins[j / 4], j % 4)));
        for t in 0..T {
            let scale = _mm256_mul_ps(d_sc, _mm256_set1_ps(xs[t * nb + b]));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isums[t]), scale, acc[t]);
            acc[t] = _mm256_fnmadd_ps(dmin_m, _mm256_set1_ps(xsums[t * nb + b]), acc[t]);
        }
    }
}

/// Q4_K's and Q5_K's tile (`Q5`: OR the fifth bits from `qh_at` into the
/// nibbles). Sums of 8 (Q4_K, quants < 16) or 4 (Q5_K, < 32) chunks of i16
/// pairs stay below 2^15: `8 × 2 × 15 × 128` and `4 × 2 × 31 × 128`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // i picks the sub-block's scales and activations too
fn q45_tile<const T: usize, const Q5: bool>(
    tile: &KTile,
    sums: &mut TileSums,
    record_bytes: usize,
    (d_at, dmin_at, scales_at, qs_at, qh_at): (usize, usize, usize, usize, usize),
) {
    let KTile { w, xq, xs, xsums, superblocks, .. } = *tile;
    let (cols, nb) = (superblocks * SUPERBLOCK, superblocks * BLOCKS);
    let chunks_per_widen = if Q5 { 4 } else { 8 };
    let (ones, low4, bit4) = (_mm256_set1_epi16(1), _mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x10));
    let zero = _mm256_setzero_si256();
    let mut acc = [_mm256_setzero_ps(); T];
    for sb in 0..superblocks {
        let rec = &w[sb * record_bytes..][..record_bytes];
        if T == 1 {
            prefetch_ahead(bytemuck::cast_slice(rec));
        }
        let (d, dmin) = (load8_f16_bytes(&rec[d_at..]), load8_f16_bytes(&rec[dmin_at..]));
        let (scales, mins) = scales_mins(&rec[scales_at..]);
        let group = GroupScales { d, dmin, scales, mins };
        // Quant group g: sub-blocks 2g (low nibbles) and 2g + 1 (high).
        for g in 0..BLOCKS / 2 {
            let b0 = sb * BLOCKS + 2 * g;
            let bits = [_mm256_set1_epi8(1 << (2 * g)), _mm256_set1_epi8(2 << (2 * g))];
            let mut pairs = [[zero; 2]; T];
            let mut isums = [[zero; 2]; T];
            for k in 0..8 {
                let v = load32(&rec[qs_at + (8 * g + k) * 32..]);
                let mut q = [_mm256_and_si256(v, low4), _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4)];
                if Q5 {
                    let qh = load32(&rec[qh_at + k * 32..]);
                    for (q, bit) in q.iter_mut().zip(bits) {
                        let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
                        *q = _mm256_or_si256(*q, _mm256_and_si256(set, bit4));
                    }
                }
                for (t, pairs) in pairs.iter_mut().enumerate() {
                    for (i, (pair, &q)) in pairs.iter_mut().zip(&q).enumerate() {
                        let x = broadcast4(xq, t * cols + (b0 + i) * Q8_BLOCK + 4 * k);
                        *pair = _mm256_add_epi16(*pair, _mm256_maddubs_epi16(q, x));
                    }
                }
                if (k + 1) % chunks_per_widen == 0 {
                    for (pairs, isums) in pairs.iter_mut().zip(&mut isums) {
                        for (pair, isum) in pairs.iter_mut().zip(isums) {
                            *isum = _mm256_add_epi32(*isum, _mm256_madd_epi16(*pair, ones));
                            *pair = zero;
                        }
                    }
                }
            }
            for i in 0..2 {
                let mut sub = [zero; T];
                for t in 0..T {
                    sub[t] = isums[t][i];
                }
                group.add_sub_block(&mut acc, 2 * g + i, sub, xs, xsums, nb, b0 + i);
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
    let at = (q4_k::D, q4_k::DMIN, q4_k::SCALES, q4_k::QS, 0);
    q45_tile::<T, false>(tile, sums, q4_k::RECORD_BYTES, at);
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_k_tile<const T: usize>(tile: &KTile, sums: &mut TileSums) {
    let at = (q5_k::D, q5_k::DMIN, q5_k::SCALES, q5_k::QS, q5_k::QH);
    q45_tile::<T, true>(tile, sums, q5_k::RECORD_BYTES, at);
}

/// `[s_a; 8]` and `[s_b; 8]`: the sums of the first and second 16 of the 32
/// activation quants at `xq[at..]`, each in every lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn half_sums(xq: &[i8], at: usize) -> [__m256i; 2] {
    let v = load32_i8(&xq[at..]);
    // Lanes 0..4 hold 4-value sums of the first half, 4..8 of the second.
    let s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), v), _mm256_set1_epi16(1));
    let s = _mm256_hadd_epi32(s, s);
    let s = _mm256_hadd_epi32(s, s);
    [_mm256_permute2x128_si256::<0x00>(s, s), _mm256_permute2x128_si256::<0x11>(s, s)]
}

/// Q6_K's tile. Quants are unsigned 6-bit `q`; the `- 32` is applied once
/// per 16-value sub-block as `32 · sc · Σ x`. Two chunks of i16 pairs stay
/// below 2^15 (`2 × 2 × 63 × 128`) before `madd` applies each row's scale.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_tile<const T: usize>(tile: &KTile, sums: &mut TileSums) {
    if T <= 2 {
        q6_k_tile_paired::<T>(tile, sums);
    } else {
        q6_k_tile_by_block::<T>(tile, sums);
    }
}

/// [`q6_k_tile`] for one or two tokens. Blocks `c` and `c + 2` of a half super-block take their low four bits
/// from the low and high nibbles of the same `ql` bytes and their top two
/// from the same `qh` bytes, so each pair of loads unpacks two blocks' quants
/// (and `qh` is masked where its bits already lie, not shifted down and
/// back). The integer sums of a half's 4 blocks are finished before their
/// scales are applied in block order, so the f32 arithmetic (and every bit
/// of the result) is that of one block at a time.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_tile_paired<const T: usize>(tile: &KTile, sums: &mut TileSums) {
    let KTile { w, xq, xs, superblocks, .. } = *tile;
    let (cols, nb) = (superblocks * SUPERBLOCK, superblocks * BLOCKS);
    let (low4, top2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
    let zero = _mm256_setzero_si256();
    let mut acc = [_mm256_setzero_ps(); T];
    for sb in 0..superblocks {
        let rec = &w[sb * q6_k::RECORD_BYTES..][..q6_k::RECORD_BYTES];
        if T == 1 {
            prefetch_ahead(bytemuck::cast_slice(rec));
        }
        let d = load8_f16_bytes(&rec[q6_k::D..]);
        for half in 0..2 {
            // `[token][quarter]`: the rows' integer sums of block 4·half + quarter.
            let mut isums = [[zero; 4]; T];
            let qh = q6_k::QH + 8 * half * 32;
            for quarter in 0..2 {
                let quarters = [quarter, quarter + 2];
                let sc16 = quarters.map(|q| q6_pair_scales(rec, 4 * half + q));
                let ql = q6_k::QL + (16 * half + 8 * quarter) * 32;
                for pair in 0..4 {
                    let mut pairs = [[zero; 2]; T];
                    for m in 2 * pair..2 * pair + 2 {
                        let (low, high) = (load32(&rec[ql + m * 32..]), load32(&rec[qh + m * 32..]));
                        // The top bits of quarter q are bits 2q..2q + 2 of `qh`, wanted at 4..6.
                        let (top_a, top_b) = if quarter == 0 {
                            (_mm256_slli_epi16::<4>(high), high)
                        } else {
                            (_mm256_slli_epi16::<2>(high), _mm256_srli_epi16::<2>(high))
                        };
                        let q = [
                            _mm256_or_si256(_mm256_and_si256(low, low4), _mm256_and_si256(top_a, top2)),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16::<4>(low), low4),
                                _mm256_and_si256(top_b, top2),
                            ),
                        ];
                        for (t, pairs) in pairs.iter_mut().enumerate() {
                            for ((pair, &q), &quarter) in pairs.iter_mut().zip(&q).zip(&quarters) {
                                let b = sb * BLOCKS + 4 * half + quarter;
                                let x = broadcast4(xq, t * cols + b * Q8_BLOCK + 4 * m);
                                *pair = _mm256_add_epi16(*pair, _mm256_maddubs_epi16(q, x));
                            }
                        }
                    }
                    for (isums, pairs) in isums.iter_mut().zip(&pairs) {
                        for ((&pair_sum, &q), sc16) in pairs.iter().zip(&quarters).zip(&sc16) {
                            isums[q] = _mm256_add_epi32(isums[q], _mm256_madd_epi16(pair_sum, sc16[pair / 2]));
                        }
                    }
                }
            }
            for (quarter, c) in (4 * half..4 * half + 4).enumerate() {
                let b = sb * BLOCKS + c;
                let sc32 = q6_scales(rec, c);
                for t in 0..T {
                    let [s_a, s_b] = half_sums(xq, t * cols + b * Q8_BLOCK);
                    let offset = _mm256_add_epi32(_mm256_mullo_epi32(sc32[0], s_a), _mm256_mullo_epi32(sc32[1], s_b));
                    let isum = _mm256_sub_epi32(isums[t][quarter], _mm256_slli_epi32::<5>(offset));
                    let scale = _mm256_mul_ps(d, _mm256_set1_ps(xs[t * nb + b]));
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[t]);
                }
            }
        }
    }
    for (sums, &acc) in sums.iter_mut().zip(&acc) {
        super::simd::store8(sums, acc);
    }
}

/// [`q6_k_tile`] for three or four tokens, one block at a time: unpacking
/// two blocks per load as [`q6_k_tile_paired`] does holds twice the
/// accumulators, too many registers for this many tokens (prefill measured
/// slower). The integer sums are the same exact values and the scales are
/// applied in the same block order, so the bits are those of the paired tile.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_tile_by_block<const T: usize>(tile: &KTile, sums: &mut TileSums) {
    let KTile { w, xq, xs, superblocks, .. } = *tile;
    let (cols, nb) = (superblocks * SUPERBLOCK, superblocks * BLOCKS);
    let (low4, low2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x03));
    let zero = _mm256_setzero_si256();
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
            // The rows' scales of sub-blocks 2c and 2c + 1: as i32, and as the
            // same value in both i16 halves of each lane (for `madd`).
            let sc32 = [0, 8].map(|o| _mm256_cvtepi8_epi32(load8_bytes(&rec[q6_k::SCALES + 16 * c + o..])));
            let sc16 = sc32
                .map(|s| _mm256_or_si256(_mm256_and_si256(s, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32::<16>(s)));
            let ql = q6_k::QL + (16 * half + 8 * (quarter % 2)) * 32;
            let qh = q6_k::QH + 8 * half * 32;
            let (nibble_shift, high_shift) =
                (_mm_cvtsi32_si128(4 * (quarter / 2) as i32), _mm_cvtsi32_si128(2 * quarter as i32));
            let mut isums = [zero; T];
            for pair in 0..4 {
                let mut pairs = [zero; T];
                for m in 2 * pair..2 * pair + 2 {
                    let low = _mm256_and_si256(_mm256_srl_epi16(load32(&rec[ql + m * 32..]), nibble_shift), low4);
                    let high = _mm256_and_si256(_mm256_srl_epi16(load32(&rec[qh + m * 32..]), high_shift), low2);
                    let q = _mm256_or_si256(low, _mm256_slli_epi16::<4>(high));
                    for (t, pair) in pairs.iter_mut().enumerate() {
                        let x = broadcast4(xq, t * cols + b * Q8_BLOCK + 4 * m);
                        *pair = _mm256_add_epi16(*pair, _mm256_maddubs_epi16(q, x));
                    }
                }
                for (isum, &pair_sum) in isums.iter_mut().zip(&pairs) {
                    *isum = _mm256_add_epi32(*isum, _mm256_madd_epi16(pair_sum, sc16[pair / 2]));
                }
            }
            for t in 0..T {
                let [s_a, s_b] = half_sums(xq, t * cols + b * Q8_BLOCK);
                let offset = _mm256_add_epi32(_mm256_mullo_epi32(sc32[0], s_a), _mm256_mullo_epi32(sc32[1], s_b));
                let isum = _mm256_sub_epi32(isums[t], _mm256_slli_epi32::<5>(offset));
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(xs[t * nb + b]));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[t]);
            }
        }
    }
    for (sums, &acc) in sums.iter_mut().zip(&acc) {
        super::simd::store8(sums, acc);
    }
}

/// The rows' signed scales of sub-blocks `2c` and `2c + 1` of a Q6_K record,
/// as i32 (row `r` in lane `r`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_scales(rec: &[u8], c: usize) -> [__m256i; 2] {
    [0, 8].map(|o| _mm256_cvtepi8_epi32(load8_bytes(&rec[q6_k::SCALES + 16 * c + o..])))
}

/// [`q6_scales`] as `madd` takes them: row `r`'s scale in both i16 halves
/// of lane `r` (the scale bytes interleaved with themselves, sign-extended).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_pair_scales(rec: &[u8], c: usize) -> [__m256i; 2] {
    let v = load16_bytes(&rec[q6_k::SCALES + 16 * c..]);
    [_mm256_cvtepi8_epi16(_mm_unpacklo_epi8(v, v)), _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(v, v))]
}

/// 16 bytes from the front of `s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load16_bytes(s: &[u8]) -> __m128i {
    let v: [u8; 16] = s[..16].try_into().expect("16 bytes");
    _mm_set_epi64x(
        i64::from_le_bytes(v[8..].try_into().expect("8 bytes")),
        i64::from_le_bytes(v[..8].try_into().expect("8 bytes")),
    )
}

/// 8 bytes from the front of `s`, in the low half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn load8_bytes(s: &[u8]) -> __m128i {
    _mm_set_epi64x(0, i64::from_le_bytes(s[..8].try_into().expect("8 bytes")))
}
