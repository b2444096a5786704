//! The loops of the block-quantized matmuls for a few tokens (decode's GEMV
//! and the smaller prefill groups), whatever the weight's block type: tiles of
//! [`TILE_ROWS`] interleaved rows, groups of up to [`TILE_TOKENS`] tokens, and
//! the writes of whole or cut tiles. A type's driver slices one tile and one
//! token group for its ISA's register tile.

use std::ops::Range;

/// Rows interleaved in one tile: q8's, and q4q5's and the K-quants' (the
/// same, checked below).
pub(crate) const TILE_ROWS: usize = crate::Q8_TILE_ROWS;
const _: () = assert!(crate::q4q5::Q4Q5_TILE_ROWS == TILE_ROWS && gpt_fast_quant::kquant::TILE_ROWS == TILE_ROWS);

/// Tokens per register tile: each loaded weight block is used for this many
/// activation rows before the next is loaded.
pub(crate) const TILE_TOKENS: usize = 4;

/// One tile's results: `[token][row in tile]`.
pub(crate) type TileSums = [[f32; TILE_ROWS]; TILE_TOKENS];

/// `out[t * out_stride + (r - rows.start)]` for `r` in `rows`, `t < n`, with
/// `tile_kernel(tile, t0, tokens, sums)` setting `sums[t][r]` to the result of
/// the tile's row `r` for token `t0 + t` (`t < tokens`). Tiles outer, tokens
/// inner: a tile's weights come from memory once and stay in L1 while every
/// token group passes over them. The caller has checked the shapes
/// ([`super::matmul_out_checked`]).
#[inline(always)]
pub(crate) fn for_each_tile(
    rows: Range<usize>,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    mut tile_kernel: impl FnMut(usize, usize, usize, &mut TileSums),
) {
    for tile in rows.start / TILE_ROWS..rows.end.div_ceil(TILE_ROWS) {
        let row0 = tile * TILE_ROWS;
        // The tile's rows in range (all but for a tile cut by the range).
        let (lo, hi) = (rows.start.max(row0) - row0, rows.end.min(row0 + TILE_ROWS) - row0);
        let mut t0 = 0;
        while t0 < n {
            let tokens = (n - t0).min(TILE_TOKENS);
            let mut sums = [[0f32; TILE_ROWS]; TILE_TOKENS];
            tile_kernel(tile, t0, tokens, &mut sums);
            for (t, sums) in sums[..tokens].iter().enumerate() {
                let start = (t0 + t) * out_stride + row0 + lo - rows.start;
                out[start..start + hi - lo].copy_from_slice(&sums[lo..hi]);
            }
            t0 += tokens;
        }
    }
}
