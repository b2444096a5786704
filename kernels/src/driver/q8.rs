//! The q8 matmul driver for a few tokens (decode's GEMV and the smallest
//! prefill groups): the loops over tiles of [`Q8_TILE_ROWS`] interleaved rows
//! and groups of up to [`Q8_TOKENS`] tokens, and the writes of whole or cut
//! tiles. An ISA supplies the tile: 8 rows × up to 4 tokens over every block.

use std::ops::Range;

use half::f16;

use crate::{Q8Acts, Q8_BLOCK, Q8_TILE_ROWS};

/// Tokens per register tile: each loaded weight block is used for this many
/// activation rows before the next is loaded.
pub(crate) const Q8_TOKENS: usize = 4;

/// One tile's results: `[token][row in tile]`.
pub(crate) type TileSums = [[f32; Q8_TILE_ROWS]; Q8_TOKENS];

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
    /// Tokens, 1 to [`Q8_TOKENS`].
    pub tokens: usize,
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
    tile_kernel: impl Fn(Q8Tile, &mut TileSums),
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

    for tile in rows.start / Q8_TILE_ROWS..end_tile {
        let wq = &quants[tile * tile_quants..][..tile_quants];
        let ws = &scales[tile * tile_scales..][..tile_scales];
        let row0 = tile * Q8_TILE_ROWS;
        // The tile's rows in range (all but for a tile cut by the range).
        let (lo, hi) = (rows.start.max(row0) - row0, rows.end.min(row0 + Q8_TILE_ROWS) - row0);
        let mut t0 = 0;
        while t0 < n {
            let tokens = (n - t0).min(Q8_TOKENS);
            let (xq, xs) = (&xq[t0 * cols..(t0 + tokens) * cols], &xs[t0 * nb..(t0 + tokens) * nb]);
            let mut sums = [[0f32; Q8_TILE_ROWS]; Q8_TOKENS];
            tile_kernel(Q8Tile { wq, ws, xq, xs, nb, tokens }, &mut sums);
            for (t, sums) in sums[..tokens].iter().enumerate() {
                let start = (t0 + t) * out_stride + row0 + lo - rows.start;
                out[start..start + hi - lo].copy_from_slice(&sums[lo..hi]);
            }
            t0 += tokens;
        }
    }
}
