//! The dot form of the f32/f16 matmuls, for decode tokens whatever their
//! count (one token's GEMV, a server's batched decode), on every ISA (AVX2,
//! AVX-512, NEON; NEON's GEMM form is these loops too, with its own tile):
//! the entry checks and the loops that cut a matmul into register tiles of
//! `R` rows × `T` tokens. Prefill tokens take the GEMM form
//! ([`super::float_gemm`]), which is faster over many tokens and sums in
//! another order: a token's form is its role's, never the batch's.
//!
//! Every output is one dot product summed the GEMV's way whatever the call:
//! the ISA's tile kernel gives each (row, token) pair its own vector
//! accumulators over the columns and one horizontal sum at the end (the
//! dot-product form of ggml's `vec_dot`); a tile only shares the loads of a
//! row's weights between its tokens and of a token's activations between its
//! rows. So a token gets the same bits alone (decode, `T = 1`) as beside other
//! tokens (a server's batched decode, prefill), whatever the row range, the
//! token group or the thread split. The outer-product GEMM this replaced
//! (tokens along the vector lanes, one FMA chain per output in column order)
//! could not give one token its order without transposing every weight in
//! registers, which cost decode 44% (branch `batch`, 63bd48a).

use std::cell::Cell;
use std::ops::Range;

use half::f16;

/// A weight type the float matmuls read: f32, or f16 widened exactly to f32.
pub(crate) trait FloatWeight: Copy + Into<f32> + bytemuck::Pod {
    /// The weights as f32 when they already are: the tiles then read them in
    /// place instead of from a widened copy.
    fn as_f32(w: &[Self]) -> Option<&[f32]>;
}

impl FloatWeight for f32 {
    fn as_f32(w: &[f32]) -> Option<&[f32]> {
        Some(w)
    }
}

impl FloatWeight for f16 {
    fn as_f32(_: &[f16]) -> Option<&[f32]> {
        None
    }
}

