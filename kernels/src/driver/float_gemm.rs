//! The GEMM form of the f32/f16 matmuls (x86's AVX2 and AVX-512 register
//! tiles), for prefill tokens whatever their count, one included: every
//! output is one FMA chain over its columns in order (column blocks of
//! [`GEMM_BLOCK_COLS`] summed in order), so a token's bits depend neither on
//! the tokens beside it nor on the blocking. Decode tokens take the dot form
//! ([`super::float`]), which sums in the GEMV's order; which form a token
//! takes is the model's choice by its role, never by the batch.
//!
//! - many tokens ([`gemm`]): every weight is used `n` times, so FMA
//!   throughput is the limit. Outer-product register tiles (BLIS-style) with
//!   the tokens along the vector lanes: activations are packed token-major per
//!   column (a small transpose of `n × cols`), weights are broadcast one at a
//!   time straight from their rows (f32) or from rows widened once into
//!   scratch (f16), so the large operand is never transposed. The tile is
//!   transposed in registers to write each token's row of outputs. The packed
//!   activations and widened weights live in per-thread scratch that grows to
//!   the largest shape seen, so only a thread's first prefill (of a new size)
//!   allocates; decode never touches it.
//! - a few tokens (1 to [`FEW_TOKENS`], what one thread multiplies for a
//!   short prompt or a prompt's last chunk, [`few_tokens`]): the GEMM's
//!   arithmetic without its blocking, which only pays off over many tokens;
//!   tiles shaped so that few lanes idle.
//!
//! The GEMM's next block of weights is pulled into L2 while the current one
//! is computed (see [`Prefetch`]): each block is too short a stream for the
//! hardware prefetcher to ramp up on.

use std::cell::Cell;
use std::ops::Range;

use super::float::FloatWeight;

/// `pack(x, cols, tn, kc, tokens, out)`: the ISA's packing of `tn`
/// activation rows (row `t` at `x[t * cols..][..kc]`) token-major,
/// `out[k * tokens + t] = x[t * cols + k]`, tokens `tn..tokens` zero.
pub(crate) trait Pack: Fn(&[f32], usize, usize, usize, usize, &mut [f32]) {}
impl<F: Fn(&[f32], usize, usize, usize, usize, &mut [f32])> Pack for F {}

/// The body of every GEMM-form entry (`out[t * out_stride + (r -
/// rows.start)] = dot(w[r], x[t])`, as [`crate::reference::matmul_f32`]): the
/// shape checks ([`super::float::checked`]), then `tokens(w, x, out)` with
/// `w` cut to the rows in range and `x` to the `n` tokens, for any `n >= 1`.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the matmul signature plus the ISA's tiles
pub(crate) fn matmul<W: FloatWeight>(
    w: &[W],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    tokens: impl FnOnce(&[W], &[f32], &mut [f32]),
) {
    if super::float::checked(cols, &rows, n, out, out_stride) {
        tokens(&w[rows.start * cols..rows.end * cols], &x[..n * cols], out);
    }
}

/// Activation columns per cache block of the GEMM: typical widths (576 to
/// 2048) are one block, so each output is written once. Wider matrices are
/// cut into blocks whose partial sums are added to the output.
const GEMM_BLOCK_COLS: usize = 2048;
/// Tokens per pass of the GEMM: their packed activations (at most
/// `64 × 2048 × 4` bytes = 512 KiB) stay in L2 while every weight row
/// passes over them once.
const GEMM_BLOCK_TOKENS: usize = 64;
/// Floats of widened weight rows per cache block (64 KiB, in L2 next to the
/// activations): every token group passes over one block of rows before the
/// next is widened, so each f16 weight is widened once per pass.
const GEMM_BLOCK_WEIGHTS: usize = 16 * 1024;

/// The most tokens the few-token tiles take (see [`few_tokens`]); more go to
/// the GEMM.
pub(crate) const FEW_TOKENS: usize = 16;
/// Columns of weights the few-token tiles widen at a time (see
/// [`fill_chunk`]): at most 24 rows × 64 × 4 bytes = 6 KiB, in L1.
pub(crate) const FEW_CHUNK: usize = 64;

/// An ISA's register tile: `rows` weight rows × `tokens` tokens (two vectors
/// of `tokens / 2`).
pub(crate) struct GemmShape {
    pub rows: usize,
    pub tokens: usize,
}

