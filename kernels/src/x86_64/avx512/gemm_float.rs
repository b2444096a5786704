//! AVX-512 f32/f16 matmuls in the GEMM form (prefill tokens, any count: see
//! [`crate::driver::float_gemm`]): the AVX2 module's GEMM and few-token
//! designs with 16-lane registers, using the 32 zmm registers for larger
//! tiles, among them one for up to 8 tokens that puts two rows in each
//! vector. The blocking and output writes are the driver's, the packing of
//! activations the AVX2 module's; only the register tiles are here.

use std::arch::x86_64::*;
use std::ops::Range;

use half::f16;

use super::matmul_float::widen;
use super::simd::{load16, load16_f16, load16_f16_partial, load16_partial, store16};
use crate::driver::float::FloatWeight;
use crate::driver::float_gemm::{
    self, few_tokens, fill_chunk, gemm, GemmShape, Prefetch, PrefetchCursor, Tile, FEW_CHUNK, FEW_TOKENS,
};
use crate::x86_64::avx2::gemm_float::{pack_tokens, prefetch_l2};

/// Weight rows × token vectors of the GEMM register tile: 12 × 2 × 16 = 384
/// outputs in 24 accumulators. Per column, 2 activation loads and 12 weight
/// broadcasts (14 loads, 7 cycles at 2 per cycle) feed 24 FMAs (12 cycles at
/// 2 per cycle); the 2 activation vectors and a broadcast fit the 8 registers
/// left. 32 tokens is also what the model's prefill hands one thread at a
/// time (two threads, 128 tokens). 14 rows measured no faster.
const TILE_ROWS: usize = 12;
const TILE_VECTORS: usize = 2;

/// Weight rows of the few-token register tile (one vector of 16 tokens).
const FEW_ROWS: usize = 12;
/// Vectors of the pair tile (up to 8 tokens): each holds two rows' 8 tokens,
/// so the tile has twice as many rows.
const PAIR_VECTORS: usize = 12;

/// As [`crate::reference::matmul_f32`], in the GEMM form for any token count.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn gemm_f32(
    w: &[f32],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    float_gemm(w, cols, rows, x, n, out, out_stride, |s| load16(s), |s| load16_partial(s));
}

/// As [`crate::reference::matmul_f16`]: as [`gemm_f32`], widening 16 weights
/// at a time (into the few-token tiles' chunks, or once into the GEMM's
/// scratch).
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn gemm_f16(
    w: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    float_gemm(w, cols, rows, x, n, out, out_stride, |s| load16_f16(s), |s| load16_f16_partial(s));
}

/// The body of [`gemm_f32`] and [`gemm_f16`]: the few-token tiles or the
/// GEMM. `load` widens 16 weights to f32, `load_partial` the first
/// `min(len, 16)` (zero lanes after).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn float_gemm<W: FloatWeight>(
    w: &[W],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    load: impl Fn(&[W]) -> __m512 + Copy,
    load_partial: impl Fn(&[W]) -> __m512 + Copy,
) {
    let pack = |x: &[f32], cols, tn, kc, tokens, out: &mut [f32]| pack_tokens(x, cols, tn, kc, tokens, out);
    let tokens = |w: &[W], x: &[f32], out: &mut [f32]| {
        let n = x.len() / cols;
        if n <= 8 {
            let shape = GemmShape { rows: 2 * PAIR_VECTORS, tokens: 8 };
            few_tokens(w, cols, x, out, out_stride, shape, 2, pack, |tile| pair_tile(tile, load, load_partial));
        } else if n <= FEW_TOKENS {
            let shape = GemmShape { rows: FEW_ROWS, tokens: 16 };
            few_tokens(w, cols, x, out, out_stride, shape, 1, pack, |tile| {
                few_tile::<W, FEW_ROWS>(tile, load, load_partial)
            });
        } else {
            let widen = |w: &[W], out: &mut [f32]| widen(w, out, load, load_partial);
            let shape = GemmShape { rows: TILE_ROWS, tokens: TILE_VECTORS * 16 };
            gemm(w, cols, x, out, out_stride, shape, pack, widen, |tile| match tile.token_vectors {
                2 => tile_kernel::<2>(tile),
                _ => tile_kernel::<1>(tile),
            });
        }
    };
    float_gemm::matmul(w, cols, rows, x, n, out, out_stride, tokens);
}

