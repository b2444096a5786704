//! AVX2 matmuls (`y = W x` for `n` activation rows) and the q8 activation
//! quantizer. Decode spends most of its time in [`matmul_q8`] with `n = 1`.

use std::arch::x86_64::*;
use std::ops::Range;

use half::f16;

use super::simd::{hsum, load32_i8, load8, load8_f16, store32_i8, store8};
use crate::{Q8Acts, Q8_BLOCK, Q8_TILE_ROWS};

/// Tokens per register tile in [`matmul_q8`]: each loaded weight block is used
/// for this many activation rows before the next is loaded.
pub(in crate::x86_64) const Q8_TOKENS: usize = 4;
/// Weight rows per register tile in the f32/f16 matmuls with one token (sharing
/// each `x` load).
const FLOAT_ROWS: usize = 4;
/// Weight rows × tokens per register tile in the f32/f16 matmuls with several
/// tokens: each weight load serves 3 tokens, each activation load 3 rows. 9
/// accumulators, 3 activation vectors and the weight vectors being widened fit
/// the 16 ymm registers; 4 × 3 does not (LLVM spills an accumulator, and the
/// store-reload sits on that accumulator's dependency chain).
const TILE_ROWS: usize = 3;
const TILE_TOKENS: usize = 3;
/// Weight bytes per cache block in the f32/f16 matmuls with several tokens:
/// every token passes over one block of rows, which stays in L1, before the
/// next block is read.
const FLOAT_BLOCK_BYTES: usize = 32 * 1024;

/// Checks the output shape shared by the matmuls: token `t`'s results go to
/// `out[t * out_stride..][..rows.len()]`.
fn check_out(rows: &Range<usize>, n: usize, out: &[f32], out_stride: usize) {
    assert!((n - 1) * out_stride + rows.len() <= out.len(), "matmul: output too short");
}

/// As [`crate::reference::matmul_q8`].
///
/// Per tile of 8 interleaved rows and per block of 32 columns, each token's 32
/// activation quants are loaded once and dotted with the 8 rows' quants in
/// integers (exact); each loaded weight row serves up to [`Q8_TOKENS`] tokens.
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
    q8_driver(quants, scales, cols, rows, x, n, out, out_stride, |wq, ws, xq, xs, nb, tn, acc| match tn {
        4 => q8_tile::<4>(wq, ws, xq, xs, nb, acc),
        3 => q8_tile::<3>(wq, ws, xq, xs, nb, acc),
        2 => q8_tile::<2>(wq, ws, xq, xs, nb, acc),
        _ => q8_tile::<1>(wq, ws, xq, xs, nb, acc),
    });
}

/// The ISA-independent part of a q8 matmul, shared with the AVX-512 kernel:
/// shape checks, the loops over tiles and token groups, and the writes of
/// whole or cut tiles. `tile_kernel(wq, ws, xq, xs, nb, tn, acc)` computes one tile
/// (quants `wq`, scales `ws`, `nb` blocks) against `tn <= Q8_TOKENS` tokens
/// (`xq`, `xs`), lane `r` of `acc[t]` being row `r` for token `t`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn q8_driver(
    quants: &[i8],
    scales: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    tile_kernel: impl Fn(&[i8], &[f16], &[i8], &[f32], usize, usize, &mut [__m256; Q8_TOKENS]),
) {
    if rows.is_empty() || n == 0 {
        return;
    }
    assert!(cols.is_multiple_of(Q8_BLOCK), "matmul_q8: cols {cols} is not a multiple of {Q8_BLOCK}");
    check_out(&rows, n, out, out_stride);
    let nb = cols / Q8_BLOCK;
    let (tile_quants, tile_scales) = (nb * Q8_BLOCK * Q8_TILE_ROWS, nb * Q8_TILE_ROWS);
    let end_tile = rows.end.div_ceil(Q8_TILE_ROWS);
    // One slice each, checked here; the loops below only index inside them.
    let (quants, scales) = (&quants[..end_tile * tile_quants], &scales[..end_tile * tile_scales]);
    let (xq, xs) = (&x.quants[..n * cols], &x.scales[..n * nb]);

    // Tiles outer, tokens inner: a tile's weights (nb × 256 bytes) come from
    // memory once and stay in L1 while every token group passes over them.
    for tile in rows.start / Q8_TILE_ROWS..end_tile {
        let wq = &quants[tile * tile_quants..][..tile_quants];
        let ws = &scales[tile * tile_scales..][..tile_scales];
        let row0 = tile * Q8_TILE_ROWS;
        let (lo, hi) = (rows.start.max(row0), rows.end.min(row0 + Q8_TILE_ROWS));
        let mut t0 = 0;
        while t0 < n {
            let tn = (n - t0).min(Q8_TOKENS);
            let mut acc = [_mm256_setzero_ps(); Q8_TOKENS];
            let (xq, xs) = (&xq[t0 * cols..(t0 + tn) * cols], &xs[t0 * nb..(t0 + tn) * nb]);
            tile_kernel(wq, ws, xq, xs, nb, tn, &mut acc);
            for (t, &acc) in acc[..tn].iter().enumerate() {
                let base = (t0 + t) * out_stride;
                if lo == row0 && hi == row0 + Q8_TILE_ROWS {
                    store8(&mut out[base + row0 - rows.start..], acc);
                } else {
                    // A tile cut by the row range: write only its rows in range.
                    let mut tmp = [0f32; 8];
                    store8(&mut tmp, acc);
                    out[base + lo - rows.start..base + hi - rows.start].copy_from_slice(&tmp[lo - row0..hi - row0]);
                }
            }
            t0 += tn;
        }
    }
}

