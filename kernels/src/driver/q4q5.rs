//! The Q4_0/Q4_1/Q5_0/Q5_1 matmul driver: the entry checks, and one tile's
//! planes and one token group's activations sliced for an ISA's register tile
//! (the loops are [`super::tiles`]'s, shared with q8).

use std::ops::Range;

use half::f16;

use super::tiles::{for_each_tile, TileSums, TILE_ROWS};
use crate::q4q5::{Q4Q5Weight, Q8SumActs, Q4Q5_BLOCK, TILE_BLOCK_FIFTH_BYTES, TILE_BLOCK_NIBBLE_BYTES};

/// One tile's inputs, as [`matmul`] hands them to an ISA's tile kernel.
pub(crate) struct Q4Q5Tile<'a> {
    /// `[block][row in tile][16]`.
    pub nibbles: &'a [u8],
    /// `[block][32 bytes]` (`gpt_fast_quant::q4q5::fifth_bit_at`); empty for Q4_0/Q4_1.
    pub high_bits: &'a [u8],
    /// `[block][row in tile]`.
    pub scales: &'a [f16],
    /// `[block][row in tile]`; empty for Q4_0/Q5_0.
    pub mins: &'a [f16],
    /// `tokens` activation rows of `32 nb` quants each.
    pub xq: &'a [i8],
    /// `tokens` rows of `nb` scales each.
    pub xs: &'a [f32],
    /// `tokens` rows of `nb` block sums each.
    pub sums: &'a [f32],
    /// Blocks of 32 columns.
    pub nb: usize,
}

/// As [`crate::reference::matmul_q4q5`], with `tile_kernel(tile, sums)`
/// setting `sums[t][r]` to the tile's row `r` times the group's token `t`.
#[inline(always)]
pub(crate) fn matmul(
    w: &Q4Q5Weight,
    cols: usize,
    rows: Range<usize>,
    x: &Q8SumActs,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    tile_kernel: impl Fn(Q4Q5Tile, usize, &mut TileSums),
) {
    if !super::matmul_out_checked(&rows, n, out, out_stride) {
        return;
    }
    let name = w.kind.name();
    assert!(cols.is_multiple_of(Q4Q5_BLOCK), "matmul {name}: cols {cols} is not a multiple of {Q4Q5_BLOCK}");
    assert!(cols == w.layout.cols && rows.end <= w.layout.rows, "matmul {name}: shape");
    let nb = cols / Q4Q5_BLOCK;
    let group = nb * TILE_ROWS;
    let end_tile = rows.end.div_ceil(TILE_ROWS);
    // One slice each, checked here; the loops below only index inside them.
    let fifth_group = nb * TILE_BLOCK_FIFTH_BYTES;
    let plane = |len: usize, group: usize| if len == 0 { 0 } else { end_tile * group };
    let nibbles = &w.nibbles[..end_tile * nb * TILE_BLOCK_NIBBLE_BYTES];
    let high_bits = &w.high_bits[..plane(w.high_bits.len(), fifth_group)];
    let scales = &w.scales[..end_tile * group];
    let mins = &w.mins[..plane(w.mins.len(), group)];
    let (xq, xs, sums) = (&x.quants[..n * cols], &x.scales[..n * nb], &x.sums[..n * nb]);
    for_each_tile(rows, n, out, out_stride, |tile, t0, tokens, out| {
        let t = Q4Q5Tile {
            nibbles: &nibbles[tile * nb * TILE_BLOCK_NIBBLE_BYTES..][..nb * TILE_BLOCK_NIBBLE_BYTES],
            high_bits: tile_of(high_bits, tile, fifth_group),
            scales: &scales[tile * group..][..group],
            mins: tile_of(mins, tile, group),
            xq: &xq[t0 * cols..(t0 + tokens) * cols],
            xs: &xs[t0 * nb..(t0 + tokens) * nb],
            sums: &sums[t0 * nb..(t0 + tokens) * nb],
            nb,
        };
        tile_kernel(t, tokens, out);
    });
}

/// Tile `tile`'s `len` elements of an optional plane (empty stays empty).
#[inline(always)]
fn tile_of<T>(plane: &[T], tile: usize, len: usize) -> &[T] {
    if plane.is_empty() {
        plane
    } else {
        &plane[tile * len..][..len]
    }
}