/// One register tile's inputs and outputs, as the [`gemm`] driver (f32
/// weights) and the [`few_tokens`] driver (the matrix's own weights) hand them
/// to an ISA's tile kernel.
pub(crate) struct Tile<'a, W = f32> {
    /// The tile's weight rows: row `r`, column `k` at `w[r * w_stride + k]`.
    pub w: &'a [W],
    pub w_stride: usize,
    /// Packed activations: column `k`, token `t` at `x[k * tokens + t]`, where
    /// `tokens` is `token_vectors` times the ISA's vector width (for the
    /// few-token tiles, the lanes of their vectors, each token `copies` times:
    /// see [`few_tokens`]).
    pub x: &'a [f32],
    /// Columns to sum over.
    pub kc: usize,
    /// Vectors of tokens: the full tile's count, or 1 for a last group that
    /// fits one vector (0 for the few-token tiles, whose count is a const
    /// parameter).
    pub token_vectors: usize,
    /// Memory to pull into L2 while the tile computes (see [`Prefetch`]).
    pub prefetch: &'a [u8],
    pub out: TileOut<'a>,
}

/// Software prefetches spread evenly over a tile's columns: one cache line
/// of `bytes` before each of `lines` chunks of columns.
pub(crate) struct Prefetch<'a> {
    bytes: &'a [u8],
    /// Columns per prefetched line.
    pub chunk: usize,
}

impl<'a> Prefetch<'a> {
    pub fn new(bytes: &'a [u8], kc: usize) -> Self {
        let lines = bytes.len().div_ceil(64);
        Self { bytes, chunk: kc.checked_div(lines).unwrap_or(kc).max(1) }
    }

    /// Line `i` (due before the `chunk`-column chunk `i`), if there is one:
    /// the ISA's tile prefetches it into L2.
    #[inline(always)]
    pub fn line(&self, i: usize) -> Option<&'a u8> {
        self.bytes.get(i * 64)
    }
}

/// Where a tile's results go: token `t`, tile row `r` at `out[t * stride + r]`
/// for `r < rows`, `t < tokens` (the rows and tokens that exist: the last tile
/// of a matrix or token group may have fewer).
pub(crate) struct TileOut<'a> {
    pub out: &'a mut [f32],
    pub stride: usize,
    pub rows: usize,
    pub tokens: usize,
    /// Add to the outputs (a later column block) instead of writing them.
    pub accumulate: bool,
}

impl TileOut<'_> {
    /// Writes (or adds) token `t`'s results from `v[..N]`, the tile's rows in
    /// order; `N` is the tile's row count, `N > self.rows` for a cut tile.
    #[inline]
    pub fn put<const N: usize>(&mut self, t: usize, v: &[f32; N]) {
        if self.rows == N {
            put(self.out[t * self.stride..].first_chunk_mut::<N>().expect("tile output"), v, self.accumulate);
        } else {
            put(&mut self.out[t * self.stride..][..self.rows], &v[..self.rows], self.accumulate);
        }
    }
}

#[inline]
fn put(out: &mut [f32], v: &[f32], accumulate: bool) {
    if accumulate {
        out.iter_mut().zip(v).for_each(|(o, v)| *o += v);
    } else {
        out.copy_from_slice(v);
    }
}

/// Scratch for [`gemm`], one per thread, grown to the largest shape seen and
/// then reused: prefill allocates only on its first call for a shape.
#[derive(Default)]
struct Scratch {
    /// Packed activations of one pass ([`GEMM_BLOCK_TOKENS`] tokens × one block
    /// of columns), token-major per column, in groups of one tile's tokens.
    x: Vec<f32>,
    /// One block of weight rows, widened to f32 (f16 weights, or the last
    /// block of rows when it does not fill whole tiles).
    w: Vec<f32>,
}

thread_local! {
    static SCRATCH: Cell<Scratch> = const { Cell::new(Scratch { x: Vec::new(), w: Vec::new() }) };
}