thread_local! {
    /// A block of f16 weight rows widened to f32 (see [`matmul`]), one per
    /// thread, grown to the largest block seen: only a thread's first
    /// prefill of a shape allocates; decode never touches it.
    static WIDENED: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// An ISA's register tile for one call: `rows` weight rows × `tokens`
/// tokens, and the bytes of f32 weights per block of rows (see [`matmul`]).
pub(crate) struct TileShape {
    pub rows: usize,
    pub tokens: usize,
    pub block_bytes: usize,
}

/// `out[t * out_stride + (r - rows.start)] = dot(w[r], x[t])` for the rows in
/// `rows` of the row-major `w` (`cols` wide) and the `n` tokens of `x`, as
/// [`crate::reference::matmul_f32`]; zero columns give zeros.
///
/// `tile(rn, tn, w, x, out, stripe)` computes one register tile: `out[t *
/// out_stride + r * stripe] = dot(w[r * stripe], x[t])` for `rn` rows of `w`,
/// `stripe` rows apart, and the `tn` tokens of `x`, with `rn` either
/// `shape.rows` or 1 and `tn <= shape.tokens`;
/// `tile_f32` the same from f32 weights, and `widen(w, out)` widens weights to
/// f32 (exactly, as `Into<f32>`).
///
/// One token group (decode: `n <= shape.tokens`) reads every weight once,
/// so the call only has to keep up with memory: the rows are cut into
/// `shape.rows` stripes and a tile takes one row of each, so that it reads
/// `shape.rows` long sequential streams (see [`striped_tiles`]).
///
/// Otherwise, loops, outermost first: blocks of about `shape.block_bytes` of
/// f32 weight rows (kept in cache while every token group passes over them),
/// token groups of `shape.tokens`, row tiles of `shape.rows` adjacent rows,
/// the block's last rows one at a time. With several token
/// groups, f16 blocks are widened once into per-thread scratch and the tiles
/// read that, instead of widening each weight once per group. None of this
/// changes a result: each output is computed by itself, from the same f32
/// values.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the matmul signature plus the tile shape and kernels
pub(crate) fn matmul<W: FloatWeight>(
    w: &[W],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    shape: TileShape,
    tile: impl Fn(usize, usize, &[W], &[f32], &mut [f32], usize),
    tile_f32: impl Fn(usize, usize, &[f32], &[f32], &mut [f32], usize),
    widen: impl Fn(&[W], &mut [f32]),
) {
    if !checked(cols, &rows, n, out, out_stride) {
        return;
    }
    let n_rows = rows.len();
    let w = &w[rows.start * cols..rows.end * cols];
    let x = &x[..n * cols];
    if n <= shape.tokens {
        striped_tiles(w, cols, n_rows, x, n, out, shape.rows, &tile);
        return;
    }
    let block_rows = (shape.block_bytes / (cols * size_of::<f32>()) / shape.rows).max(1) * shape.rows;
    let mut widened = match W::as_f32(w) {
        Some(_) => Vec::new(),
        None => WIDENED.take(),
    };
    for r_block in (0..n_rows).step_by(block_rows) {
        let block = r_block..n_rows.min(r_block + block_rows);
        let out = &mut out[block.start..];
        match W::as_f32(w) {
            Some(w) => tiles(w, cols, block, x, n, out, out_stride, &shape, &tile_f32),
            None => {
                let len = block.len() * cols;
                widened.resize(widened.len().max(len), 0.0);
                widen(&w[block.start * cols..block.end * cols], &mut widened[..len]);
                let rows = 0..block.len();
                tiles(&widened[..len], cols, rows, x, n, out, out_stride, &shape, &tile_f32);
            }
        }
    }
    if W::as_f32(w).is_none() {
        WIDENED.set(widened);
    }
}

/// The entry checks of both forms ([`super::matmul_out_checked`]); zero
/// columns give zeros. `true` when there is something left to compute.
#[inline(always)]
pub(crate) fn checked(cols: usize, rows: &Range<usize>, n: usize, out: &mut [f32], out_stride: usize) -> bool {
    if !super::matmul_out_checked(rows, n, out, out_stride) {
        return false;
    }
    if cols == 0 {
        for t in 0..n {
            out[t * out_stride..][..rows.len()].fill(0.0);
        }
        return false;
    }
    true
}

/// One token group's tiles over the `n_rows` rows of `w`: tile `i` takes
/// rows `i, i + s, …, i + (tile_rows - 1) s` with `s = n_rows / tile_rows`,
/// the last `n_rows % tile_rows` rows go one at a time. Each of a tile's rows
/// then continues where the previous tile's left off: the tiles read
/// `tile_rows` sequential streams through the matrix, which the hardware
/// prefetchers follow across rows. Tiles of adjacent rows read `tile_rows`
/// streams that each jump a row ahead every few cache lines on short rows:
/// SmolLM2's f16 decode (576 columns, 1152-byte rows) ran at 13 GB/s that
/// way and at 20-22 GB/s striped on an AVX2 Zen 3 (1 thread, 1 GiB read loop
/// 18.5 GB/s); on TinyLlama's 2048-8192-byte rows both read alike.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn striped_tiles<V>(
    w: &[V],
    cols: usize,
    n_rows: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    tile_rows: usize,
    tile: &impl Fn(usize, usize, &[V], &[f32], &mut [f32], usize),
) {
    let stripe = n_rows / tile_rows;
    let span = ((tile_rows - 1) * stripe + 1) * cols;
    for i in 0..stripe {
        tile(tile_rows, n, &w[i * cols..][..span], x, &mut out[i..], stripe);
    }
    for r in tile_rows * stripe..n_rows {
        tile(1, n, &w[r * cols..(r + 1) * cols], x, &mut out[r..], 1);
    }
}

/// The token groups and row tiles of [`matmul`] over the rows `rows` of `w`,
/// writing `out[t * out_stride + (r - rows.start)]`.
#[inline(always)]
fn tiles<V>(
    w: &[V],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    shape: &TileShape,
    tile: &impl Fn(usize, usize, &[V], &[f32], &mut [f32], usize),
) {
    let &TileShape { rows: tile_rows, tokens: tile_tokens, .. } = shape;
    for t0 in (0..n).step_by(tile_tokens) {
        let tn = (n - t0).min(tile_tokens);
        let xg = &x[t0 * cols..(t0 + tn) * cols];
        let mut r0 = rows.start;
        while r0 < rows.end {
            let rn = if rows.end - r0 >= tile_rows { tile_rows } else { 1 };
            let o = r0 - rows.start;
            tile(rn, tn, &w[r0 * cols..(r0 + rn) * cols], xg, &mut out[t0 * out_stride + o..], 1);
            r0 += rn;
        }
    }
}
