//! The q8 matmul driver for a few tokens (decode's GEMV and the smallest
//! prefill groups): the loops over tiles of [`Q8_TILE_ROWS`] interleaved rows
//! and groups of up to [`super::tiles::TILE_TOKENS`] tokens, and the writes of whole or cut
//! tiles. An ISA supplies the tile: 8 rows × up to 4 tokens over every block.

use std::ops::Range;

use half::f16;

use crate::{Q8Acts, Q8_BLOCK, Q8_TILE_ROWS};

pub(crate) use super::tiles::TileSums;

/// One tile's inputs, as [`matmul`] hands them to an ISA's tile kernel.
pub(crate) struct Q8Tile<'a> {
    /// The tile's quants, `[block][row in tile][32]`.
    pub wq: &'a [i8],
    /// The tile's scales, `[block][row in tile]`.
    pub ws: &'a [f16],
    /// `tokens` activation rows of `32 nb` quants each.
    pub xq: &'a [i8],
    /// `tokens` rows of `nb` scales each.
    pub xs: &'a [f32],
    /// Blocks of 32 columns.
    pub nb: usize,
    /// Tokens, 1 to [`super::tiles::TILE_TOKENS`].
    pub tokens: usize,
    /// Whether this is the tile's first token group: a kernel that repacks a
    /// tile's weights for its register tile does it then, once for all groups.
    pub first: bool,
}

/// As [`crate::reference::matmul_q8`], with `tile_kernel(tile, sums)` setting
/// `sums[t][r]` to the dot product of the tile's row `r` with token `t`
/// (`t < tile.tokens`). Tiles outer, tokens inner: a tile's weights (nb × 256
/// bytes) come from memory once and stay in L1 while every token group passes
/// over them.
#[inline(always)]
pub(crate) fn matmul(
    quants: &[i8],
    scales: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    mut tile_kernel: impl FnMut(Q8Tile, &mut TileSums),
) {
    if !super::matmul_out_checked(&rows, n, out, out_stride) {
        return;
    }
    assert!(cols.is_multiple_of(Q8_BLOCK), "matmul_q8: cols {cols} is not a multiple of {Q8_BLOCK}");
    let nb = cols / Q8_BLOCK;
    let (tile_quants, tile_scales) = (nb * Q8_BLOCK * Q8_TILE_ROWS, nb * Q8_TILE_ROWS);
    let end_tile = rows.end.div_ceil(Q8_TILE_ROWS);
    // One slice each, checked here; the loops below only index inside them.
    let (quants, scales) = (&quants[..end_tile * tile_quants], &scales[..end_tile * tile_scales]);
    let (xq, xs) = (&x.quants[..n * cols], &x.scales[..n * nb]);

    super::tiles::for_each_tile(rows, n, out, out_stride, |tile, t0, tokens, sums| {
        let wq = &quants[tile * tile_quants..][..tile_quants];
        let ws = &scales[tile * tile_scales..][..tile_scales];
        let (xq, xs) = (&xq[t0 * cols..(t0 + tokens) * cols], &xs[t0 * nb..(t0 + tokens) * nb]);
        tile_kernel(Q8Tile { wq, ws, xq, xs, nb, tokens, first: t0 == 0 }, sums);
    });
}
