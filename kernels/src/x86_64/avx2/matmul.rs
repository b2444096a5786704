//! The AVX2 q8 matmul (`y = W x` for `n` activation rows) and the q8
//! activation quantizer. Decode of a q8 model spends most of its time in
//! [`matmul_q8`] with `n = 1`. The f32/f16 matmuls are in `matmul_float`.

use std::arch::x86_64::*;
use std::ops::Range;

use half::f16;

use super::gemm_q8::{gemm_q8, gemm_q8_vnni, GEMM_MAX_COLS};
use super::simd::{load32_i8, load8, load8_f16, store32_i8, store8};
use crate::driver::q8::{self, Q8Tile, TileSums};
use crate::driver::tiles::{STRIPES, TILE_TOKENS};
use crate::{Q8Acts, Q8_BLOCK, Q8_TILE_ROWS};

/// How far ahead a one-token q8 matmul prefetches its weights, in bytes
/// (3-4 tiles of SmolLM2's 576 columns). Out-of-order execution alone keeps
/// too few misses in flight: without it the GEMV over a 1 GiB matrix reached
/// 80-100% of a plain read loop's bandwidth, with it (8 or 16 KiB ahead)
/// 110-130% (and up to twice as much as before on 8192 × 8192).
pub(in crate::x86_64) const Q8_PREFETCH_BYTES: usize = 16 * 1024;

/// Tokens from which [`matmul_q8`] runs the GEMM (`gemm_q8`, rows in lanes)
/// rather than the GEMV tile below. Both give the same bits, so the threshold
/// changes no result.
const GEMM_MIN_TOKENS: usize = 4;

/// As [`crate::reference::matmul_q8`].
///
/// Per tile of 8 interleaved rows and per block of 32 columns, each token's 32
/// activation quants are loaded once and dotted with the 8 rows' quants in
/// integers (exact); each loaded weight row serves up to 4 tokens (the
/// driver's `Q8_TOKENS`: [`crate::driver::q8`] holds the loops). One token
/// reads a tile of each of two stripes at once ([`q8_stripes`]): two
/// sequential streams through the matrix kept more misses in flight than one
/// (SmolLM2 q8 decode +20-30% at 1 thread on a Zen 3).
/// The 8 row sums are gathered into one vector, converted to f32 and
/// fused-multiply-added with `weight scale × activation scale` into one
/// accumulator per token. The only difference from the reference is that FMA
/// (one rounding instead of two per block).
///
/// Activation quants must lie in [-127, 127]: what [`quantize_q8_acts`] makes
/// from any block whose scale is a normal f32. Only a block with
/// `max|x| < 1.5e-36` (subnormal scale) can produce -128, whose product with a
/// negative weight then comes out negated (`sign_epi8` cannot negate -128): a
/// contribution below 1e-30 either way.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matmul_q8(
    quants: &[i8],
    scales: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    if n >= GEMM_MIN_TOKENS && cols <= GEMM_MAX_COLS {
        gemm_q8(quants, scales, cols, rows, x, n, out, out_stride);
        return;
    }
    if n == 1 {
        let group = |tiles: [Q8Tile; STRIPES], sums: &mut [[f32; Q8_TILE_ROWS]; STRIPES]| q8_stripes(&tiles, sums);
        let one = |tile: Q8Tile, sums: &mut [f32; Q8_TILE_ROWS]| {
            let mut all = [[0f32; Q8_TILE_ROWS]; TILE_TOKENS];
            q8_tile::<1>(&tile, &mut all);
            *sums = all[0];
        };
        q8::matmul_one_token(quants, scales, cols, rows, x, out, out_stride, group, one);
        return;
    }
    q8::matmul(quants, scales, cols, rows, x, n, out, out_stride, |tile, sums| match tile.tokens {
        4 => q8_tile::<4>(&tile, sums),
        3 => q8_tile::<3>(&tile, sums),
        2 => q8_tile::<2>(&tile, sums),
        _ => q8_tile::<1>(&tile, sums),
    });
}

