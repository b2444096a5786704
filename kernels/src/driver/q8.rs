//! The q8 matmul driver for a few tokens (decode's GEMV and the smallest
//! prefill groups): the loops over tiles of [`Q8_TILE_ROWS`] interleaved rows
//! and groups of up to [`super::tiles::TILE_TOKENS`] tokens, and the writes of whole or cut
//! tiles. An ISA supplies the tile: 8 rows × up to 4 tokens over every block
//! ([`matmul`]), or two adjacent tiles at once ([`matmul_pairs`], the AVX2
//! GEMM's), or for one token a tile of each of two stripes of the matrix
//! ([`matmul_one_token`], the AVX2 GEMV's).

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
}

/// What [`matmul`] and [`matmul_pairs`] check and slice before their loops.
struct Inputs<'a> {
    nb: usize,
    tile_quants: usize,
    tile_scales: usize,
    end_tile: usize,
    quants: &'a [i8],
    scales: &'a [f16],
    xq: &'a [i8],
    xs: &'a [f32],
}

impl<'a> Inputs<'a> {
    /// `None`: nothing to compute.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn checked(
        quants: &'a [i8],
        scales: &'a [f16],
        cols: usize,
        rows: &Range<usize>,
        x: &'a Q8Acts,
        n: usize,
        out: &[f32],
        out_stride: usize,
    ) -> Option<Self> {
        if !super::matmul_out_checked(rows, n, out, out_stride) {
            return None;
        }
        assert!(cols.is_multiple_of(Q8_BLOCK), "matmul_q8: cols {cols} is not a multiple of {Q8_BLOCK}");
        let nb = cols / Q8_BLOCK;
        let (tile_quants, tile_scales) = (nb * Q8_BLOCK * Q8_TILE_ROWS, nb * Q8_TILE_ROWS);
        let end_tile = rows.end.div_ceil(Q8_TILE_ROWS);
        // One slice each, checked here; the loops only index inside them.
        Some(Self {
            nb,
            tile_quants,
            tile_scales,
            end_tile,
            quants: &quants[..end_tile * tile_quants],
            scales: &scales[..end_tile * tile_scales],
            xq: &x.quants[..n * cols],
            xs: &x.scales[..n * nb],
        })
    }
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
    let Some(Inputs { nb, tile_quants, tile_scales, end_tile: _, quants, scales, xq, xs }) =
        Inputs::checked(quants, scales, cols, &rows, x, n, out, out_stride)
    else {
        return;
    };

    super::tiles::for_each_tile(rows, n, out, out_stride, |tile, t0, tokens, sums| {
        let wq = &quants[tile * tile_quants..][..tile_quants];
        let ws = &scales[tile * tile_scales..][..tile_scales];
        let (xq, xs) = (&xq[t0 * cols..(t0 + tokens) * cols], &xs[t0 * nb..(t0 + tokens) * nb]);
        tile_kernel(Q8Tile { wq, ws, xq, xs, nb, tokens }, sums);
    });
}

/// [`matmul`] for one token, reading the tiles as
/// [`super::tiles::STRIPES`] sequential streams
/// ([`super::tiles::for_each_stripe_group`]): `group_kernel(tiles, sums)`
/// sets `sums[k][r]` to the dot product of row `r` of `tiles[k]` with the
/// token, `tile_kernel` one tile's alone (`tokens` is 1 in both). An ISA's
/// group kernel sums each tile as its one-tile kernel does, so the bits are
/// [`matmul`]'s.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // AVX2 only so far
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_one_token(
    quants: &[i8],
    scales: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    out: &mut [f32],
    out_stride: usize,
    mut group_kernel: impl FnMut([Q8Tile; super::tiles::STRIPES], &mut [[f32; Q8_TILE_ROWS]; super::tiles::STRIPES]),
    mut tile_kernel: impl FnMut(Q8Tile, &mut [f32; Q8_TILE_ROWS]),
) {
    let Some(Inputs { nb, tile_quants, tile_scales, end_tile: _, quants, scales, xq, xs }) =
        Inputs::checked(quants, scales, cols, &rows, x, 1, out, out_stride)
    else {
        return;
    };
    let tile = |t: usize| Q8Tile {
        wq: &quants[t * tile_quants..][..tile_quants],
        ws: &scales[t * tile_scales..][..tile_scales],
        xq,
        xs,
        nb,
        tokens: 1,
    };
    super::tiles::for_each_stripe_group(
        rows,
        out,
        |tiles, sums| group_kernel(tiles.map(tile), sums),
        |t, sums| tile_kernel(tile(t), sums),
    );
}