/// `out[t * out_stride + r] = dot(w[r], x[t])` for the rows of the row-major
/// `w` and the tokens of `x` (both `cols` wide), with `tile_kernel` computing
/// one register tile of `shape` (see [`Tile`]) and `widen(w, out)` widening
/// weights to f32 (the f16 rows, and f32 rows that do not fill a tile);
/// shared by AVX2 and AVX-512.
///
/// Loops, outermost first: passes of up to [`GEMM_BLOCK_TOKENS`] tokens,
/// blocks of up to [`GEMM_BLOCK_COLS`] columns (packing that pass's
/// activations for them), blocks of rows (widened into scratch unless they
/// are f32 and fill whole tiles), token groups of one tile, row tiles. The
/// first column block writes the outputs, later ones add to them.
///
/// Each tile sums its columns in order (an FMA chain per output), so results
/// do not depend on the blocking except where a column block ends.
#[inline(always)]
pub(crate) fn gemm<W: FloatWeight>(
    w: &[W],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    out_stride: usize,
    shape: GemmShape,
    pack: impl Pack,
    widen: impl Fn(&[W], &mut [f32]),
    tile_kernel: impl Fn(Tile),
) {
    let GemmShape { rows: tile_rows, tokens: tile_tokens } = shape;
    assert!(cols > 0 && tile_tokens.is_multiple_of(2));
    let (n_rows, n) = (w.len() / cols, x.len() / cols);
    let block_cols = cols.min(GEMM_BLOCK_COLS);
    let block_rows = (GEMM_BLOCK_WEIGHTS / block_cols / tile_rows).max(1) * tile_rows;
    let pass_tokens = n.min(GEMM_BLOCK_TOKENS).next_multiple_of(tile_tokens);
    let mut scratch = SCRATCH.take();
    scratch.x.resize(scratch.x.len().max(pass_tokens * block_cols), 0.0);
    scratch.w.resize(scratch.w.len().max(block_rows * block_cols), 0.0);

    for t_pass in (0..n).step_by(GEMM_BLOCK_TOKENS) {
        let pass_n = (n - t_pass).min(GEMM_BLOCK_TOKENS);
        for k0 in (0..cols).step_by(block_cols) {
            let kc = (cols - k0).min(block_cols);
            let xp = &mut scratch.x[..pass_n.next_multiple_of(tile_tokens) * kc];
            for (g, group) in xp.chunks_exact_mut(tile_tokens * kc).enumerate() {
                let t0 = t_pass + g * tile_tokens;
                let tn = (n - t0).min(tile_tokens);
                pack(&x[t0 * cols + k0..], cols, tn, kc, group_tokens(tn, tile_tokens), group);
            }
            for r_block in (0..n_rows).step_by(block_rows) {
                let rb_n = (n_rows - r_block).min(block_rows);
                let padded = rb_n.next_multiple_of(tile_rows);
                // The next block's weights, to be pulled into L2 while this
                // block is computed: each block is too short for the
                // hardware prefetcher to ramp up on. Only when the block's
                // rows are contiguous (one column block, the usual case).
                let next_rows = (r_block + block_rows).min(n_rows)..(r_block + 2 * block_rows).min(n_rows);
                let next: &[u8] = if kc == cols {
                    bytemuck::cast_slice(&w[next_rows.start * cols..next_rows.end * cols])
                } else {
                    &[]
                };
                // In place (f32 filling whole tiles): row r at w[r * cols];
                // otherwise widened rows, zero-padded to whole tiles.
                let (wb, w_stride) = match W::as_f32(w) {
                    Some(w32) if padded == rb_n => (&w32[r_block * cols + k0..], cols),
                    _ => {
                        let wp = &mut scratch.w[..padded * kc];
                        for (r, row) in wp.chunks_exact_mut(kc).enumerate() {
                            if r < rb_n {
                                widen(&w[(r_block + r) * cols + k0..][..kc], row);
                            } else {
                                row.fill(0.0);
                            }
                        }
                        (&scratch.w[..padded * kc], kc)
                    }
                };
                for (g, group) in xp.chunks_exact(tile_tokens * kc).enumerate() {
                    let t0 = t_pass + g * tile_tokens;
                    let tn = (n - t0).min(tile_tokens);
                    let tokens = group_tokens(tn, tile_tokens);
                    let vectors = tokens / (tile_tokens / 2);
                    let tiles = padded / tile_rows;
                    for (i, r0) in (0..rb_n).step_by(tile_rows).enumerate() {
                        let w_tile = &wb[r0 * w_stride..][..(tile_rows - 1) * w_stride + kc];
                        // The first token group's tiles share the prefetching.
                        let prefetch =
                            if g == 0 { &next[i * next.len() / tiles..(i + 1) * next.len() / tiles] } else { &[] };
                        let rn = (rb_n - r0).min(tile_rows);
                        let out = TileOut {
                            out: &mut out[t0 * out_stride + r_block + r0..],
                            stride: out_stride,
                            rows: rn,
                            tokens: tn,
                            accumulate: k0 > 0,
                        };
                        let x = &group[..kc * tokens];
                        tile_kernel(Tile { w: w_tile, w_stride, x, kc, token_vectors: vectors, prefetch, out });
                    }
                }
            }
        }
    }
    SCRATCH.set(scratch);
}

/// The tokens of a group of `tn`: a whole tile's, or half of it (one vector)
/// for a last group that fits there.
fn group_tokens(tn: usize, tile_tokens: usize) -> usize {
    if tn <= tile_tokens / 2 {
        tile_tokens / 2
    } else {
        tile_tokens
    }
}

