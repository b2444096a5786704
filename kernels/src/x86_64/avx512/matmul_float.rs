//! AVX-512 f32/f16 matmuls in the dot form (decode tokens): the AVX2
//! module's design (one register tile, [`dot_tile`], for every token count,
//! run by the driver in [`crate::driver::float`]) with 16-lane registers,
//! using the 32 zmm registers for a larger several-token tile. Prefill tokens
//! take the GEMM form ([`super::gemm_float`]).

use std::arch::x86_64::*;
use std::ops::Range;

use half::f16;

use super::simd::{load16, load16_f16, load16_f16_partial, load16_partial, store16};
use crate::driver::float::{self, FloatWeight, TileShape};
use crate::x86_64::avx2::matmul_float::{GEMV_PREFETCH_GROUPS, GEMV_PREFETCH_MAX};

/// The one-token tile: 4 rows with two accumulators each (32 columns a
/// step): 8 FMA chains and 8 weight loads in flight, as in AVX2.
const GEMV: TileShape = TileShape { rows: 4, tokens: 1, block_bytes: 0 };
/// The several-token tile: 4 rows × 3 tokens, 24 accumulators (two per
/// output); a step's 8 weight loads (and widenings) and 6 activation loads
/// feed 24 FMAs. Blocks of rows of 16 KiB stay in L1 while the token groups
/// pass.
const TILE: TileShape = TileShape { rows: 4, tokens: 3, block_bytes: 16 * 1024 };

/// As [`crate::reference::matmul_f32`]: [`dot_tile`] for every token count.
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

/// As [`crate::reference::matmul_f16`]: as [`matmul_f32`], widening 16
/// weights at a time as they are loaded (one token group) or once per block
/// of rows (more).
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

/// The body of [`matmul_f32`] and [`matmul_f16`]: the driver with the tile
/// shape for the token count. `load` widens 16 weights to f32,
/// `load_partial` the first `min(len, 16)` (zero lanes after).
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
    let shape = if n == 1 { GEMV } else { TILE };
    float::matmul(
        w,
        cols,
        rows,
        x,
        n,
        out,
        out_stride,
        shape,
        |rn, tn, w, x, out, stripe| tile(rn, tn, w, cols, x, out, out_stride, load, load_partial, stripe),
        |rn, tn, w, x, out, stripe| {
            tile(rn, tn, w, cols, x, out, out_stride, |s| load16(s), |s| load16_partial(s), stripe)
        },
        |w, out| widen(w, out, load, load_partial),
    );
}

/// [`dot_tile`] for the driver's `rn` rows × `tn` tokens, `stripe` rows apart.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)] // the tile's shape and operands
fn tile<W: FloatWeight>(
    rn: usize,
    tn: usize,
    w: &[W],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    out_stride: usize,
    load: impl Fn(&[W]) -> __m512 + Copy,
    load_partial: impl Fn(&[W]) -> __m512 + Copy,
    stripe: usize,
) {
    let (c, s, l, p) = (cols, out_stride, load, load_partial);
    match (rn, tn) {
        (4, 1) => dot_tile::<W, 4, 1>(w, c, x, out, s, l, p, stripe),
        (4, 2) => dot_tile::<W, 4, 2>(w, c, x, out, s, l, p, stripe),
        (4, 3) => dot_tile::<W, 4, 3>(w, c, x, out, s, l, p, stripe),
        (1, 1) => dot_tile::<W, 1, 1>(w, c, x, out, s, l, p, stripe),
        (1, 2) => dot_tile::<W, 1, 2>(w, c, x, out, s, l, p, stripe),
        (1, 3) => dot_tile::<W, 1, 3>(w, c, x, out, s, l, p, stripe),
        _ => unreachable!("AVX-512 float tile {rn} x {tn}"),
    }
}

/// Widens `w` to f32 into `out` (same length), 16 at a time.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn widen<W: FloatWeight>(
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

/// `out[t * out_stride + r * stripe] = dot(w[r * stripe], x[t])` for `R`
/// rows of `w`, `stripe` rows apart, and the `T` tokens of `x` (each `cols`
/// wide). Each output sums
/// alone, the same whatever `R` and `T`: two accumulators (32 columns a step,
/// the last 0-31 columns as two masked steps), their sum reduced by
/// `_mm512_reduce_add_ps`. Each step prefetches ahead as the AVX2 tile does
/// (the same columns [`GEMV_PREFETCH_GROUPS`] × `R` rows ahead in the row's
/// stream, at most
/// [`GEMV_PREFETCH_MAX`] bytes), for the same reason.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)] // the tile's shape and operands
fn dot_tile<W: FloatWeight, const R: usize, const T: usize>(
    w: &[W],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    out_stride: usize,
    load: impl Fn(&[W]) -> __m512 + Copy,
    load_partial: impl Fn(&[W]) -> __m512 + Copy,
    stripe: usize,
) {
    let steps = cols / 32;
    // Loops, not `array::from_fn`: its closure is not inlined into
    // `#[target_feature]` code, which costs a call per tile.
    let mut x32: [&[[f32; 32]]; T] = [&[]; T];
    for (t, xt) in x32.iter_mut().enumerate() {
        *xt = &x[t * cols..][..cols].as_chunks::<32>().0[..steps];
    }
    let mut w32: [&[[W; 32]]; R] = [&[]; R];
    for (r, wr) in w32.iter_mut().enumerate() {
        *wr = &w[r * stripe * cols..][..cols].as_chunks::<32>().0[..steps];
    }
    let ahead = (GEMV_PREFETCH_GROUPS * R * cols * size_of::<W>()).min(GEMV_PREFETCH_MAX);
    let mut acc = [[[_mm512_setzero_ps(); 2]; T]; R];
    for c in 0..steps {
        let mut xv = [[_mm512_setzero_ps(); 2]; T];
        for (xv, x32) in xv.iter_mut().zip(&x32) {
            // Unchecked: LLVM does not see that the R + T slices share one
            // length and keeps a compare-and-branch per load otherwise.
            // SAFETY: c < steps, and every `x32[t]` is `[..steps]` above.
            let xc = unsafe { x32.get_unchecked(c) };
            *xv = [load16(xc), load16(&xc[16..])];
        }
        for r in 0..R {
            _mm_prefetch::<_MM_HINT_T1>(w32[r].as_ptr().wrapping_add(c).wrapping_byte_add(ahead).cast());
            // SAFETY: c < steps, and every `w32[r]` is `[..steps]` above.
            let wc = unsafe { w32[r].get_unchecked(c) };
            let wv = [load(wc), load(&wc[16..])];
            for (acc, xv) in acc[r].iter_mut().zip(&xv) {
                acc[0] = _mm512_fmadd_ps(wv[0], xv[0], acc[0]);
                acc[1] = _mm512_fmadd_ps(wv[1], xv[1], acc[1]);
            }
        }
    }
    for (h, start) in [steps * 32, steps * 32 + 16].into_iter().enumerate() {
        if start < cols {
            let mut xv = [_mm512_setzero_ps(); T];
            for (t, xv) in xv.iter_mut().enumerate() {
                *xv = load16_partial(&x[t * cols + start..(t + 1) * cols]);
            }
            for r in 0..R {
                let wv = load_partial(&w[r * stripe * cols + start..(r * stripe + 1) * cols]);
                for (acc, &xv) in acc[r].iter_mut().zip(&xv) {
                    acc[h] = _mm512_fmadd_ps(wv, xv, acc[h]);
                }
            }
        }
    }
    for t in 0..T {
        for r in 0..R {
            out[t * out_stride + r * stripe] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][t][0], acc[r][t][1]));
        }
    }
}