/// Tiles a register tile may span: [`matmul_pairs`] hands out two adjacent
/// tiles at once (16 rows), so that each token's broadcast activations serve
/// twice as many rows.
pub(crate) const PAIR: usize = 2;

/// One or two adjacent tiles' inputs, as [`matmul_pairs`] hands them out.
pub(crate) struct Q8Tiles<'a> {
    /// The tiles' quants, `[tile][block][row in tile][32]`.
    pub wq: &'a [i8],
    /// The tiles' scales, `[tile][block][row in tile]`.
    pub ws: &'a [f16],
    /// `tokens` activation rows of `32 nb` quants each.
    pub xq: &'a [i8],
    /// `tokens` rows of `nb` scales each.
    pub xs: &'a [f32],
    /// Blocks of 32 columns.
    pub nb: usize,
    /// Tiles: 1 or [`PAIR`].
    pub tiles: usize,
    /// Tokens, 1 to [`super::tiles::TILE_TOKENS`].
    pub tokens: usize,
    /// Whether this is the tiles' first token group: a kernel that repacks
    /// the tiles' weights for its register tile does it then, once for all
    /// groups.
    pub first: bool,
}

/// The results of [`Q8Tiles`]: per tile, `[token][row in tile]`.
pub(crate) type PairSums = [TileSums; PAIR];

/// As [`matmul`], with the tiles taken two at a time (one alone where the
/// range leaves an odd one at its end): `tile_kernel(tiles, sums)` sets
/// `sums[h][t][r]` to the dot product of row `r` of the `h`-th tile with token
/// `t`. Every output is still one row's blocks in order against one token, so
/// a kernel that sums each as [`matmul`]'s does gives the same bits.
#[inline(always)]
pub(crate) fn matmul_pairs(
    quants: &[i8],
    scales: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    mut tile_kernel: impl FnMut(Q8Tiles, &mut PairSums),
) {
    use super::tiles::TILE_TOKENS;
    let Some(Inputs { nb, tile_quants, tile_scales, end_tile, quants, scales, xq, xs }) =
        Inputs::checked(quants, scales, cols, &rows, x, n, out, out_stride)
    else {
        return;
    };

    let mut tile = rows.start / Q8_TILE_ROWS;
    while tile < end_tile {
        let tiles = (end_tile - tile).min(PAIR);
        let wq = &quants[tile * tile_quants..(tile + tiles) * tile_quants];
        let ws = &scales[tile * tile_scales..(tile + tiles) * tile_scales];
        let mut t0 = 0;
        while t0 < n {
            let tokens = (n - t0).min(TILE_TOKENS);
            let (xq, xs) = (&xq[t0 * cols..(t0 + tokens) * cols], &xs[t0 * nb..(t0 + tokens) * nb]);
            let mut sums = [[[0f32; Q8_TILE_ROWS]; TILE_TOKENS]; PAIR];
            tile_kernel(Q8Tiles { wq, ws, xq, xs, nb, tiles, tokens, first: t0 == 0 }, &mut sums);
            for (h, sums) in sums[..tiles].iter().enumerate() {
                for (t, sums) in sums[..tokens].iter().enumerate() {
                    super::tiles::write_tile(&rows, tile + h, sums, &mut out[(t0 + t) * out_stride..]);
                }
            }
            t0 += tokens;
        }
        tile += tiles;
    }
}
