//! NEON matmuls (`y = W x` for `n` activation rows) and the q8 activation
//! quantizer. Decode spends most of its time in the q8 matmul with `n = 1`.

use std::arch::aarch64::*;
use std::ops::Range;

use half::f16;

use super::simd::{dot16_sdot, dot16_widening, hmax, hsum, load16_i8, load4, load8, load8_f16, store16_i8, store4};
use crate::driver::float::{self, FloatWeight, TileShape};
use crate::driver::q8::{self, Q8Tile, TileSums};
use crate::{Q8Acts, Q8_BLOCK, Q8_TILE_ROWS};

/// The f32/f16 dot-form tile for one decode token: 4 rows sharing each
/// load of `x`, two accumulators each.
const FLOAT_GEMV: TileShape = TileShape { rows: 4, tokens: 1, block_bytes: 0 };
/// The dot-form tile for several decode tokens: 4 rows × 2 tokens, each
/// weight load (and widening) serving both tokens, each activation load the 4
/// rows. 16 accumulators (two per output), 4 activation registers and a row's
/// 2 weight registers fit the 32 vector registers. Blocks of 32 KiB of weight
/// rows (widened to f32) stay in L1 while the token groups pass.
const FLOAT_TILE: TileShape = TileShape { rows: 4, tokens: 2, block_bytes: 32 * 1024 };
/// The GEMM-form tile for prefill tokens, any count: 4 rows × 4 tokens with
/// one accumulator per output (both halves of each 8-column step), so each
/// weight load serves 4 tokens; 16 accumulators and 8 activation registers.
const FLOAT_GEMM_TILE: TileShape = TileShape { rows: 4, tokens: 4, block_bytes: 32 * 1024 };

/// As [`crate::reference::matmul_q8`], with SDOT (the dotprod extension).
///
/// Per tile of 8 interleaved rows and per block of 32 columns, each token's 32
/// activation quants are loaded once and dotted with the 8 rows' quants in
/// integers (exact); each loaded weight row serves up to 4 tokens (the loops
/// are [`crate::driver::q8`]'s).
/// The row sums are gathered into two vectors (rows 0-3, 4-7), converted to f32
/// and fused-multiply-added with `weight scale × activation scale` into the
/// token's accumulators. The only difference from the reference is that FMA
/// (one rounding instead of two per block). SDOT is exact for any i8 quants.
///
/// # Safety
/// The CPU must support NEON and the dotprod extension.
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn matmul_q8_sdot(
    quants: &[i8],
    scales: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    q8::matmul(quants, scales, cols, rows, x, n, out, out_stride, |tile, sums| {
        let dot = |acc, w, x| dot16_sdot(acc, w, x);
        match tile.tokens {
            4 => q8_tile::<4>(&tile, sums, dot),
            3 => q8_tile::<3>(&tile, sums, dot),
            2 => q8_tile::<2>(&tile, sums, dot),
            _ => q8_tile::<1>(&tile, sums, dot),
        }
    });
}

/// As [`matmul_q8_sdot`], for CPUs without dotprod: the 16-byte dot products
/// are widening multiplies (`smull`/`smlal2` into i16, `sadalp` into i32).
///
/// Exact for weights in [-127, 127] (docs/FORMAT.md) and any i8 activations
/// (see [`dot16_widening`]).
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
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
    q8::matmul(quants, scales, cols, rows, x, n, out, out_stride, |tile, sums| {
        let dot = |acc, w, x| dot16_widening(acc, w, x);
        match tile.tokens {
            4 => q8_tile::<4>(&tile, sums, dot),
            3 => q8_tile::<3>(&tile, sums, dot),
            2 => q8_tile::<2>(&tile, sums, dot),
            _ => q8_tile::<1>(&tile, sums, dot),
        }
    });
}