/// [`matmul_q8`] on a CPU with AVX-VNNI: its GEMM with `vpdpbusd`
/// (`gemm_q8_vnni`, the same bits), [`matmul_q8`]'s GEMV below
/// [`GEMM_MIN_TOKENS`].
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C and AVX-VNNI.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
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
    if n >= GEMM_MIN_TOKENS && cols <= GEMM_MAX_COLS {
        gemm_q8_vnni(quants, scales, cols, rows, x, n, out, out_stride);
        return;
    }
    // Not a GEMV function shared by both entry points: with two callers LLVM
    // kept the driver's tile loop out of line, a call per tile in decode.
    // SAFETY: this function's features include `matmul_q8`'s.
    unsafe { matmul_q8(quants, scales, cols, rows, x, n, out, out_stride) }
}

/// One tile of 8 rows against `T` tokens: `sums[t][r]` = row `r` · token `t`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_tile<const T: usize>(tile: &Q8Tile, sums: &mut TileSums) {
    let Q8Tile { wq, ws, xq, xs, nb, .. } = *tile;
    let cols = nb * Q8_BLOCK;
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        let wblock = &wq[b * Q8_BLOCK * Q8_TILE_ROWS..][..Q8_BLOCK * Q8_TILE_ROWS];
        if T == 1 {
            prefetch_ahead(wblock);
        }
        let mut xv = [_mm256_setzero_si256(); T];
        for (t, xv) in xv.iter_mut().enumerate() {
            *xv = load32_i8(&xq[t * cols + b * Q8_BLOCK..]);
        }
        let isums = block_sums(wblock, &xv);
        let w_scales = load8_f16(&ws[b * Q8_TILE_ROWS..]);
        for t in 0..T {
            let scale = _mm256_mul_ps(w_scales, _mm256_set1_ps(xs[t * nb + b]));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isums[t]), scale, acc[t]);
        }
    }
    for (sums, &acc) in sums.iter_mut().zip(&acc) {
        store8(sums, acc);
    }
}

/// One token against one tile of each of [`STRIPES`] stripes at once
/// (`sums[k]` for `tiles[k]`), so that the GEMV reads that many sequential
/// streams: per block, the token's quants are loaded once for every tile, and
/// each tile's block is summed as in [`q8_tile`] (the same bits).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_stripes(tiles: &[Q8Tile; STRIPES], sums: &mut [[f32; Q8_TILE_ROWS]; STRIPES]) {
    let Q8Tile { xq, xs, nb, .. } = tiles[0];
    let mut acc = [_mm256_setzero_ps(); STRIPES];
    for b in 0..nb {
        let xv = [load32_i8(&xq[b * Q8_BLOCK..])];
        for (tile, acc) in tiles.iter().zip(&mut acc) {
            let wblock = &tile.wq[b * Q8_BLOCK * Q8_TILE_ROWS..][..Q8_BLOCK * Q8_TILE_ROWS];
            prefetch_ahead(wblock);
            let [isum] = block_sums(wblock, &xv);
            let scale = _mm256_mul_ps(load8_f16(&tile.ws[b * Q8_TILE_ROWS..]), _mm256_set1_ps(xs[b]));
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, *acc);
        }
    }
    for (sums, &acc) in sums.iter_mut().zip(&acc) {
        store8(sums, acc);
    }
}

