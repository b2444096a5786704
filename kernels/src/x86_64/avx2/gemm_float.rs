//! AVX2 f32/f16 matmuls in the GEMM form (prefill tokens, any count: see
//! [`crate::driver::float_gemm`]): the register tiles and packing that
//! driver runs (which also serve AVX-512), [`tile_kernel`] (6 rows × 16
//! tokens) and [`few_tile`]. Each output is one FMA chain over its columns
//! in order, whatever the tile, so a token's bits do not depend on the
//! tokens beside it.

use std::arch::x86_64::*;
use std::ops::Range;

use half::f16;

use super::matmul_float::widen;
use super::simd::{load8, load8_f16, store8};
use crate::driver::float::FloatWeight;
use crate::driver::float_gemm::{
    self, few_tokens, fill_chunk, gemm, GemmShape, Prefetch, PrefetchCursor, Tile, FEW_CHUNK, FEW_TOKENS,
};

/// Weight rows × token vectors of the AVX2 GEMM register tile: 6 × 2 × 8 = 96
/// outputs in 12 accumulators; per column, 2 activation loads and 6 weight
/// broadcasts feed 12 FMAs (the 6 × 16 shape of BLIS's Haswell kernel, with
/// weights in the role of its broadcast operand), and the 2 activation
/// vectors and one broadcast fit the 4 spare ymm registers.
const TILE_ROWS: usize = 6;
const TILE_VECTORS: usize = 2;

/// Weight rows of the AVX2 few-token tile for up to 8 tokens (one vector):
/// 12 FMA chains, as many as the GEMM tile's 6 × 2 (6 would leave the FMA
/// units idle for their latency). Up to 16 tokens use the GEMM tile's shape.
const FEW_ROWS: usize = 12;

/// As [`crate::reference::matmul_f32`], in the GEMM form for any token count.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_f32(
    w: &[f32],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    float_gemm(w, cols, rows, x, n, out, out_stride, |s| load8(s));
}

/// As [`crate::reference::matmul_f16`]: as [`gemm_f32`], F16C widening 8
/// weights at a time (in the few-token tiles as they fill their chunk; in
/// the GEMM once per block of rows, into scratch).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_f16(
    w: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    float_gemm(w, cols, rows, x, n, out, out_stride, |s| load8_f16(s));
}

/// The body of [`gemm_f32`] and [`gemm_f16`]: the few-token tiles or the
/// GEMM; `load` widens 8 weights to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn float_gemm<W: FloatWeight>(
    w: &[W],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    load: impl Fn(&[W]) -> __m256 + Copy,
) {
    let pack = |x: &[f32], cols, tn, kc, tokens, out: &mut [f32]| pack_tokens(x, cols, tn, kc, tokens, out);
    let tokens = |w: &[W], x: &[f32], out: &mut [f32]| {
        let n = x.len() / cols;
        if n <= 8 {
            let shape = GemmShape { rows: FEW_ROWS, tokens: 8 };
            few_tokens(w, cols, x, out, out_stride, shape, 1, pack, |tile| few_tile::<W, FEW_ROWS, 1>(tile, load));
        } else if n <= FEW_TOKENS && W::as_f32(w).is_none() {
            // f32 weights: the GEMM broadcasts them in place, measured faster
            // than this tile's copies for 9 to 16 tokens (390 vs 490 µs for
            // 1536 × 576); the results are the same.
            let shape = GemmShape { rows: TILE_ROWS, tokens: 16 };
            few_tokens(w, cols, x, out, out_stride, shape, 1, pack, |tile| few_tile::<W, TILE_ROWS, 2>(tile, load));
        } else {
            let widen = |w: &[W], out: &mut [f32]| widen(w, out, load);
            let shape = GemmShape { rows: TILE_ROWS, tokens: TILE_VECTORS * 8 };
            gemm(w, cols, x, out, out_stride, shape, pack, widen, |tile| match tile.token_vectors {
                2 => tile_kernel::<2>(tile),
                _ => tile_kernel::<1>(tile),
            });
        }
    };
    float_gemm::matmul(w, cols, rows, x, n, out, out_stride, tokens);
}