/// One tile of 8 rows against `T` tokens: `sums[t][r]` = row `r` · token `t`;
/// `dot` is one of the 16-byte integer dot products ([`dot16_sdot`],
/// [`dot16_widening`]). `acc[t][h]` lane `i` is row `4h + i` for token `t`.
#[inline]
#[target_feature(enable = "neon")]
fn q8_tile<const T: usize>(
    tile: &Q8Tile,
    sums: &mut TileSums,
    dot: impl Fn(int32x4_t, int8x16_t, int8x16_t) -> int32x4_t + Copy,
) {
    let Q8Tile { wq, ws, xq, xs, nb, .. } = *tile;
    let cols = nb * Q8_BLOCK;
    let zero = vdupq_n_s32(0);
    let mut acc = [[vdupq_n_f32(0.0); 2]; T];
    for b in 0..nb {
        let wblock = &wq[b * Q8_BLOCK * Q8_TILE_ROWS..][..Q8_BLOCK * Q8_TILE_ROWS];
        let xv: [[int8x16_t; 2]; T] = std::array::from_fn(|t| {
            let xb = &xq[t * cols + b * Q8_BLOCK..][..Q8_BLOCK];
            [load16_i8(xb), load16_i8(&xb[16..])]
        });
        // Row dot products (4 partial sums each) are folded by `addp` as soon
        // as a pair exists, so few partial vectors per token are live.
        let mut quads = [[zero; 2]; T];
        for (h, wquad) in wblock.chunks_exact(4 * Q8_BLOCK).enumerate() {
            let mut pairs = [[zero; 2]; T];
            for (p, wpair) in wquad.chunks_exact(2 * Q8_BLOCK).enumerate() {
                let mut dots = [[zero; 2]; T];
                for (r, wrow) in wpair.chunks_exact(Q8_BLOCK).enumerate() {
                    let w = [load16_i8(wrow), load16_i8(&wrow[16..])];
                    for t in 0..T {
                        dots[t][r] = dot(dot(zero, w[0], xv[t][0]), w[1], xv[t][1]);
                    }
                }
                // [a0+a1, a2+a3, b0+b1, b2+b3]: two partial sums per row.
                for t in 0..T {
                    pairs[t][p] = vpaddq_s32(dots[t][0], dots[t][1]);
                }
            }
            // One full sum per row: rows 4h..4h + 4 in order.
            for t in 0..T {
                quads[t][h] = vpaddq_s32(pairs[t][0], pairs[t][1]);
            }
        }
        let w_scales = load8_f16(&ws[b * Q8_TILE_ROWS..]);
        for t in 0..T {
            let x_scale = xs[t * nb + b];
            for h in 0..2 {
                // |isum| <= 32 × 128² < 2^24: the conversion is exact.
                let isum = vcvtq_f32_s32(quads[t][h]);
                acc[t][h] = vfmaq_f32(acc[t][h], isum, vmulq_n_f32(w_scales[h], x_scale));
            }
        }
    }
    for (sums, acc) in sums.iter_mut().zip(&acc) {
        store4(sums, acc[0]);
        store4(&mut sums[4..], acc[1]);
    }
}

/// As [`crate::reference::matmul_f32`], in the dot form for decode tokens:
/// [`dot_tile`] with two accumulators per output for every token count (see
/// [`crate::driver::float`]), so one token sums each output exactly as
/// several do.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn matmul_f32(
    w: &[f32],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let shape = if n == 1 { FLOAT_GEMV } else { FLOAT_TILE };
    float_matmul::<_, 2>(w, cols, rows, x, n, out, out_stride, shape, |s| load8(s));
}

/// As [`crate::reference::matmul_f16`]: as [`matmul_f32`], `fcvtl` widening
/// 8 weights at a time as they are loaded (one token group) or once per
/// block of rows (more).
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn matmul_f16(
    w: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let shape = if n == 1 { FLOAT_GEMV } else { FLOAT_TILE };
    float_matmul::<_, 2>(w, cols, rows, x, n, out, out_stride, shape, |s| load8_f16(s));
}

/// As [`matmul_f32`], in the GEMM form for prefill tokens (any count): the
/// same loops with [`FLOAT_GEMM_TILE`], one accumulator per output.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn gemm_f32(
    w: &[f32],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    float_matmul::<_, 1>(w, cols, rows, x, n, out, out_stride, FLOAT_GEMM_TILE, |s| load8(s));
}

