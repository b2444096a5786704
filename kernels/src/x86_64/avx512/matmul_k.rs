//! The AVX-512 K-quant matmuls (Q4_K, Q5_K, Q6_K): the AVX2 kernels' tiles
//! (see [`crate::x86_64::avx2::matmul_k`]) two 4-column chunks at a time,
//! with `vpdpbusd` as the inner product.
//!
//! One 512-bit load holds two 4-byte units of the tile (4 columns of all 8
//! rows, twice); lanes 0-7 take the token's first 4 activation quants and
//! lanes 8-15 the next 4 (one `vpermd`), so `vpdpbusd` adds each row's 4
//! products into lane `r` and `r + 8`, exactly, with no i16 step. The two
//! halves are added once per sub-block; the float steps are the AVX2
//! kernel's.

use std::arch::x86_64::*;
use std::ops::Range;

use gpt_fast_quant::kquant::{q4_k, q5_k, q6_k};

use super::simd::load64_i8;
use crate::driver::ktile::{self, KTile};
use crate::driver::tiles::TileSums;
use crate::x86_64::avx2::matmul::prefetch_ahead;
use crate::x86_64::avx2::matmul_k::{half_sums, load8_bytes, load8_f16_bytes, scales_mins, GroupScales};
use crate::x86_64::avx2::simd::store8;
use crate::{Q8Acts, Q8_BLOCK};

const SUPERBLOCK: usize = ktile::SUPERBLOCK;
/// 32-value blocks per super-block.
const BLOCKS: usize = SUPERBLOCK / Q8_BLOCK;

macro_rules! entry {
    ($(#[$doc:meta])* $name:ident, $record:expr, $tile:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The CPU must support AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
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
    matmul_q4_k_vnni, q4_k::RECORD_BYTES, q4_k_tile
);
entry!(
    /// As [`crate::reference::matmul_q5_k`].
    matmul_q5_k_vnni, q5_k::RECORD_BYTES, q5_k_tile
);
entry!(
    /// As [`crate::reference::matmul_q6_k`].
    matmul_q6_k_vnni, q6_k::RECORD_BYTES, q6_k_tile
);

/// 64 bytes from the front of `s`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn load64(s: &[u8]) -> __m512i {
    load64_i8(bytemuck::cast_slice(&s[..64]))
}

/// The 8 activation quants at `xq[at..at + 8]`: the first 4 in lanes 0-7,
/// the next 4 in lanes 8-15.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn broadcast4x2(xq: &[i8], at: usize) -> __m512i {
    let x: [i8; 8] = xq[at..at + 8].try_into().expect("8 quants");
    let v = _mm512_castsi128_si512(_mm_set_epi64x(0, i64::from_le_bytes(x.map(|v| v as u8))));
    _mm512_permutexvar_epi32(_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0), v)
}

/// Lanes `r` and `r + 8` added: the 8 row sums.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn fold(v: __m512i) -> __m256i {
    _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v))
}

/// `Σ q·x` of one quant group of a tile for `T` tokens: `qs` is its 8 units
/// of 32 bytes (4 columns of the 8 rows each), sub-block `b0` in the low
/// nibbles and `b0 + 1` in the high ones (`Q5`: plus 16 where the bits
/// `bits[i]` of `qh`'s matching units are set); `halves == 1` leaves out the
/// high sub-block (a cut q4_kr group whose activations end before it).
/// `[t][i]`: token `t`, sub-block `b0 + i`, row `r`'s sum in lanes `r` and
/// `r + 8` ([`fold`]).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)] // the group's quants, its fifth bits and the activations
pub(super) fn group_dots<const T: usize, const Q5: bool>(
    qs: &[u8],
    qh: &[u8],
    bits: [__m512i; 2],
    xq: &[i8],
    cols: usize,
    b0: usize,
    halves: usize,
) -> [[__m512i; 2]; T] {
    let (low4, bit4) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x10));
    let mut isums = [[_mm512_setzero_si512(); 2]; T];
    for k in (0..8).step_by(2) {
        let v = load64(&qs[k * 32..]);
        let mut q = [_mm512_and_si512(v, low4), _mm512_and_si512(_mm512_srli_epi16::<4>(v), low4)];
        if Q5 {
            let qh = load64(&qh[k * 32..]);
            for (q, bit) in q.iter_mut().zip(bits) {
                *q = _mm512_mask_add_epi8(*q, _mm512_test_epi8_mask(qh, bit), *q, bit4);
            }
        }
        for (t, isums) in isums.iter_mut().enumerate() {
            for (i, (isum, &q)) in isums.iter_mut().zip(&q).enumerate().take(halves) {
                let x = broadcast4x2(xq, t * cols + (b0 + i) * Q8_BLOCK + 4 * k);
                *isum = _mm512_dpbusd_epi32(*isum, q, x);
            }
        }
    }
    isums
}

/// Adds sub-block `j` (`isums[t][i]` of [`group_dots`], activation block `b`)
/// to the accumulators, with the AVX2 kernels' float steps.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)] // the sub-block, its activations and the accumulators
pub(super) fn add_sub_block<const T: usize>(
    group: &GroupScales,
    acc: &mut [__m256; T],
    isums: &[[__m512i; 2]; T],
    i: usize,
    j: usize,
    (xs, xsums, nb): (&[f32], &[f32], usize),
    b: usize,
) {
    let mut sub = [_mm256_setzero_si256(); T];
    for (sub, isums) in sub.iter_mut().zip(isums) {
        *sub = fold(isums[i]);
    }
    group.add_sub_block(acc, j, sub, xs, xsums, nb, b);
}