/// The exact i32 dot products of one block of a tile's 8 rows (`wblock`,
/// `[row][32]`) with each of `T` tokens' 32 quants: `[token]` → 8 row sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_sums<const T: usize>(wblock: &[i8], xv: &[__m256i; T]) -> [__m256i; T] {
    let ones = _mm256_set1_epi16(1);
    // Row dot products are folded by hadd as soon as a pair exists, so at
    // most a few partial vectors per token are live (no register spills).
    let mut quads = [[_mm256_setzero_si256(); 2]; T];
    for (h, wquad) in wblock.chunks_exact(4 * Q8_BLOCK).enumerate() {
        let mut pairs = [[_mm256_setzero_si256(); 2]; T];
        for (p, wpair) in wquad.chunks_exact(2 * Q8_BLOCK).enumerate() {
            let mut dots = [[_mm256_setzero_si256(); 2]; T];
            for (r, wrow) in wpair.chunks_exact(Q8_BLOCK).enumerate() {
                let w = load32_i8(wrow);
                // Sign trick: maddubs multiplies unsigned by signed bytes, so
                // use |w| and move w's sign onto x. Adjacent pairs are summed
                // into i16: |w|, |x| <= 127 so a pair is at most
                // 2 × 127 × 127 = 32258 < 32767 and never saturates. madd
                // with ones widens the pairs into 8 i32.
                let w_abs = _mm256_sign_epi8(w, w);
                for t in 0..T {
                    let prod = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(xv[t], w));
                    dots[t][r] = _mm256_madd_epi16(prod, ones);
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
    let mut isums = [_mm256_setzero_si256(); T];
    for (isum, &quads) in isums.iter_mut().zip(&quads) {
        *isum = hsum_quads(quads);
    }
    isums
}

/// Prefetches (into L2) the cache lines [`Q8_PREFETCH_BYTES`] after those of
/// `block`: the weights a one-token matmul reads a few tiles later (tiles are
/// contiguous). A prefetch is a hint: past the end of the matrix it is dropped.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn prefetch_ahead(block: &[i8]) {
    for line in (0..block.len()).step_by(64) {
        _mm_prefetch::<_MM_HINT_T1>(block.as_ptr().wrapping_add(line + Q8_PREFETCH_BYTES).cast());
    }
}

/// `[sum(row 0), …, sum(row 7)]` from two vectors that each hold, per 128-bit
/// half, partial sums of rows 0-3 (`q[0]`) and rows 4-7 (`q[1]`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_quads(q: [__m256i; 2]) -> __m256i {
    let lo = _mm256_permute2x128_si256::<0x20>(q[0], q[1]);
    let hi = _mm256_permute2x128_si256::<0x31>(q[0], q[1]);
    _mm256_add_epi32(lo, hi)
}

/// As [`crate::reference::quantize_q8_acts`], bit for bit: the same
/// `max|x| / 127` scale and the same rounding (half away from zero, saturating
/// to [-128, 127] as Rust's `as i8` does, NaN to 0).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_acts(x: &[f32], quants: &mut [i8], scales: &mut [f32]) {
    let sign = _mm256_set1_ps(-0.0);
    for ((xb, qb), s) in x.chunks_exact(Q8_BLOCK).zip(quants.chunks_exact_mut(Q8_BLOCK)).zip(scales.iter_mut()) {
        let v: [__m256; 4] = std::array::from_fn(|i| load8(&xb[i * 8..]));
        // maxps returns its second operand when either is NaN, so NaNs are
        // skipped, as `f32::max` skips them in the reference.
        let mut m = _mm256_setzero_ps();
        for &vi in &v {
            m = _mm256_max_ps(_mm256_andnot_ps(sign, vi), m);
        }
        let scale = super::simd::hmax(m) / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        let q = v.map(|vi| round_to_i32(_mm256_mul_ps(vi, _mm256_set1_ps(inv))));
        // packs interleave per 128-bit half; the permute restores element order.
        let packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        let packed = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        store32_i8(qb, packed);
        *s = scale;
    }
}

/// `v.round() as i8` per lane, widened to i32: round half away from zero
/// (`_mm256_round_ps` only offers half to even), clamp to [-128, 127], NaN to 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn round_to_i32(v: __m256) -> __m256i {
    let sign = _mm256_set1_ps(-0.0);
    let trunc = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    // v - trunc(v) is exact; a fraction of magnitude >= 0.5 rounds away from zero.
    let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, trunc));
    let away = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
    let step = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(sign, v));
    let rounded = _mm256_add_ps(trunc, _mm256_and_ps(away, step));
    let clamped = _mm256_min_ps(_mm256_max_ps(rounded, _mm256_set1_ps(-128.0)), _mm256_set1_ps(127.0));
    let not_nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_ORD_Q>(v, v));
    _mm256_and_si256(_mm256_cvttps_epi32(clamped), not_nan)
}
