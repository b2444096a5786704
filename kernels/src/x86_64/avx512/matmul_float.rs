//! AVX-512 f32/f16 matmuls: the AVX2 module's GEMV and GEMM designs with
//! 16-lane registers, using the 32 zmm registers for a larger GEMM tile. The
//! GEMM's blocking, packing and output writes are the AVX2 module's driver;
//! only the register tile is here.

use std::arch::x86_64::*;
use std::ops::Range;

use half::f16;

use super::simd::{load16, load16_f16, load16_f16_partial, load16_partial, store16};
use crate::x86_64::avx2::matmul_float::{
    check_out, gemm, FloatWeight, Prefetch, Tile, TileShape, GEMV_PREFETCH_GROUPS, GEMV_PREFETCH_MAX,
};

/// Weight rows per GEMV step, with two accumulators each (32 columns a step):
/// 8 FMA chains and 8 weight loads in flight, as in AVX2.
const GEMV_ROWS: usize = 4;

/// Weight rows × token vectors of the GEMM register tile: 12 × 2 × 16 = 384
/// outputs in 24 accumulators. Per column, 2 activation loads and 12 weight
/// broadcasts (14 loads, 7 cycles at 2 per cycle) feed 24 FMAs (12 cycles at
/// 2 per cycle); the 2 activation vectors and a broadcast fit the 8 registers
/// left. 32 tokens is also what the model's prefill hands one thread at a
/// time (two threads, 128 tokens). 14 rows measured no faster.
const TILE_ROWS: usize = 12;
const TILE_VECTORS: usize = 2;

/// As [`crate::reference::matmul_f32`]: a GEMV for one token, the GEMM with the
/// AVX-512 register tile for more.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn matmul_f32(
    w: &[f32],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    float_matmul(w, cols, rows, x, n, out, out_stride, |s| load16(s), |s| load16_partial(s));
}

/// As [`crate::reference::matmul_f16`]: as [`matmul_f32`], widening 16 weights
/// at a time in the GEMV, and each weight once into scratch in the GEMM.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn matmul_f16(
    w: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    float_matmul(w, cols, rows, x, n, out, out_stride, |s| load16_f16(s), |s| load16_f16_partial(s));
}

/// The body of [`matmul_f32`] and [`matmul_f16`]: shape checks, then the GEMV
/// or the GEMM. `load` widens 16 weights to f32, `load_partial` the first
/// `min(len, 16)` (zero lanes after).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn float_matmul<W: FloatWeight>(
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
    if rows.is_empty() || n == 0 {
        return;
    }
    check_out(&rows, n, out, out_stride);
    if cols == 0 {
        for t in 0..n {
            out[t * out_stride..][..rows.len()].fill(0.0);
        }
        return;
    }
    let w = &w[rows.start * cols..rows.end * cols];
    if n == 1 {
        gemv(w, cols, &x[..cols], &mut out[..rows.len()], load, load_partial);
    } else {
        let widen = |w: &[W], out: &mut [f32]| widen(w, out, load, load_partial);
        let shape = TileShape { rows: TILE_ROWS, tokens: TILE_VECTORS * 16 };
        gemm(w, cols, &x[..n * cols], out, out_stride, shape, widen, |tile| match tile.token_vectors {
            2 => tile_kernel::<2>(tile),
            _ => tile_kernel::<1>(tile),
        });
    }
}

/// `out[r] = dot(w[r], x)` for the `out.len()` rows of the row-major `w`
/// (`cols` wide), [`GEMV_ROWS`] rows at a time.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn gemv<W: FloatWeight>(
    w: &[W],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    load: impl Fn(&[W]) -> __m512 + Copy,
    load_partial: impl Fn(&[W]) -> __m512 + Copy,
) {
    let mut row_groups = w.chunks_exact(GEMV_ROWS * cols);
    let mut out_groups = out.chunks_exact_mut(GEMV_ROWS);
    for (wg, og) in (&mut row_groups).zip(&mut out_groups) {
        og.copy_from_slice(&dot_rows::<W, GEMV_ROWS>(wg, cols, x, load, load_partial));
    }
    for (wr, o) in row_groups.remainder().chunks_exact(cols).zip(out_groups.into_remainder()) {
        *o = dot_rows::<W, 1>(wr, cols, x, load, load_partial)[0];
    }
}

/// The dot products of the `R` consecutive rows of `w` (`cols` wide) with
/// `x`, sharing each load of `x`: two accumulators per row, 32 columns a step,
/// the last 0-31 columns as two masked steps.
///
/// Each step also prefetches ahead as the AVX2 GEMV does (the same columns
/// [`GEMV_PREFETCH_GROUPS`] row groups ahead, at most [`GEMV_PREFETCH_MAX`]
/// bytes), for the same reason.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_rows<W: FloatWeight, const R: usize>(
    w: &[W],
    cols: usize,
    x: &[f32],
    load: impl Fn(&[W]) -> __m512 + Copy,
    load_partial: impl Fn(&[W]) -> __m512 + Copy,
) -> [f32; R] {
    let steps = cols / 32;
    let x32 = &x.as_chunks::<32>().0[..steps];
    // Loops, not `array::from_fn`: its closure is not inlined into
    // `#[target_feature]` code, which costs a call per row group.
    let mut w32: [&[[W; 32]]; R] = [&[]; R];
    for (r, wr) in w32.iter_mut().enumerate() {
        *wr = &w[r * cols..][..cols].as_chunks::<32>().0[..steps];
    }
    let ahead = (GEMV_PREFETCH_GROUPS * R * cols * size_of::<W>()).min(GEMV_PREFETCH_MAX);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for (c, xc) in x32.iter().enumerate() {
        let xv = [load16(xc), load16(&xc[16..])];
        for r in 0..R {
            _mm_prefetch::<_MM_HINT_T1>(w32[r].as_ptr().wrapping_add(c).wrapping_byte_add(ahead).cast());
            // Unchecked: LLVM does not see that the R slices share x32's
            // length and keeps a compare-and-branch per row otherwise.
            // SAFETY: c < steps, and every `w32[r]` is `[..steps]` above.
            let wc = unsafe { w32[r].get_unchecked(c) };
            acc[r][0] = _mm512_fmadd_ps(load(wc), xv[0], acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(load(&wc[16..]), xv[1], acc[r][1]);
        }
    }
    for (h, start) in [steps * 32, steps * 32 + 16].into_iter().enumerate() {
        if start < cols {
            let xv = load16_partial(&x[start..]);
            for r in 0..R {
                acc[r][h] = _mm512_fmadd_ps(load_partial(&w[r * cols + start..(r + 1) * cols]), xv, acc[r][h]);
            }
        }
    }
    let mut sums = [0f32; R];
    for (r, sum) in sums.iter_mut().enumerate() {
        *sum = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
    }
    sums
}

/// Widens `w` to f32 into `out` (same length), 16 at a time.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn widen<W: FloatWeight>(
    w: &[W],
    out: &mut [f32],
    load: impl Fn(&[W]) -> __m512,
    load_partial: impl Fn(&[W]) -> __m512,
) {
    let (w16, w_tail) = w.as_chunks::<16>();
    let (o16, o_tail) = out.as_chunks_mut::<16>();
    for (o, w) in o16.iter_mut().zip(w16) {
        store16(o, load(w));
    }
    if !w_tail.is_empty() {
        let mut tmp = [0f32; 16];
        store16(&mut tmp, load_partial(w_tail));
        o_tail.copy_from_slice(&tmp[..o_tail.len()]);
    }
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
        prefetch.line(i);
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