/// As [`gemm_f32`], for f16 weights (widened as in [`matmul_f16`]).
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn gemm_f16(
    w: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    float_matmul::<_, 1>(w, cols, rows, x, n, out, out_stride, FLOAT_GEMM_TILE, |s| load8_f16(s));
}

/// The body of the f32/f16 entries: the driver with the tile `shape` and
/// `A` accumulators per output; `load` widens 8 weights to f32.
#[inline]
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)] // the matmul signature plus the tile
fn float_matmul<W: FloatWeight, const A: usize>(
    w: &[W],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    shape: TileShape,
    load: impl Fn(&[W]) -> [float32x4_t; 2] + Copy,
) {
    float::matmul(
        w,
        cols,
        rows,
        x,
        n,
        out,
        out_stride,
        shape,
        |rn, tn, w, x, out, stripe| float_tile::<W, A>(rn, tn, w, cols, x, out, out_stride, load, stripe),
        |rn, tn, w, x, out, stripe| float_tile::<f32, A>(rn, tn, w, cols, x, out, out_stride, |s| load8(s), stripe),
        |w, out| widen(w, out, load),
    );
}

/// [`dot_tile`] for the driver's `rn` rows × `tn` tokens, `stripe` rows apart.
#[inline]
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)] // the tile's shape and operands
fn float_tile<W: FloatWeight, const A: usize>(
    rn: usize,
    tn: usize,
    w: &[W],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    out_stride: usize,
    load: impl Fn(&[W]) -> [float32x4_t; 2] + Copy,
    stripe: usize,
) {
    let (c, s) = (cols, out_stride);
    match (rn, tn) {
        (4, 1) => dot_tile::<W, 4, 1, A>(w, c, x, out, s, load, stripe),
        (4, 2) => dot_tile::<W, 4, 2, A>(w, c, x, out, s, load, stripe),
        (4, 3) if A == 1 => dot_tile::<W, 4, 3, A>(w, c, x, out, s, load, stripe),
        (4, 4) if A == 1 => dot_tile::<W, 4, 4, A>(w, c, x, out, s, load, stripe),
        (1, 1) => dot_tile::<W, 1, 1, A>(w, c, x, out, s, load, stripe),
        (1, 2) => dot_tile::<W, 1, 2, A>(w, c, x, out, s, load, stripe),
        (1, 3) if A == 1 => dot_tile::<W, 1, 3, A>(w, c, x, out, s, load, stripe),
        (1, 4) if A == 1 => dot_tile::<W, 1, 4, A>(w, c, x, out, s, load, stripe),
        _ => unreachable!("NEON float tile {rn} x {tn} with {A} accumulators"),
    }
}

/// Widens `w` to f32 into `out` (same length), 8 at a time with `load`.
#[inline]
#[target_feature(enable = "neon")]
fn widen<W: FloatWeight>(w: &[W], out: &mut [f32], load: impl Fn(&[W]) -> [float32x4_t; 2]) {
    let (w8, w_tail) = w.as_chunks::<8>();
    let (o8, o_tail) = out.as_chunks_mut::<8>();
    for (o, w) in o8.iter_mut().zip(w8) {
        let [lo, hi] = load(w);
        store4(o, lo);
        store4(&mut o[4..], hi);
    }
    for (o, &v) in o_tail.iter_mut().zip(w_tail) {
        *o = v.into();
    }
}