/// The AVX-512 register tile: [`TILE_ROWS`] weight rows × `V` vectors of 16
/// tokens, one FMA chain per output, summed over the tile's columns in order.
/// The accumulators hold rows; each vector of 16 tokens is transposed in
/// registers into per-token vectors of the tile's rows for the output.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile_kernel<const V: usize>(tile: Tile) {
    const R: usize = TILE_ROWS;
    let Tile { w, w_stride, x, kc, prefetch, mut out, .. } = tile;
    let x16 = &x.as_chunks::<16>().0[..kc * V];
    assert!(w.len() >= (R - 1) * w_stride + kc);
    let prefetch = Prefetch::new(prefetch, kc);
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    for (i, x_chunk) in x16.chunks(prefetch.chunk * V).enumerate() {
        prefetch_l2(prefetch.line(i));
        let k0 = i * prefetch.chunk;
        for (k, xk) in (k0..).zip(x_chunk.chunks_exact(V)) {
            let mut xv = [_mm512_setzero_ps(); V];
            for (v, xv) in xv.iter_mut().enumerate() {
                *xv = load16(&xk[v]);
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // SAFETY: r * w_stride + k < (R - 1) * w_stride + kc <= w.len(),
                // asserted above.
                let b = _mm512_set1_ps(unsafe { *w.get_unchecked(r * w_stride + k) });
                for (a, &xv) in acc_r.iter_mut().zip(&xv) {
                    *a = _mm512_fmadd_ps(b, xv, *a);
                }
            }
        }
    }
    // by_row[v][r]: the accumulators of token vector v (rows R.. zero).
    let mut by_row = [[_mm512_setzero_ps(); 16]; V];
    for (r, acc_r) in acc.iter().enumerate() {
        for (by_row, &a) in by_row.iter_mut().zip(acc_r) {
            by_row[r] = a;
        }
    }
    for (v, by_row) in by_row.into_iter().enumerate() {
        let by_token = transpose16(by_row);
        for (i, &col) in by_token.iter().enumerate().take(out.tokens.saturating_sub(v * 16)) {
            let mut rows = [0f32; 16];
            store16(&mut rows, col);
            out.put::<R>(v * 16 + i, rows.first_chunk().expect("R <= 16"));
        }
    }
}

/// The transpose of the 16 × 16 matrix whose rows are `v`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn transpose16(v: [__m512; 16]) -> [__m512; 16] {
    // Within each 128-bit lane L: pairs of rows interleaved, then
    // b[4g + c] lane L = rows 4g..4g + 4 of column 4L + c.
    let mut a = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        a[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
    }
    let mut b = [_mm512_setzero_ps(); 16];
    for g in [0, 4, 8, 12] {
        for h in 0..2 {
            let (p, q) = (_mm512_castps_pd(a[g + h]), _mm512_castps_pd(a[g + h + 2]));
            b[g + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(p, q));
            b[g + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(p, q));
        }
    }
    // Then whole 128-bit lanes: lo/hi[c] hold lanes 0-1 / 2-3 of row groups
    // 0 and 1 (from b[c], b[4 + c]) and of row groups 2 and 3 (b[8 + c],
    // b[12 + c]); column 4L + c gathers lane L of each row group.
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let lo01 = _mm512_shuffle_f32x4::<0x44>(b[c], b[4 + c]);
        let hi01 = _mm512_shuffle_f32x4::<0xEE>(b[c], b[4 + c]);
        let lo23 = _mm512_shuffle_f32x4::<0x44>(b[8 + c], b[12 + c]);
        let hi23 = _mm512_shuffle_f32x4::<0xEE>(b[8 + c], b[12 + c]);
        out[c] = _mm512_shuffle_f32x4::<0x88>(lo01, lo23);
        out[4 + c] = _mm512_shuffle_f32x4::<0xDD>(lo01, lo23);
        out[8 + c] = _mm512_shuffle_f32x4::<0x88>(hi01, hi23);
        out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(hi01, hi23);
    }
    out
}