/// Q4_K's and Q5_K's tile (`Q5`: the fifth bits from `qh_at` added into the
/// nibbles as 16 where set).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q45_tile<const T: usize, const Q5: bool>(
    tile: &KTile,
    sums: &mut TileSums,
    record_bytes: usize,
    (d_at, dmin_at, scales_at, qs_at, qh_at): (usize, usize, usize, usize, usize),
) {
    let KTile { w, xq, xs, xsums, superblocks, .. } = *tile;
    let (cols, nb) = (superblocks * SUPERBLOCK, superblocks * BLOCKS);
    let mut acc = [_mm256_setzero_ps(); T];
    for sb in 0..superblocks {
        let rec = &w[sb * record_bytes..][..record_bytes];
        if T == 1 {
            prefetch_ahead(bytemuck::cast_slice(rec));
        }
        let (d, dmin) = (load8_f16_bytes(&rec[d_at..]), load8_f16_bytes(&rec[dmin_at..]));
        let (scales, mins) = scales_mins(&rec[scales_at..]);
        let group = GroupScales { d, dmin, scales, mins };
        let qh = if Q5 { &rec[qh_at..][..8 * 32] } else { &[] };
        // Quant group g: sub-blocks 2g (low nibbles) and 2g + 1 (high).
        for g in 0..BLOCKS / 2 {
            let b0 = sb * BLOCKS + 2 * g;
            let bits = [_mm512_set1_epi8(1 << (2 * g)), _mm512_set1_epi8(2 << (2 * g))];
            let qs = &rec[qs_at + 8 * g * 32..][..8 * 32];
            let isums = group_dots::<T, Q5>(qs, qh, bits, xq, cols, b0, 2);
            for i in 0..2 {
                add_sub_block(&group, &mut acc, &isums, i, 2 * g + i, (xs, xsums, nb), b0 + i);
            }
        }
    }
    for (sums, &acc) in sums.iter_mut().zip(&acc) {
        store8(sums, acc);
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4_k_tile<const T: usize>(tile: &KTile, sums: &mut TileSums) {
    let at = (q4_k::D, q4_k::DMIN, q4_k::SCALES, q4_k::QS, 0);
    q45_tile::<T, false>(tile, sums, q4_k::RECORD_BYTES, at);
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q5_k_tile<const T: usize>(tile: &KTile, sums: &mut TileSums) {
    let at = (q5_k::D, q5_k::DMIN, q5_k::SCALES, q5_k::QS, q5_k::QH);
    q45_tile::<T, true>(tile, sums, q5_k::RECORD_BYTES, at);
}

/// Q6_K's tile: unsigned 6-bit `q` through `vpdpbusd`, the `- 32` once per
/// 16-value sub-block as `sc · (Σ q·x − 32 Σ x)`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q6_k_tile<const T: usize>(tile: &KTile, sums: &mut TileSums) {
    let KTile { w, xq, xs, superblocks, .. } = *tile;
    let (cols, nb) = (superblocks * SUPERBLOCK, superblocks * BLOCKS);
    let (low4, low2) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x03));
    let zero = _mm512_setzero_si512();
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
            // The rows' scales of sub-blocks 2c (values 0..16) and 2c + 1.
            let sc = [0, 8].map(|o| _mm256_cvtepi8_epi32(load8_bytes(&rec[q6_k::SCALES + 16 * c + o..])));
            let ql = q6_k::QL + (16 * half + 8 * (quarter % 2)) * 32;
            let qh = q6_k::QH + 8 * half * 32;
            let (nibble_shift, high_shift) =
                (_mm_cvtsi32_si128(4 * (quarter / 2) as i32), _mm_cvtsi32_si128(2 * quarter as i32));
            // isums[t][s]: token t, sub-block 2c + s.
            let mut isums = [[zero; 2]; T];
            for m in (0..8).step_by(2) {
                let low = _mm512_and_si512(_mm512_srl_epi16(load64(&rec[ql + m * 32..]), nibble_shift), low4);
                let high = _mm512_and_si512(_mm512_srl_epi16(load64(&rec[qh + m * 32..]), high_shift), low2);
                let q = _mm512_or_si512(low, _mm512_slli_epi16::<4>(high));
                for (t, isums) in isums.iter_mut().enumerate() {
                    let x = broadcast4x2(xq, t * cols + b * Q8_BLOCK + 4 * m);
                    isums[m / 4] = _mm512_dpbusd_epi32(isums[m / 4], q, x);
                }
            }
            for t in 0..T {
                let x_half = half_sums(xq, t * cols + b * Q8_BLOCK);
                let mut isum = _mm256_setzero_si256();
                for s in 0..2 {
                    let centered = _mm256_sub_epi32(fold(isums[t][s]), _mm256_slli_epi32::<5>(x_half[s]));
                    isum = _mm256_add_epi32(isum, _mm256_mullo_epi32(sc[s], centered));
                }
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(xs[t * nb + b]));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[t]);
            }
        }
    }
    for (sums, &acc) in sums.iter_mut().zip(&acc) {
        store8(sums, acc);
    }
}
