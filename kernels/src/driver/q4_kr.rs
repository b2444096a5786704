//! The q4_kr matmul driver (gpt-fast's own 4-bit rows, `gpt_fast_quant::q4_kr`):
//! the loops over tiles and token groups of [`super::tiles`], one tile's
//! slices handed to an ISA's register tile.

use std::ops::Range;

use gpt_fast_quant::q4_kr::Q4KrLayout;

use super::tiles::TileSums;
use crate::{Q8Acts, Q8_BLOCK};

/// One tile's inputs, as [`matmul`] hands them to an ISA's tile kernel.
pub(crate) struct KrTile<'a> {
    /// The tile's bytes (`layout.tile_bytes()`).
    pub w: &'a [u8],
    /// `tokens` activation rows of `layout.cols` quants each.
    pub xq: &'a [i8],
    /// `tokens` rows of `layout.cols / 32` block scales each.
    pub xs: &'a [f32],
    /// `tokens` rows of `layout.cols / 32` block `scale × Σ quants` each.
    pub xsums: &'a [f32],
    pub layout: &'a Q4KrLayout,
    /// Tokens, 1 to [`super::tiles::TILE_TOKENS`].
    pub tokens: usize,
}

/// As [`crate::reference::matmul_q4_kr`], with `tile_kernel(tile, sums)`
/// setting `sums[t][r]` to the dot product of the tile's row `r` with token
/// `t` (`t < tile.tokens`).
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the matmul signature plus the activation sums and the tile
pub(crate) fn matmul(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    x_sums: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    tile_kernel: impl Fn(KrTile, &mut TileSums),
) {
    if !super::matmul_out_checked(&rows, n, out, out_stride) {
        return;
    }
    let layout = Q4KrLayout::new(rows.end, cols).expect("q4_kr matmul: cols must be a multiple of 32");
    let (tile_bytes, nb) = (layout.tile_bytes(), cols / Q8_BLOCK);
    // One slice each, checked here; the loops below only index inside them.
    let w = &w[..layout.tiles * tile_bytes];
    let (xq, xs, xsums) = (&x.quants[..n * cols], &x.scales[..n * nb], &x_sums[..n * nb]);
    super::tiles::for_each_tile(rows, n, out, out_stride, |tile, t0, tokens, sums| {
        let (a, b) = (t0 * nb, (t0 + tokens) * nb);
        let tile = KrTile {
            w: &w[tile * tile_bytes..][..tile_bytes],
            xq: &xq[t0 * cols..(t0 + tokens) * cols],
            xs: &xs[a..b],
            xsums: &xsums[a..b],
            layout: &layout,
            tokens,
        };
        tile_kernel(tile, sums);
    });
}
