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
        let mut t0 = 0;
        while t0 < n {
            let tokens = (n - t0).min(TILE_TOKENS);
            let mut sums = [[0f32; TILE_ROWS]; TILE_TOKENS];
            tile_kernel(tile, t0, tokens, &mut sums);
            for (t, sums) in sums[..tokens].iter().enumerate() {
                write_tile(&rows, tile, sums, &mut out[(t0 + t) * out_stride..]);
            }
            t0 += tokens;
        }
    }
}

/// Stripes one token reads at once in [`for_each_stripe_group`].
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // AVX2 only so far
pub(crate) const STRIPES: usize = 2;

/// [`for_each_tile`] for one token, reading the tiles as [`STRIPES`]
/// sequential streams: the range's tiles are cut into that many stripes and
/// `group_kernel(tiles, sums)` computes one tile of each at once (`sums[k]`
/// for `tiles[k]`), the tiles left over one at a time by `tile_kernel(tile,
/// sums)`. One stream of tiles, even prefetched, kept fewer misses in flight
/// than the memory needs on an AVX2 Zen 3 (as the float GEMV's adjacent rows
/// did: `super::float`).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // AVX2 only so far
#[inline(always)]
pub(crate) fn for_each_stripe_group(
    rows: Range<usize>,
    out: &mut [f32],
    mut group_kernel: impl FnMut([usize; STRIPES], &mut [[f32; TILE_ROWS]; STRIPES]),
    mut tile_kernel: impl FnMut(usize, &mut [f32; TILE_ROWS]),
) {
    let (first, end) = (rows.start / TILE_ROWS, rows.end.div_ceil(TILE_ROWS));
    let stripe = (end - first) / STRIPES;
    for i in 0..stripe {
        let tiles: [usize; STRIPES] = std::array::from_fn(|k| first + k * stripe + i);
        let mut sums = [[0f32; TILE_ROWS]; STRIPES];
        group_kernel(tiles, &mut sums);
        for (&tile, sums) in tiles.iter().zip(&sums) {
            write_tile(&rows, tile, sums, out);
        }
    }
    for tile in first + STRIPES * stripe..end {
        let mut sums = [0f32; TILE_ROWS];
        tile_kernel(tile, &mut sums);
        write_tile(&rows, tile, &sums, out);
    }
}

/// Writes the rows of `tile` that lie in `rows` (all but for a tile cut by
/// the range) from `sums` to one token's outputs `out[r - rows.start]`.
#[inline(always)]
pub(crate) fn write_tile(rows: &Range<usize>, tile: usize, sums: &[f32; TILE_ROWS], out: &mut [f32]) {
    let row0 = tile * TILE_ROWS;
    let (lo, hi) = (rows.start.max(row0) - row0, rows.end.min(row0 + TILE_ROWS) - row0);
    let start = row0 + lo - rows.start;
    if hi - lo == TILE_ROWS {
        // A whole tile: a fixed-size copy, not a call to memcpy.
        let to: &mut [f32; TILE_ROWS] = (&mut out[start..start + TILE_ROWS]).try_into().expect("a tile's rows");
        *to = *sums;
    } else {
        out[start..start + hi - lo].copy_from_slice(&sums[lo..hi]);
    }
}