/// One tile of 8 rows against `T` tokens: `acc[t]` lane `r` += row `r` · token `t`.
/// `wq`/`ws` are the tile's `nb` blocks; `xq`/`xs` hold `T` tokens.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_tile<const T: usize>(wq: &[i8], ws: &[f16], xq: &[i8], xs: &[f32], nb: usize, acc: &mut [__m256; Q8_TOKENS]) {
    let cols = nb * Q8_BLOCK;
    let ones = _mm256_set1_epi16(1);
    for b in 0..nb {
        let wblock = &wq[b * Q8_BLOCK * Q8_TILE_ROWS..][..Q8_BLOCK * Q8_TILE_ROWS];
        let xv: [__m256i; T] = std::array::from_fn(|t| load32_i8(&xq[t * cols + b * Q8_BLOCK..]));
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
        let w_scales = load8_f16(&ws[b * Q8_TILE_ROWS..]);
        for t in 0..T {
            let isum = _mm256_cvtepi32_ps(hsum_quads(quads[t]));
            let scale = _mm256_mul_ps(w_scales, _mm256_set1_ps(xs[t * nb + b]));
            acc[t] = _mm256_fmadd_ps(isum, scale, acc[t]);
        }
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

/// As [`crate::reference::matmul_f32`]. One token (decode): 4 rows at a time
/// sharing each load of `x`; more (prefill): register tiles of
/// [`TILE_ROWS`] rows × [`TILE_TOKENS`] tokens (see [`gemm`]), so each weight
/// is read from memory once, not once per token.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matmul_f32(
    w: &[f32],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    float_matmul(w, cols, rows, x, n, out, out_stride, |s| load8(s));
}

/// As [`crate::reference::matmul_f16`]: F16C widens 8 weights at a time, and
/// each widened vector serves every token of a register tile, as in [`matmul_f32`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matmul_f16(
    w: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    float_matmul(w, cols, rows, x, n, out, out_stride, |s| load8_f16(s));
}

/// The body of [`matmul_f32`] and [`matmul_f16`]: shape checks, then one
/// token on the GEMV path ([`dot_rows`]), more on the tiled one ([`gemm`]);
/// `load` widens 8 weights to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn float_matmul<W: Copy + Into<f32>>(
    w: &[W],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    load: impl Fn(&[W]) -> __m256 + Copy,
) {
    if rows.is_empty() || n == 0 {
        return;
    }
    check_out(&rows, n, out, out_stride);
    let w = &w[rows.start * cols..rows.end * cols];
    if n == 1 {
        dot_rows(w, cols, &x[..cols], &mut out[..rows.len()], load);
    } else {
        gemm(w, cols, rows.len(), &x[..n * cols], n, out, out_stride, load);
    }
}

/// `out[t * out_stride + r] = dot(w[r], x[t])` for the `n_rows` rows of the
/// row-major `w` (`cols` wide) and the `n` tokens of `x`; `load` widens 8
/// weights to f32.
///
/// Rows are cut into blocks of about [`FLOAT_BLOCK_BYTES`] of weights, so each
/// weight comes from memory once and from L1 once per token group; each token
/// group's activations (`TILE_TOKENS × cols` f32) are read once per block.
/// Within a block, register tiles of [`TILE_ROWS`] rows pass over the token
/// group ([`float_tile`]); the last rows of a block that do not fill a tile go
/// one at a time, the last tokens as a smaller tile.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn gemm<W: Copy + Into<f32>>(
    w: &[W],
    cols: usize,
    n_rows: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    load: impl Fn(&[W]) -> __m256 + Copy,
) {
    let block_rows = (FLOAT_BLOCK_BYTES / (cols * size_of::<W>()).max(1) / TILE_ROWS).max(1) * TILE_ROWS;
    for r_block in (0..n_rows).step_by(block_rows) {
        let r_end = n_rows.min(r_block + block_rows);
        for t0 in (0..n).step_by(TILE_TOKENS) {
            let tn = (n - t0).min(TILE_TOKENS);
            let xg = &x[t0 * cols..(t0 + tn) * cols];
            let mut r0 = r_block;
            while r0 < r_end {
                let rn = if r_end - r0 >= TILE_ROWS { TILE_ROWS } else { 1 };
                let wg = &w[r0 * cols..(r0 + rn) * cols];
                let out = &mut out[t0 * out_stride + r0..];
                if rn == TILE_ROWS {
                    tile_tokens::<W, TILE_ROWS>(tn, wg, cols, xg, out, out_stride, load);
                } else {
                    tile_tokens::<W, 1>(tn, wg, cols, xg, out, out_stride, load);
                }
                r0 += rn;
            }
        }
    }
}

