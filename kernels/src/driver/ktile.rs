//! The K-quant matmul driver (Q4_K, Q5_K, Q6_K packed in tiles of
//! [`TILE_ROWS`] rows, `gpt_fast_quant::kquant`): the loops over tiles and
//! groups of up to [`super::tiles::TILE_TOKENS`] tokens, and the writes of whole or cut tiles,
//! in [`super::tiles`] as for q8. An ISA supplies the tile: 8 rows × up to 4
//! tokens over every super-block.

use std::ops::Range;

use gpt_fast_quant::kquant::TILE_ROWS;

use super::tiles::TileSums;
use crate::{Q8Acts, Q8_BLOCK};

/// Values per super-block.
pub(crate) const SUPERBLOCK: usize = 256;

/// One tile's inputs, as [`matmul`] hands them to an ISA's tile kernel.
pub(crate) struct KTile<'a> {
    /// The tile's records, `[super-block][record_bytes]`.
    pub w: &'a [u8],
    /// `tokens` activation rows of `256 superblocks` quants each.
    pub xq: &'a [i8],
    /// `tokens` rows of `8 superblocks` block scales each.
    pub xs: &'a [f32],
    /// `tokens` rows of `8 superblocks` block `scale × Σ quants`.
    pub xsums: &'a [f32],
    pub superblocks: usize,
    /// Tokens, 1 to [`super::tiles::TILE_TOKENS`].
    pub tokens: usize,
}

/// As [`crate::reference::matmul_q4_k`] for the format whose tile record of
/// one super-block is `record_bytes` long, with `tile_kernel(tile, sums)`
/// setting `sums[t][r]` to the dot product of the tile's row `r` with token
/// `t` (`t < tile.tokens`). Tiles outer, tokens inner: a tile's weights come
/// from memory once and stay in L1 while every token group passes over them.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the matmul signature plus the activation sums and the tile
pub(crate) fn matmul(
    w: &[u8],
    record_bytes: usize,
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    x_sums: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    tile_kernel: impl Fn(KTile, &mut TileSums),
) {
    if !super::matmul_out_checked(&rows, n, out, out_stride) {
        return;
    }
    assert!(cols.is_multiple_of(SUPERBLOCK), "K-quant matmul: cols {cols} is not a multiple of {SUPERBLOCK}");
    let (superblocks, nb) = (cols / SUPERBLOCK, cols / Q8_BLOCK);
    let tile_bytes = superblocks * record_bytes;
    let end_tile = rows.end.div_ceil(TILE_ROWS);
    // One slice each, checked here; the loops below only index inside them.
    let w = &w[..end_tile * tile_bytes];
    let (xq, xs, xsums) = (&x.quants[..n * cols], &x.scales[..n * nb], &x_sums[..n * nb]);

    super::tiles::for_each_tile(rows, n, out, out_stride, |tile, t0, tokens, sums| {
        let (a, b) = (t0 * nb, (t0 + tokens) * nb);
        let tile = KTile {
            w: &w[tile * tile_bytes..][..tile_bytes],
            xq: &xq[t0 * cols..(t0 + tokens) * cols],
            xs: &xs[a..b],
            xsums: &xsums[a..b],
            superblocks,
            tokens,
        };
        tile_kernel(tile, sums);
    });
}