/// The AVX-512 few-token register tile: `R` weight rows × 16 tokens, as the
/// AVX2 module's `few_tile` (one FMA chain per output in column order,
/// [`FEW_CHUNK`] columns at a time; rows past `out.rows` repeat the last row
/// and are dropped).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn few_tile<W: FloatWeight, const R: usize>(
    tile: Tile<W>,
    load: impl Fn(&[W]) -> __m512 + Copy,
    load_partial: impl Fn(&[W]) -> __m512 + Copy,
) {
    let Tile { w, w_stride, x, kc, prefetch, mut out, .. } = tile;
    let x16 = &x.as_chunks::<16>().0[..kc];
    let mut rows: [&[W]; R] = [&[]; R];
    for (r, row) in rows.iter_mut().enumerate() {
        *row = &w[r.min(out.rows - 1) * w_stride..][..kc];
    }
    let mut prefetch = PrefetchCursor::new(prefetch, kc);
    let mut acc = [_mm512_setzero_ps(); R];
    let mut buf = [[0f32; FEW_CHUNK]; R];
    for k0 in (0..kc).step_by(FEW_CHUNK) {
        let len = (kc - k0).min(FEW_CHUNK);
        fill_chunk(&rows, k0, len, &mut buf, |w, out| widen(w, out, load, load_partial));
        few_columns(&mut acc, &buf, &x16[k0..k0 + len], &mut prefetch, k0);
    }
    // by_row[g][i]: the accumulators of row 16g + i (rows R.. zero), each
    // 16 × 16 block transposed into by_token[t][r], token t's result for
    // row r (R <= 32).
    let mut by_row = [[_mm512_setzero_ps(); 16]; 2];
    for (r, &a) in acc.iter().enumerate() {
        by_row[r / 16][r % 16] = a;
    }
    let mut by_token = [[0f32; 32]; 16];
    for (g, &by_row) in by_row.iter().enumerate().take(R.div_ceil(16)) {
        for (by_token, &col) in by_token.iter_mut().zip(&transpose16(by_row)) {
            store16(&mut by_token[g * 16..], col);
        }
    }
    for (t, rows) in by_token.iter().enumerate().take(out.tokens) {
        out.put::<R>(t, rows.first_chunk().expect("R <= 32"));
    }
}

/// The FMAs of [`few_tile`] over one chunk of columns `k0..`:
/// `acc[r] += buf[r][k] × x16[k]` for each column `k` in order. Not inlined,
/// for the reason the AVX2 module's `few_columns` gives.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn few_columns<const R: usize>(
    acc: &mut [__m512; R],
    buf: &[[f32; FEW_CHUNK]; R],
    x16: &[[f32; 16]],
    prefetch: &mut PrefetchCursor,
    k0: usize,
) {
    let mut a = *acc;
    for (k, xk) in x16.iter().enumerate().take(FEW_CHUNK) {
        prefetch_l2(prefetch.column(k0 + k));
        let xv = load16(xk);
        for (a, buf) in a.iter_mut().zip(buf) {
            // SAFETY: k < FEW_CHUNK, from `take` above.
            let b = _mm512_set1_ps(unsafe { *buf.get_unchecked(k) });
            *a = _mm512_fmadd_ps(b, xv, *a);
        }
    }
    *acc = a;
}