/// [`float_tile`] for `tn <= 3` tokens.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_tokens<W: Copy + Into<f32>, const R: usize>(
    tn: usize,
    w: &[W],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    out_stride: usize,
    load: impl Fn(&[W]) -> __m256 + Copy,
) {
    match tn {
        3 => float_tile::<W, R, 3>(w, cols, x, out, out_stride, load),
        2 => float_tile::<W, R, 2>(w, cols, x, out, out_stride, load),
        _ => float_tile::<W, R, 1>(w, cols, x, out, out_stride, load),
    }
}

/// One register tile: `out[t * out_stride + r] = dot(w[r], x[t])` for `R` rows
/// of `w` and `T` tokens of `x` (each `cols` wide), one accumulator of 8
/// columns per (row, token). Each weight vector is loaded (and widened) once
/// for all `T` tokens, each activation vector once for all `R` rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn float_tile<W: Copy + Into<f32>, const R: usize, const T: usize>(
    w: &[W],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    out_stride: usize,
    load: impl Fn(&[W]) -> __m256 + Copy,
) {
    let (steps, main) = (cols / 8, cols / 8 * 8);
    let wr: [&[W]; R] = std::array::from_fn(|r| &w[r * cols..][..cols]);
    let xt: [&[f32]; T] = std::array::from_fn(|t| &x[t * cols..][..cols]);
    // Groups of 8 columns, every slice cut to exactly `steps` groups.
    let w8: [&[[W; 8]]; R] = std::array::from_fn(|r| &wr[r].as_chunks::<8>().0[..steps]);
    let x8: [&[[f32; 8]]; T] = std::array::from_fn(|t| &xt[t].as_chunks::<8>().0[..steps]);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for c in 0..steps {
        // Unchecked: LLVM does not see that the R + T slices share one length
        // and would keep a compare-and-branch per load in this loop.
        // SAFETY: c < steps, and every `x8[t]` is `[..steps]` above.
        let xv: [__m256; T] = std::array::from_fn(|t| load8(unsafe { x8[t].get_unchecked(c) }));
        for r in 0..R {
            // SAFETY: c < steps, and every `w8[r]` is `[..steps]` above.
            let wv = load(unsafe { w8[r].get_unchecked(c) });
            for t in 0..T {
                acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
            }
        }
    }
    for t in 0..T {
        let tail = |r: usize| -> f32 { wr[r][main..].iter().zip(&xt[t][main..]).map(|(&a, b)| a.into() * b).sum() };
        let o = &mut out[t * out_stride..][..R];
        for (r, o) in o.iter_mut().enumerate() {
            *o = hsum(acc[r][t]) + tail(r);
        }
    }
}

/// `out[r] = dot(w[r], x)` for the `out.len()` rows of the row-major `w`
/// (`cols` wide), [`FLOAT_ROWS`] rows at a time; `load` widens 8 weights to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_rows<W: Copy + Into<f32>>(
    w: &[W],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    load: impl Fn(&[W]) -> __m256 + Copy,
) {
    let mut row_groups = w.chunks_exact(FLOAT_ROWS * cols);
    let mut out_groups = out.chunks_exact_mut(FLOAT_ROWS);
    for (wg, og) in (&mut row_groups).zip(&mut out_groups) {
        let wr: [&[W]; FLOAT_ROWS] = std::array::from_fn(|r| &wg[r * cols..][..cols]);
        let sums = dot_n::<W, FLOAT_ROWS>(wr, x, load);
        og.copy_from_slice(&sums);
    }
    for (wr, o) in row_groups.remainder().chunks_exact(cols).zip(out_groups.into_remainder()) {
        *o = dot_n::<W, 1>([wr], x, load)[0];
    }
}

/// `R` dot products against the same `x`, sharing its loads.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_n<W: Copy + Into<f32>, const R: usize>(
    w: [&[W]; R],
    x: &[f32],
    load: impl Fn(&[W]) -> __m256 + Copy,
) -> [f32; R] {
    let main = x.len() / 8 * 8;
    let mut acc = [_mm256_setzero_ps(); R];
    for c in (0..main).step_by(8) {
        let xv = load8(&x[c..]);
        for r in 0..R {
            acc[r] = _mm256_fmadd_ps(load(&w[r][c..]), xv, acc[r]);
        }
    }
    std::array::from_fn(|r| {
        let tail: f32 = w[r][main..].iter().zip(&x[main..]).map(|(&a, b)| a.into() * b).sum();
        hsum(acc[r]) + tail
    })
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
