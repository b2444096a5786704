//! AVX2 f32/f16 matmuls in the dot form (decode tokens: see
//! [`crate::driver::float`]): the register tile [`dot_tile`] that driver runs
//! for every token count, so one token (the GEMV) sums each output exactly as
//! several decode tokens do. Prefill tokens take the GEMM form
//! ([`super::gemm_float`]).
//!
//! - one token: every weight is used once, so the kernel only has to keep up
//!   with memory: 4 rows, enough independent FMA chains and loads in flight
//!   that neither FMA latency nor f16 widening is the bottleneck, and
//!   software prefetch (see [`GEMV_PREFETCH_GROUPS`]).
//! - several tokens: each weight load (and f16 widening) serves every token
//!   of a tile, each activation load every row.

use std::arch::x86_64::*;
use std::ops::Range;

use half::f16;

use super::simd::{hsum, load8, load8_f16, store8};
use crate::driver::float::{self, FloatWeight, TileShape};

/// How far ahead the tiles prefetch, in row groups. The weight rows of a
/// model are short (SmolLM2: 576 columns, 1152 bytes in f16): each is a new
/// stream of a dozen cache lines, too short for the hardware prefetcher to
/// ramp up on, and without software prefetch the GEMV reaches about half the
/// bandwidth it does on long rows. Into L2 (`T1`), two groups ahead: measured
/// best among T0/T1/NTA at 1, 2 and 4 groups (NTA halves the bandwidth).
pub(in crate::x86_64) const GEMV_PREFETCH_GROUPS: usize = 2;
/// The farthest the tiles prefetch, in bytes: on long rows (8192 f32 = 32
/// KiB) two groups ahead is 256 KiB per row, and the prefetched lines of the
/// 4 rows crowd L2 enough to cost a third of the bandwidth; 64 KiB does not
/// (and leaves SmolLM2-sized rows at two groups).
pub(in crate::x86_64) const GEMV_PREFETCH_MAX: usize = 64 * 1024;

/// The one-token tile: each activation load serves 4 rows, and with two
/// accumulators per row (16 columns a step) 8 FMA chains hide the FMA
/// latency while 8 weight loads are in flight.
const GEMV: TileShape = TileShape { rows: 4, tokens: 1, block_bytes: 0 };
/// The several-token tile: 3 rows × 2 tokens, 12 accumulators (two per
/// output), the 4 activation vectors of a step and a row's 2 weight vectors
/// within the 16 ymm registers' reach (LLVM folds some loads into the FMAs).
/// Blocks of rows of 16 KiB stay in L1 while the token groups pass.
const TILE: TileShape = TileShape { rows: 3, tokens: 2, block_bytes: 16 * 1024 };

/// As [`crate::reference::matmul_f32`]: [`dot_tile`] for every token count.
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

/// As [`crate::reference::matmul_f16`]: as [`matmul_f32`], F16C widening 8
/// weights at a time as they are loaded (one token group) or once per block
/// of rows (more).
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

/// The body of [`matmul_f32`] and [`matmul_f16`]: the driver with the tile
/// shape for the token count; `load` widens 8 weights to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn float_matmul<W: FloatWeight>(
    w: &[W],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    load: impl Fn(&[W]) -> __m256 + Copy,
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
        |rn, tn, w, x, out, stripe| tile(rn, tn, w, cols, x, out, out_stride, load, stripe),
        |rn, tn, w, x, out, stripe| tile(rn, tn, w, cols, x, out, out_stride, |s| load8(s), stripe),
        |w, out| widen(w, out, load),
    );
}

/// [`dot_tile`] for the driver's `rn` rows × `tn` tokens, `stripe` rows apart.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)] // the tile's shape and operands
fn tile<W: FloatWeight>(
    rn: usize,
    tn: usize,
    w: &[W],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    out_stride: usize,
    load: impl Fn(&[W]) -> __m256 + Copy,
    stripe: usize,
) {
    let (c, s) = (cols, out_stride);
    match (rn, tn) {
        (4, 1) => dot_tile::<W, 4, 1>(w, c, x, out, s, load, stripe),
        (3, 2) => dot_tile::<W, 3, 2>(w, c, x, out, s, load, stripe),
        (3, 1) => dot_tile::<W, 3, 1>(w, c, x, out, s, load, stripe),
        (1, 2) => dot_tile::<W, 1, 2>(w, c, x, out, s, load, stripe),
        (1, 1) => dot_tile::<W, 1, 1>(w, c, x, out, s, load, stripe),
        _ => unreachable!("AVX2 float tile {rn} x {tn}"),
    }
}