/// `out[t * out_stride + r * stripe] = dot(w[r * stripe], x[t])` for `R`
/// rows of `w`, `stripe` rows apart, and the `T` tokens of `x` (each `cols`
/// wide). Each output sums alone, the same whatever `R` and `T`: `A` accumulators (2: one per half of
/// each 8-column step, the dot form; 1: both halves in turn, the GEMM form),
/// their sum's [`hsum`], plus the last 0-7 products summed in order.
#[inline]
#[target_feature(enable = "neon")]
fn dot_tile<W: FloatWeight, const R: usize, const T: usize, const A: usize>(
    w: &[W],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    out_stride: usize,
    load: impl Fn(&[W]) -> [float32x4_t; 2] + Copy,
    stripe: usize,
) {
    let (steps, main) = (cols / 8, cols / 8 * 8);
    let wr: [&[W]; R] = std::array::from_fn(|r| &w[r * stripe * cols..][..cols]);
    let xt: [&[f32]; T] = std::array::from_fn(|t| &x[t * cols..][..cols]);
    // Groups of 8 columns, every slice cut to exactly `steps` groups.
    let w8: [&[[W; 8]]; R] = std::array::from_fn(|r| &wr[r].as_chunks::<8>().0[..steps]);
    let x8: [&[[f32; 8]]; T] = std::array::from_fn(|t| &xt[t].as_chunks::<8>().0[..steps]);
    let mut acc = [[[vdupq_n_f32(0.0); 2]; T]; R];
    for c in 0..steps {
        // Unchecked: LLVM does not see that the R + T slices share one length
        // and would keep a compare-and-branch per load in this loop.
        // SAFETY: c < steps, and every `x8[t]` is `[..steps]` above.
        let xv: [[float32x4_t; 2]; T] = std::array::from_fn(|t| load8(unsafe { x8[t].get_unchecked(c) }));
        for r in 0..R {
            // SAFETY: c < steps, and every `w8[r]` is `[..steps]` above.
            let wv = load(unsafe { w8[r].get_unchecked(c) });
            for (acc, xv) in acc[r].iter_mut().zip(&xv) {
                if A == 1 {
                    acc[0] = vfmaq_f32(vfmaq_f32(acc[0], wv[0], xv[0]), wv[1], xv[1]);
                } else {
                    acc[0] = vfmaq_f32(acc[0], wv[0], xv[0]);
                    acc[1] = vfmaq_f32(acc[1], wv[1], xv[1]);
                }
            }
        }
    }
    for t in 0..T {
        for r in 0..R {
            let tail: f32 = wr[r][main..].iter().zip(&xt[t][main..]).map(|(&a, b)| a.into() * b).sum();
            let [a0, a1] = acc[r][t];
            let sum = if A == 1 { a0 } else { vaddq_f32(a0, a1) };
            out[t * out_stride + r * stripe] = hsum(sum) + tail;
        }
    }
}

/// As [`crate::reference::quantize_q8_acts`], bit for bit: the same
/// `max|x| / 127` scale and the same rounding. `fcvtas` rounds half away from
/// zero as `f32::round` does and, like Rust's `as`, saturates and sends NaN to
/// 0; the saturating narrows (`sqxtn`) then clamp to [-128, 127] as `as i8` does.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn quantize_q8_acts(x: &[f32], quants: &mut [i8], scales: &mut [f32]) {
    for ((xb, qb), s) in x.chunks_exact(Q8_BLOCK).zip(quants.chunks_exact_mut(Q8_BLOCK)).zip(scales.iter_mut()) {
        let v: [float32x4_t; 8] = std::array::from_fn(|i| load4(&xb[i * 4..]));
        // `fmaxnm` returns the number when the other operand is a quiet NaN, so
        // NaNs are skipped, as `f32::max` skips them in the reference.
        let mut m = vdupq_n_f32(0.0);
        for &vi in &v {
            m = vmaxnmq_f32(m, vabsq_f32(vi));
        }
        let scale = hmax(m) / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        let q = v.map(|vi| vcvtaq_s32_f32(vmulq_n_f32(vi, inv)));
        let h: [int16x8_t; 4] = std::array::from_fn(|i| vcombine_s16(vqmovn_s32(q[2 * i]), vqmovn_s32(q[2 * i + 1])));
        store16_i8(qb, vcombine_s8(vqmovn_s16(h[0]), vqmovn_s16(h[1])));
        store16_i8(&mut qb[16..], vcombine_s8(vqmovn_s16(h[2]), vqmovn_s16(h[3])));
        *s = scale;
    }
}