/// The AVX-512 register tile for up to 8 tokens: [`PAIR_VECTORS`] vectors
/// (`P`), each holding
/// two weight rows × 8 tokens (lane `2t + h`: row `2p + h`, token `t`), so a
/// vector of FMAs has no idle lanes: the weights are widened
/// [`FEW_CHUNK`] columns at a time into pairs (row `2p`, row `2p + 1`) that one
/// 64-bit broadcast spreads over the lanes, the tokens are packed twice each
/// (see `few_tokens`). One FMA chain per output in column order, as every
/// tile; rows past `out.rows` repeat the last row and are dropped.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pair_tile<W: FloatWeight>(
    tile: Tile<W>,
    load: impl Fn(&[W]) -> __m512 + Copy,
    load_partial: impl Fn(&[W]) -> __m512 + Copy,
) {
    const P: usize = PAIR_VECTORS;
    let Tile { w, w_stride, x, kc, prefetch, mut out, .. } = tile;
    let x16 = &x.as_chunks::<16>().0[..kc];
    let row = |r: usize| &w[r.min(out.rows - 1) * w_stride..][..kc];
    let mut pairs: [[&[W]; 2]; P] = [[&[]; 2]; P];
    for (p, pair) in pairs.iter_mut().enumerate() {
        *pair = [row(2 * p), row(2 * p + 1)];
    }
    let mut prefetch = PrefetchCursor::new(prefetch, kc);
    let mut acc = [_mm512_setzero_ps(); P];
    // buf[p][k]: the f32 pair (row 2p, row 2p + 1) of column k, as one f64.
    let mut buf = [[0f64; FEW_CHUNK]; P];
    // Lane i of `lo` (`hi`): lane i / 2 (8 + i / 2) of row 2p if i is even,
    // else of row 2p + 1.
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for k0 in (0..kc).step_by(FEW_CHUNK) {
        let len = (kc - k0).min(FEW_CHUNK);
        for (pair, buf) in pairs.iter().zip(&mut buf) {
            let buf: &mut [f32] = bytemuck::cast_slice_mut(buf);
            for (c, out) in (k0..k0 + len).step_by(16).zip(buf.chunks_exact_mut(32)) {
                let [a, b] = pair.map(|row| {
                    let row = &row[c..k0 + len];
                    if row.len() >= 16 {
                        load(row)
                    } else {
                        load_partial(row)
                    }
                });
                store16(out, _mm512_permutex2var_ps(a, lo, b));
                store16(&mut out[16..], _mm512_permutex2var_ps(a, hi, b));
            }
        }
        pair_columns(&mut acc, &buf, &x16[k0..k0 + len], &mut prefetch, k0);
    }
    let mut lanes = [[0f32; 16]; P];
    for (lanes, &a) in lanes.iter_mut().zip(&acc) {
        store16(lanes, a);
    }
    for t in 0..out.tokens {
        let mut rows = [0f32; 2 * PAIR_VECTORS];
        for (rows, lanes) in rows.chunks_exact_mut(2).zip(&lanes) {
            rows.copy_from_slice(&lanes[2 * t..2 * t + 2]);
        }
        out.put(t, &rows);
    }
}

/// The FMAs of [`pair_tile`] over one chunk of columns `k0..`:
/// `acc[p] += broadcast(buf[p][k]) × x16[k]` for each column `k` in order.
/// Not inlined, for the reason the AVX2 module's `few_columns` gives.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pair_columns<const P: usize>(
    acc: &mut [__m512; P],
    buf: &[[f64; FEW_CHUNK]; P],
    x16: &[[f32; 16]],
    prefetch: &mut PrefetchCursor,
    k0: usize,
) {
    let mut a = *acc;
    for (k, xk) in x16.iter().enumerate().take(FEW_CHUNK) {
        prefetch_l2(prefetch.column(k0 + k));
        let xv = load16(xk);
        for (a, buf) in a.iter_mut().zip(buf) {
            // SAFETY: k < FEW_CHUNK, from `take` above.
            let b = _mm512_castpd_ps(_mm512_set1_pd(unsafe { *buf.get_unchecked(k) }));
            *a = _mm512_fmadd_ps(b, xv, *a);
        }
    }
    *acc = a;
}