/// Widens `w` to f32 into `out` (same length), 8 at a time with `load`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn widen<W: FloatWeight>(w: &[W], out: &mut [f32], load: impl Fn(&[W]) -> __m256) {
    let (w8, w_tail) = w.as_chunks::<8>();
    let (o8, o_tail) = out.as_chunks_mut::<8>();
    for (o, w) in o8.iter_mut().zip(w8) {
        store8(o, load(w));
    }
    for (o, &v) in o_tail.iter_mut().zip(w_tail) {
        *o = v.into();
    }
}

/// `out[t * out_stride + r * stripe] = dot(w[r * stripe], x[t])` for `R`
/// rows of `w`, `stripe` rows apart, and the `T` tokens of `x` (each `cols`
/// wide). Each output sums
/// alone, the same whatever `R` and `T`: two accumulators (16 columns a step,
/// then one more step of 8 into the first if 8 columns remain), their sum's
/// [`hsum`], plus the last 0-7 products summed in order. Each step prefetches
/// the same columns [`GEMV_PREFETCH_GROUPS`] × `R` rows ahead in its own
/// row's stream (the next tiles' rows when striped), or
/// [`GEMV_PREFETCH_MAX`] bytes ahead if that is nearer (a prefetch is a hint:
/// past the end of `w` it is simply dropped).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_tile<W: FloatWeight, const R: usize, const T: usize>(
    w: &[W],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    out_stride: usize,
    load: impl Fn(&[W]) -> __m256 + Copy,
    stripe: usize,
) {
    let steps = cols / 16;
    // Loops, not `array::from_fn`: its closure is not inlined into
    // `#[target_feature]` code, which costs a call per tile.
    let mut x16: [&[[f32; 16]]; T] = [&[]; T];
    for (t, xt) in x16.iter_mut().enumerate() {
        *xt = &x[t * cols..][..cols].as_chunks::<16>().0[..steps];
    }
    let mut w16: [&[[W; 16]]; R] = [&[]; R];
    for (r, wr) in w16.iter_mut().enumerate() {
        *wr = &w[r * stripe * cols..][..cols].as_chunks::<16>().0[..steps];
    }
    let ahead = (GEMV_PREFETCH_GROUPS * R * cols * size_of::<W>()).min(GEMV_PREFETCH_MAX);
    let mut acc = [[[_mm256_setzero_ps(); 2]; T]; R];
    for c in 0..steps {
        let mut xv = [[_mm256_setzero_ps(); 2]; T];
        for (xv, x16) in xv.iter_mut().zip(&x16) {
            // Unchecked: LLVM does not see that the R + T slices share one
            // length and keeps a compare-and-branch per load otherwise.
            // SAFETY: c < steps, and every `x16[t]` is `[..steps]` above.
            let xc = unsafe { x16.get_unchecked(c) };
            *xv = [load8(xc), load8(&xc[8..])];
        }
        for r in 0..R {
            _mm_prefetch::<_MM_HINT_T1>(w16[r].as_ptr().wrapping_add(c).wrapping_byte_add(ahead).cast());
            // SAFETY: c < steps, and every `w16[r]` is `[..steps]` above.
            let wc = unsafe { w16[r].get_unchecked(c) };
            let wv = [load(wc), load(&wc[8..])];
            for (acc, xv) in acc[r].iter_mut().zip(&xv) {
                acc[0] = _mm256_fmadd_ps(wv[0], xv[0], acc[0]);
                acc[1] = _mm256_fmadd_ps(wv[1], xv[1], acc[1]);
            }
        }
    }
    let mut main = steps * 16;
    if cols - main >= 8 {
        let mut xv = [_mm256_setzero_ps(); T];
        for (t, xv) in xv.iter_mut().enumerate() {
            *xv = load8(&x[t * cols + main..]);
        }
        for r in 0..R {
            let wv = load(&w[r * stripe * cols + main..]);
            for (acc, &xv) in acc[r].iter_mut().zip(&xv) {
                acc[0] = _mm256_fmadd_ps(wv, xv, acc[0]);
            }
        }
        main += 8;
    }
    for t in 0..T {
        let xt = &x[t * cols + main..(t + 1) * cols];
        for r in 0..R {
            let tail: f32 =
                w[r * stripe * cols + main..(r * stripe + 1) * cols].iter().zip(xt).map(|(&a, b)| a.into() * b).sum();
            out[t * out_stride + r * stripe] = hsum(_mm256_add_ps(acc[r][t][0], acc[r][t][1])) + tail;
        }
    }
}