/// Packs `tn` activation rows (row `t` at `x[t * cols..][..kc]`) token-major:
/// `out[k * tokens + t] = x[t * cols + k]`, tokens `tn..tokens` zero.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn pack_tokens(x: &[f32], cols: usize, tn: usize, kc: usize, tokens: usize, out: &mut [f32]) {
    let out = &mut out[..kc * tokens];
    if tn < tokens {
        out.fill(0.0);
    }
    // Blocks of 8 tokens × 8 columns, transposed in registers.
    let full = tn / 8 * 8;
    let k8 = kc / 8 * 8;
    for t0 in (0..full).step_by(8) {
        for k0 in (0..k8).step_by(8) {
            let mut v = [_mm256_setzero_ps(); 8];
            for (i, v) in v.iter_mut().enumerate() {
                *v = load8(&x[(t0 + i) * cols + k0..]);
            }
            let tr = transpose8(v);
            for (i, &col) in tr.iter().enumerate() {
                store8(&mut out[(k0 + i) * tokens + t0..], col);
            }
        }
    }
    // The columns and tokens the blocks did not cover, one at a time.
    for t in 0..tn {
        let ks = if t < full { k8 } else { 0 };
        for k in ks..kc {
            out[k * tokens + t] = x[t * cols + k];
        }
    }
}

/// The transpose of the 8 × 8 matrix whose rows are `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn transpose8(v: [__m256; 8]) -> [__m256; 8] {
    // Pairs of rows interleaved within each 128-bit half, then
    // b[c] = column c (low half) and c + 4 (high half) of rows 0-3,
    // b[4 + c] the same for rows 4-7; then the halves swapped.
    let mut a = [_mm256_setzero_ps(); 8];
    for i in 0..4 {
        a[2 * i] = _mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]);
        a[2 * i + 1] = _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]);
    }
    let mut b = [_mm256_setzero_ps(); 8];
    for g in [0, 4] {
        for h in 0..2 {
            let (p, q) = (a[g + h], a[g + h + 2]);
            b[g + 2 * h] = _mm256_shuffle_ps::<0x44>(p, q);
            b[g + 2 * h + 1] = _mm256_shuffle_ps::<0xEE>(p, q);
        }
    }
    let mut out = [_mm256_setzero_ps(); 8];
    for c in 0..4 {
        out[c] = _mm256_permute2f128_ps::<0x20>(b[c], b[c + 4]);
        out[c + 4] = _mm256_permute2f128_ps::<0x31>(b[c], b[c + 4]);
    }
    out
}

/// The AVX2 register tile: [`TILE_ROWS`] weight rows × `V` vectors of 8
/// tokens, one FMA chain per output, summed over the tile's columns in order.
/// The accumulators hold rows; each vector of 8 tokens is transposed in
/// registers into per-token vectors of the tile's rows for the output.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_kernel<const V: usize>(tile: Tile) {
    const R: usize = TILE_ROWS;
    let Tile { w, w_stride, x, kc, prefetch, mut out, .. } = tile;
    let x8 = &x.as_chunks::<8>().0[..kc * V];
    assert!(w.len() >= (R - 1) * w_stride + kc);
    let prefetch = Prefetch::new(prefetch, kc);
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    for (i, x_chunk) in x8.chunks(prefetch.chunk * V).enumerate() {
        prefetch_l2(prefetch.line(i));
        let k0 = i * prefetch.chunk;
        for (k, xk) in (k0..).zip(x_chunk.chunks_exact(V)) {
            let mut xv = [_mm256_setzero_ps(); V];
            for (v, xv) in xv.iter_mut().enumerate() {
                *xv = load8(&xk[v]);
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // SAFETY: r * w_stride + k < (R - 1) * w_stride + kc <= w.len(),
                // asserted above.
                let b = _mm256_set1_ps(unsafe { *w.get_unchecked(r * w_stride + k) });
                for (a, &xv) in acc_r.iter_mut().zip(&xv) {
                    *a = _mm256_fmadd_ps(b, xv, *a);
                }
            }
        }
    }
    // by_row[v][r]: the accumulators of token vector v (rows R.. zero).
    let mut by_row = [[_mm256_setzero_ps(); 8]; V];
    for (r, acc_r) in acc.iter().enumerate() {
        for (by_row, &a) in by_row.iter_mut().zip(acc_r) {
            by_row[r] = a;
        }
    }
    for (v, by_row) in by_row.into_iter().enumerate() {
        let by_token = transpose8(by_row);
        for (i, &col) in by_token.iter().enumerate().take(out.tokens.saturating_sub(v * 8)) {
            let mut rows = [0f32; 8];
            store8(&mut rows, col);
            out.put::<R>(v * 8 + i, rows.first_chunk().expect("R <= 8"));
        }
    }
}