/// `out[t * out_stride + r] = dot(w[r], x[t])` for a few tokens (at most the
/// `shape.tokens` of one register tile), with the same arithmetic as [`gemm`]:
/// the tokens are packed once per block of [`GEMM_BLOCK_COLS`] columns
/// (`copies` times each, for a tile that puts that many rows in a vector), and
/// `tile_kernel` computes each tile of `shape.rows` rows from the matrix's own
/// weights (see [`Tile`]; a last tile with fewer rows than the kernel's has
/// `out.rows` < `shape.rows`), one FMA chain per output in column order, so
/// each result is bit-identical to what [`gemm`] computes for it.
///
/// Why not [`gemm`]: with one token group, each weight is used by one FMA, so
/// the GEMM's overheads are not amortized: its block of widened rows (55 KiB)
/// does not fit L1 next to the packed tokens, its tiles broadcast from 12
/// row pointers (spilled), and a group of 8 tokens fills half the AVX-512
/// tile's lanes. The few-token tiles widen [`FEW_CHUNK`] columns at a time
/// into a small buffer (see [`fill_chunk`]) and are shaped for the token
/// count: f16, 1536 × 576, 8 tokens on AVX-512 went from 350 to 180 µs.
#[inline(always)]
pub(crate) fn few_tokens<W: FloatWeight>(
    w: &[W],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    out_stride: usize,
    shape: GemmShape,
    copies: usize,
    pack: impl Pack,
    tile_kernel: impl Fn(Tile<W>),
) {
    let GemmShape { rows: tile_rows, tokens } = shape;
    let (n_rows, n) = (w.len() / cols, x.len() / cols);
    assert!(n <= tokens, "few_tokens: more tokens than a tile");
    let block_cols = cols.min(GEMM_BLOCK_COLS);
    let mut scratch = SCRATCH.take();
    scratch.x.resize(scratch.x.len().max(copies * tokens * block_cols), 0.0);
    for k0 in (0..cols).step_by(block_cols) {
        let kc = (cols - k0).min(block_cols);
        let xp = &mut scratch.x[..copies * tokens * kc];
        if copies == 1 {
            pack(&x[k0..], cols, n, kc, tokens, xp);
        } else {
            // Lane `copies * t + c` holds token t, for the tile's rows
            // interleaved along the lanes.
            xp.fill(0.0);
            for (k, col) in xp.chunks_exact_mut(copies * tokens).enumerate() {
                for (t, lanes) in col.chunks_exact_mut(copies).take(n).enumerate() {
                    lanes.fill(x[t * cols + k0 + k]);
                }
            }
        }
        for r0 in (0..n_rows).step_by(tile_rows) {
            let rn = (n_rows - r0).min(tile_rows);
            // The next tile's weights, pulled into L2 while this one computes
            // (as in `gemm`, when its rows are contiguous).
            let next_rows = (r0 + tile_rows).min(n_rows)..(r0 + 2 * tile_rows).min(n_rows);
            let next: &[u8] =
                if kc == cols { bytemuck::cast_slice(&w[next_rows.start * cols..next_rows.end * cols]) } else { &[] };
            let out = TileOut { out: &mut out[r0..], stride: out_stride, rows: rn, tokens: n, accumulate: k0 > 0 };
            let w = &w[r0 * cols + k0..][..(rn - 1) * cols + kc];
            tile_kernel(Tile { w, w_stride: cols, x: xp, kc, token_vectors: 0, prefetch: next, out });
        }
    }
    SCRATCH.set(scratch);
}

/// Where a few-token tile is in its prefetching (see [`Prefetch`]): line
/// `line` is due before column `next`.
pub(crate) struct PrefetchCursor<'a> {
    prefetch: Prefetch<'a>,
    line: usize,
    next: usize,
}

impl<'a> PrefetchCursor<'a> {
    pub fn new(bytes: &'a [u8], kc: usize) -> Self {
        Self { prefetch: Prefetch::new(bytes, kc), line: 0, next: 0 }
    }

    /// Called before each column `k` of the tile, in order: the line to
    /// prefetch now, if one is due.
    #[inline(always)]
    pub fn column(&mut self, k: usize) -> Option<&'a u8> {
        if k != self.next {
            return None;
        }
        let line = self.prefetch.line(self.line);
        self.line += 1;
        self.next += self.prefetch.chunk;
        line
    }
}

/// Fills `buf[r][..len]` with columns `k0..k0 + len` of `rows[r]` as f32:
/// the few-token tiles broadcast their weights from this one small buffer
/// (in L1, every row at a fixed offset from one pointer) rather than from
/// `R` rows of the matrix.
#[inline(always)]
pub(crate) fn fill_chunk<W: FloatWeight, const R: usize>(
    rows: &[&[W]; R],
    k0: usize,
    len: usize,
    buf: &mut [[f32; FEW_CHUNK]; R],
    widen: impl Fn(&[W], &mut [f32]),
) {
    for (row, buf) in rows.iter().zip(buf) {
        let row = &row[k0..k0 + len];
        match W::as_f32(row) {
            Some(row) => buf[..len].copy_from_slice(row),
            None => widen(row, &mut buf[..len]),
        }
    }
}