/// The AVX2 few-token register tile: `R` weight rows × `V` vectors of 8
/// tokens, one FMA chain per output, summed over the tile's columns in order
/// (as [`tile_kernel`]), [`FEW_CHUNK`] columns at a time (see
/// [`fill_chunk`]). Rows past `out.rows` repeat the last row; their results
/// are dropped.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn few_tile<W: FloatWeight, const R: usize, const V: usize>(tile: Tile<W>, load: impl Fn(&[W]) -> __m256 + Copy) {
    let Tile { w, w_stride, x, kc, prefetch, mut out, .. } = tile;
    let x8 = &x.as_chunks::<8>().0[..kc * V];
    let mut rows: [&[W]; R] = [&[]; R];
    for (r, row) in rows.iter_mut().enumerate() {
        *row = &w[r.min(out.rows - 1) * w_stride..][..kc];
    }
    let mut prefetch = PrefetchCursor::new(prefetch, kc);
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    let mut buf = [[0f32; FEW_CHUNK]; R];
    for k0 in (0..kc).step_by(FEW_CHUNK) {
        let len = (kc - k0).min(FEW_CHUNK);
        fill_chunk(&rows, k0, len, &mut buf, |w, out| widen(w, out, load));
        few_columns(&mut acc, &buf, &x8[k0 * V..(k0 + len) * V], &mut prefetch, k0);
    }
    // by_row[g][v][i]: the accumulators of rows 8g + i, token vector v
    // (rows R.. zero), each 8 × 8 block transposed into by_token[t][r], the
    // results of token t, row r (R <= 16, 8 * V <= 16).
    let mut by_row = [[[_mm256_setzero_ps(); 8]; V]; 2];
    for (r, acc_r) in acc.iter().enumerate() {
        for (v, &a) in acc_r.iter().enumerate() {
            by_row[r / 8][v][r % 8] = a;
        }
    }
    let mut by_token = [[0f32; 16]; 16];
    for (g, by_row) in by_row.iter().enumerate().take(R.div_ceil(8)) {
        for (v, &by_row) in by_row.iter().enumerate() {
            for (i, &col) in transpose8(by_row).iter().enumerate() {
                store8(&mut by_token[v * 8 + i][g * 8..], col);
            }
        }
    }
    for (t, rows) in by_token.iter().enumerate().take(out.tokens) {
        out.put::<R>(t, rows.first_chunk().expect("R <= 16"));
    }
}

/// The FMAs of [`few_tile`] over one chunk of columns `k0..`:
/// `acc[r][v] += buf[r][k] × x8[k * V + v]` for each column `k` in order.
/// Not inlined: with the chunk's widening in the same loop, LLVM keeps the
/// accumulators on the stack instead of in registers; a call per chunk only
/// moves them there and back once.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
fn few_columns<const R: usize, const V: usize>(
    acc: &mut [[__m256; V]; R],
    buf: &[[f32; FEW_CHUNK]; R],
    x8: &[[f32; 8]],
    prefetch: &mut PrefetchCursor,
    k0: usize,
) {
    let mut a = *acc;
    for (k, xk) in x8.chunks_exact(V).enumerate().take(FEW_CHUNK) {
        prefetch_l2(prefetch.column(k0 + k));
        let mut xv = [_mm256_setzero_ps(); V];
        for (xv, xk) in xv.iter_mut().zip(xk) {
            *xv = load8(xk);
        }
        for (a_r, buf) in a.iter_mut().zip(buf) {
            // SAFETY: k < FEW_CHUNK, from `take` above.
            let b = _mm256_set1_ps(unsafe { *buf.get_unchecked(k) });
            for (a, &xv) in a_r.iter_mut().zip(&xv) {
                *a = _mm256_fmadd_ps(b, xv, *a);
            }
        }
    }
    *acc = a;
}

/// Prefetches `line` (if any) into L2: a driver's [`Prefetch`] says which.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn prefetch_l2(line: Option<&u8>) {
    if let Some(line) = line {
        _mm_prefetch::<_MM_HINT_T1>(std::ptr::from_ref(line).cast());
    }
}
