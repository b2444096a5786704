//! AVX2 f32/f16 matmuls, and the GEMM driver the AVX-512 kernels share.
//!
//! Three regimes with different limits:
//! - one token (decode, [`gemv`]): every weight is used once, so the kernel
//!   only has to keep up with memory. Enough independent FMA chains and loads
//!   in flight that neither FMA latency nor f16 widening is the bottleneck.
//! - many tokens (prefill, [`gemm`]): every weight is used `n` times, so FMA
//!   throughput is the limit. Outer-product register tiles (BLIS-style) with
//!   the tokens along the vector lanes: activations are packed token-major per
//!   column (a small transpose of `n × cols`), weights are broadcast one at a
//!   time straight from their rows (f32) or from rows widened once into
//!   scratch (f16), so the large operand is never transposed. Each output is
//!   one FMA chain over its columns; the tile is transposed in registers to
//!   write each token's row of outputs. The packed activations and widened
//!   weights live in per-thread scratch that grows to the largest shape seen,
//!   so only a thread's first prefill (of a new size) allocates; decode never
//!   touches it.
//! - a few tokens (2 to [`FEW_TOKENS`], what one thread multiplies for a
//!   short prompt, [`few_tokens`]): the GEMM's register tiles and arithmetic,
//!   without its blocking, which only pays off over many tokens; tiles shaped
//!   so that few lanes idle. Every output is computed exactly as the GEMM
//!   computes it, so results do not depend on how a prompt's tokens are
//!   split into calls (the model's prefill relies on it); one token (the
//!   GEMV) sums in another order.
//!
//! Both prefetch in software: the weight rows of a model are short streams
//! that the hardware prefetcher ramps up on too late (see
//! [`GEMV_PREFETCH_GROUPS`]), and the GEMM's next block of weights is pulled
//! into L2 while the current one is computed (see [`Prefetch`]).

use std::arch::x86_64::*;
use std::cell::Cell;
use std::ops::Range;

use half::f16;

use super::simd::{hsum, load8, load8_f16, store8};

/// Weight rows per GEMV step: each activation load serves 4 rows, and with
/// two accumulators per row (16 columns a step) 8 FMA chains hide the FMA
/// latency while 8 weight loads are in flight.
const GEMV_ROWS: usize = 4;
/// How far ahead the GEMV prefetches, in row groups. The weight rows of a
/// model are short (SmolLM2: 576 columns, 1152 bytes in f16): each is a new
/// stream of a dozen cache lines, too short for the hardware prefetcher to
/// ramp up on, and without software prefetch the GEMV reaches about half the
/// bandwidth it does on long rows. Into L2 (`T1`), two groups ahead: measured
/// best among T0/T1/NTA at 1, 2 and 4 groups (NTA halves the bandwidth).
pub(in crate::x86_64) const GEMV_PREFETCH_GROUPS: usize = 2;
/// The farthest the GEMV prefetches, in bytes: on long rows (8192 f32 = 32
/// KiB) two groups ahead is 256 KiB per row, and the prefetched lines of the
/// 4 rows crowd L2 enough to cost a third of the bandwidth; 64 KiB does not
/// (and leaves SmolLM2-sized rows at two groups).
pub(in crate::x86_64) const GEMV_PREFETCH_MAX: usize = 64 * 1024;

/// Weight rows × token vectors of the AVX2 GEMM register tile: 6 × 2 × 8 = 96
/// outputs in 12 accumulators; per column, 2 activation loads and 6 weight
/// broadcasts feed 12 FMAs (the 6 × 16 shape of BLIS's Haswell kernel, with
/// weights in the role of its broadcast operand), and the 2 activation
/// vectors and one broadcast fit the 4 spare ymm registers.
const TILE_ROWS: usize = 6;
const TILE_VECTORS: usize = 2;

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
pub(in crate::x86_64) const FEW_TOKENS: usize = 16;
/// Weight rows of the AVX2 few-token tile for up to 8 tokens (one vector):
/// 12 FMA chains, as many as the GEMM tile's 6 × 2 (6 would leave the FMA
/// units idle for their latency). Up to 16 tokens use the GEMM tile's shape.
const FEW_ROWS: usize = 12;
/// Columns of weights the few-token tiles widen at a time (see
/// [`fill_chunk`]): at most 24 rows × 64 × 4 bytes = 6 KiB, in L1.
pub(in crate::x86_64) const FEW_CHUNK: usize = 64;

/// Checks the output shape shared by the matmuls: token `t`'s results go to
/// `out[t * out_stride..][..rows.len()]`.
pub(in crate::x86_64) fn check_out(rows: &Range<usize>, n: usize, out: &[f32], out_stride: usize) {
    assert!((n - 1) * out_stride + rows.len() <= out.len(), "matmul: output too short");
}

/// A weight type the float matmuls read: f32, or f16 widened exactly to f32.
pub(in crate::x86_64) trait FloatWeight: Copy + Into<f32> + bytemuck::Pod {
    /// The weights as f32 when they already are: the GEMM then broadcasts
    /// them in place instead of widening them into scratch.
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

/// As [`crate::reference::matmul_f32`]: [`gemv`] for one token, [`gemm`] with
/// the AVX2 register tile for more.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matmul_f32(
    w: &[f32],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    float_matmul(w, cols, rows, x, n, out, out_stride, |s| load8(s));
}

/// As [`crate::reference::matmul_f16`]: as [`matmul_f32`], F16C widening 8
/// weights at a time (in the GEMV as they are loaded; in the GEMM once per
/// block of rows, into scratch).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matmul_f16(
    w: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    float_matmul(w, cols, rows, x, n, out, out_stride, |s| load8_f16(s));
}

/// The body of [`matmul_f32`] and [`matmul_f16`]: shape checks, then the GEMV
/// or the GEMM; `load` widens 8 weights to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn float_matmul<W: FloatWeight>(
    w: &[W],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    load: impl Fn(&[W]) -> __m256 + Copy,
) {
    if rows.is_empty() || n == 0 {
        return;
    }
    check_out(&rows, n, out, out_stride);
    if cols == 0 {
        for t in 0..n {
            out[t * out_stride..][..rows.len()].fill(0.0);
        }
        return;
    }
    let w = &w[rows.start * cols..rows.end * cols];
    if n == 1 {
        gemv(w, cols, &x[..cols], &mut out[..rows.len()], load);
    } else if n <= 8 {
        let shape = TileShape { rows: FEW_ROWS, tokens: 8 };
        few_tokens(w, cols, &x[..n * cols], out, out_stride, shape, 1, |tile| few_tile::<W, FEW_ROWS, 1>(tile, load));
    } else if n <= FEW_TOKENS && W::as_f32(w).is_none() {
        // f32 weights: the GEMM broadcasts them in place, measured faster
        // than this tile's copies for 9 to 16 tokens (390 vs 490 µs for
        // 1536 × 576); the results are the same.
        let shape = TileShape { rows: TILE_ROWS, tokens: 16 };
        few_tokens(w, cols, &x[..n * cols], out, out_stride, shape, 1, |tile| few_tile::<W, TILE_ROWS, 2>(tile, load));
    } else {
        let widen = |w: &[W], out: &mut [f32]| widen(w, out, load);
        let shape = TileShape { rows: TILE_ROWS, tokens: TILE_VECTORS * 8 };
        gemm(w, cols, &x[..n * cols], out, out_stride, shape, widen, |tile| match tile.token_vectors {
            2 => tile_kernel::<2>(tile),
            _ => tile_kernel::<1>(tile),
        });
    }
}

// ------------------------------------------------------------------- GEMV

/// `out[r] = dot(w[r], x)` for the `out.len()` rows of the row-major `w`
/// (`cols` wide), [`GEMV_ROWS`] rows at a time; `load` widens 8 weights to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn gemv<W: FloatWeight>(w: &[W], cols: usize, x: &[f32], out: &mut [f32], load: impl Fn(&[W]) -> __m256 + Copy) {
    let mut row_groups = w.chunks_exact(GEMV_ROWS * cols);
    let mut out_groups = out.chunks_exact_mut(GEMV_ROWS);
    for (wg, og) in (&mut row_groups).zip(&mut out_groups) {
        og.copy_from_slice(&dot_rows::<W, GEMV_ROWS>(wg, cols, x, load));
    }
    for (wr, o) in row_groups.remainder().chunks_exact(cols).zip(out_groups.into_remainder()) {
        *o = dot_rows::<W, 1>(wr, cols, x, load)[0];
    }
}

/// The dot products of the `R` consecutive rows of `w` (`cols` wide) with
/// `x`, sharing each load of `x`. Two accumulators per row, 16 columns a step;
/// each step prefetches the same columns [`GEMV_PREFETCH_GROUPS`] row groups
/// ahead, or [`GEMV_PREFETCH_MAX`] bytes ahead if that is nearer (a prefetch
/// is a hint: past the end of `w` it is simply dropped).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_rows<W: FloatWeight, const R: usize>(
    w: &[W],
    cols: usize,
    x: &[f32],
    load: impl Fn(&[W]) -> __m256 + Copy,
) -> [f32; R] {
    let steps = cols / 16;
    let x16 = &x.as_chunks::<16>().0[..steps];
    // Loops, not `array::from_fn`: its closure is not inlined into
    // `#[target_feature]` code, which costs a call per row group.
    let mut w16: [&[[W; 16]]; R] = [&[]; R];
    for (r, wr) in w16.iter_mut().enumerate() {
        *wr = &w[r * cols..][..cols].as_chunks::<16>().0[..steps];
    }
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for (c, xc) in x16.iter().enumerate() {
        let xv = [load8(xc), load8(&xc[8..])];
        for r in 0..R {
            let ahead = (GEMV_PREFETCH_GROUPS * R * cols * size_of::<W>()).min(GEMV_PREFETCH_MAX);
            _mm_prefetch::<_MM_HINT_T1>(w16[r].as_ptr().wrapping_add(c).wrapping_byte_add(ahead).cast());
            // Unchecked: LLVM does not see that the R slices share x16's
            // length and keeps a compare-and-branch per row otherwise.
            // SAFETY: c < steps, and every `w16[r]` is `[..steps]` above.
            let wc = unsafe { w16[r].get_unchecked(c) };
            acc[r][0] = _mm256_fmadd_ps(load(wc), xv[0], acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(load(&wc[8..]), xv[1], acc[r][1]);
        }
    }
    let mut main = steps * 16;
    if cols - main >= 8 {
        let xv = load8(&x[main..]);
        for r in 0..R {
            acc[r][0] = _mm256_fmadd_ps(load(&w[r * cols + main..]), xv, acc[r][0]);
        }
        main += 8;
    }
    let mut sums = [0f32; R];
    for (r, sum) in sums.iter_mut().enumerate() {
        let tail: f32 = w[r * cols + main..(r + 1) * cols].iter().zip(&x[main..]).map(|(&a, b)| a.into() * b).sum();
        *sum = hsum(_mm256_add_ps(acc[r][0], acc[r][1])) + tail;
    }
    sums
}

// ------------------------------------------------------------------- GEMM

/// An ISA's register tile: `rows` weight rows × `tokens` tokens (two vectors
/// of `tokens / 2`).
pub(in crate::x86_64) struct TileShape {
    pub rows: usize,
    pub tokens: usize,
}

/// One register tile's inputs and outputs, as the [`gemm`] driver (f32
/// weights) and the [`few_tokens`] driver (the matrix's own weights) hand them
/// to an ISA's tile kernel.
pub(in crate::x86_64) struct Tile<'a, W = f32> {
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
pub(in crate::x86_64) struct Prefetch<'a> {
    bytes: &'a [u8],
    /// Columns per prefetched line.
    pub chunk: usize,
}

impl<'a> Prefetch<'a> {
    pub fn new(bytes: &'a [u8], kc: usize) -> Self {
        let lines = bytes.len().div_ceil(64);
        Self { bytes, chunk: kc.checked_div(lines).unwrap_or(kc).max(1) }
    }

    /// Prefetches line `i` (of the `chunk`-column chunk `i`), if there is one.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn line(&self, i: usize) {
        if i * 64 < self.bytes.len() {
            _mm_prefetch::<_MM_HINT_T1>(self.bytes[i * 64..].as_ptr().cast());
        }
    }
}

/// Where a tile's results go: token `t`, tile row `r` at `out[t * stride + r]`
/// for `r < rows`, `t < tokens` (the rows and tokens that exist: the last tile
/// of a matrix or token group may have fewer).
pub(in crate::x86_64) struct TileOut<'a> {
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
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn gemm<W: FloatWeight>(
    w: &[W],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    out_stride: usize,
    shape: TileShape,
    widen: impl Fn(&[W], &mut [f32]),
    tile_kernel: impl Fn(Tile),
) {
    let TileShape { rows: tile_rows, tokens: tile_tokens } = shape;
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
                pack_tokens(&x[t0 * cols + k0..], cols, tn, kc, group_tokens(tn, tile_tokens), group);
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

/// Packs `tn` activation rows (row `t` at `x[t * cols..][..kc]`) token-major:
/// `out[k * tokens + t] = x[t * cols + k]`, tokens `tn..tokens` zero.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pack_tokens(x: &[f32], cols: usize, tn: usize, kc: usize, tokens: usize, out: &mut [f32]) {
    let out = &mut out[..kc * tokens];
    if tn < tokens {
        out.fill(0.0);
    }
    // Blocks of 8 tokens × 8 columns, transposed in registers.
    let full = tn / 8 * 8;
    let k8 = kc / 8 * 8;
    for t0 in (0..full).step_by(8) {
        for k0 in (0..k8).step_by(8) {
            let mut v = [_mm256_setzero_ps(); 8];
            for (i, v) in v.iter_mut().enumerate() {
                *v = load8(&x[(t0 + i) * cols + k0..]);
            }
            let tr = transpose8(v);
            for (i, &col) in tr.iter().enumerate() {
                store8(&mut out[(k0 + i) * tokens + t0..], col);
            }
        }
    }
    // The columns and tokens the blocks did not cover, one at a time.
    for t in 0..tn {
        let ks = if t < full { k8 } else { 0 };
        for k in ks..kc {
            out[k * tokens + t] = x[t * cols + k];
        }
    }
}

/// The transpose of the 8 × 8 matrix whose rows are `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn transpose8(v: [__m256; 8]) -> [__m256; 8] {
    // Pairs of rows interleaved within each 128-bit half, then
    // b[c] = column c (low half) and c + 4 (high half) of rows 0-3,
    // b[4 + c] the same for rows 4-7; then the halves swapped.
    let mut a = [_mm256_setzero_ps(); 8];
    for i in 0..4 {
        a[2 * i] = _mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]);
        a[2 * i + 1] = _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]);
    }
    let mut b = [_mm256_setzero_ps(); 8];
    for g in [0, 4] {
        for h in 0..2 {
            let (p, q) = (a[g + h], a[g + h + 2]);
            b[g + 2 * h] = _mm256_shuffle_ps::<0x44>(p, q);
            b[g + 2 * h + 1] = _mm256_shuffle_ps::<0xEE>(p, q);
        }
    }
    let mut out = [_mm256_setzero_ps(); 8];
    for c in 0..4 {
        out[c] = _mm256_permute2f128_ps::<0x20>(b[c], b[c + 4]);
        out[c + 4] = _mm256_permute2f128_ps::<0x31>(b[c], b[c + 4]);
    }
    out
}

/// Widens `w` to f32 into `out` (same length), 8 at a time with `load`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn widen<W: FloatWeight>(w: &[W], out: &mut [f32], load: impl Fn(&[W]) -> __m256) {
    let (w8, w_tail) = w.as_chunks::<8>();
    let (o8, o_tail) = out.as_chunks_mut::<8>();
    for (o, w) in o8.iter_mut().zip(w8) {
        store8(o, load(w));
    }
    for (o, &v) in o_tail.iter_mut().zip(w_tail) {
        *o = v.into();
    }
}

/// The AVX2 register tile: [`TILE_ROWS`] weight rows × `V` vectors of 8
/// tokens, one FMA chain per output, summed over the tile's columns in order.
/// The accumulators hold rows; each vector of 8 tokens is transposed in
/// registers into per-token vectors of the tile's rows for the output.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_kernel<const V: usize>(tile: Tile) {
    const R: usize = TILE_ROWS;
    let Tile { w, w_stride, x, kc, prefetch, mut out, .. } = tile;
    let x8 = &x.as_chunks::<8>().0[..kc * V];
    assert!(w.len() >= (R - 1) * w_stride + kc);
    let prefetch = Prefetch::new(prefetch, kc);
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    for (i, x_chunk) in x8.chunks(prefetch.chunk * V).enumerate() {
        prefetch.line(i);
        let k0 = i * prefetch.chunk;
        for (k, xk) in (k0..).zip(x_chunk.chunks_exact(V)) {
            let mut xv = [_mm256_setzero_ps(); V];
            for (v, xv) in xv.iter_mut().enumerate() {
                *xv = load8(&xk[v]);
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // SAFETY: r * w_stride + k < (R - 1) * w_stride + kc <= w.len(),
                // asserted above.
                let b = _mm256_set1_ps(unsafe { *w.get_unchecked(r * w_stride + k) });
                for (a, &xv) in acc_r.iter_mut().zip(&xv) {
                    *a = _mm256_fmadd_ps(b, xv, *a);
                }
            }
        }
    }
    // by_row[v][r]: the accumulators of token vector v (rows R.. zero).
    let mut by_row = [[_mm256_setzero_ps(); 8]; V];
    for (r, acc_r) in acc.iter().enumerate() {
        for (by_row, &a) in by_row.iter_mut().zip(acc_r) {
            by_row[r] = a;
        }
    }
    for (v, by_row) in by_row.into_iter().enumerate() {
        let by_token = transpose8(by_row);
        for (i, &col) in by_token.iter().enumerate().take(out.tokens.saturating_sub(v * 8)) {
            let mut rows = [0f32; 8];
            store8(&mut rows, col);
            out.put::<R>(v * 8 + i, rows.first_chunk().expect("R <= 8"));
        }
    }
}

// ------------------------------------------------------------ few tokens

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
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn few_tokens<W: FloatWeight>(
    w: &[W],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    out_stride: usize,
    shape: TileShape,
    copies: usize,
    tile_kernel: impl Fn(Tile<W>),
) {
    let TileShape { rows: tile_rows, tokens } = shape;
    let (n_rows, n) = (w.len() / cols, x.len() / cols);
    assert!(n <= tokens, "few_tokens: more tokens than a tile");
    let block_cols = cols.min(GEMM_BLOCK_COLS);
    let mut scratch = SCRATCH.take();
    scratch.x.resize(scratch.x.len().max(copies * tokens * block_cols), 0.0);
    for k0 in (0..cols).step_by(block_cols) {
        let kc = (cols - k0).min(block_cols);
        let xp = &mut scratch.x[..copies * tokens * kc];
        if copies == 1 {
            pack_tokens(&x[k0..], cols, n, kc, tokens, xp);
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
pub(in crate::x86_64) struct PrefetchCursor<'a> {
    prefetch: Prefetch<'a>,
    line: usize,
    next: usize,
}

impl<'a> PrefetchCursor<'a> {
    pub fn new(bytes: &'a [u8], kc: usize) -> Self {
        Self { prefetch: Prefetch::new(bytes, kc), line: 0, next: 0 }
    }

    /// Called before each column `k` of the tile, in order.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn column(&mut self, k: usize) {
        if k == self.next {
            self.prefetch.line(self.line);
            self.line += 1;
            self.next += self.prefetch.chunk;
        }
    }
}

/// Fills `buf[r][..len]` with columns `k0..k0 + len` of `rows[r]` as f32:
/// the few-token tiles broadcast their weights from this one small buffer
/// (in L1, every row at a fixed offset from one pointer) rather than from
/// `R` rows of the matrix.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn fill_chunk<W: FloatWeight, const R: usize>(
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

/// The AVX2 few-token register tile: `R` weight rows × `V` vectors of 8
/// tokens, one FMA chain per output, summed over the tile's columns in order
/// (as [`tile_kernel`]), [`FEW_CHUNK`] columns at a time (see
/// [`fill_chunk`]). Rows past `out.rows` repeat the last row; their results
/// are dropped.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn few_tile<W: FloatWeight, const R: usize, const V: usize>(tile: Tile<W>, load: impl Fn(&[W]) -> __m256 + Copy) {
    let Tile { w, w_stride, x, kc, prefetch, mut out, .. } = tile;
    let x8 = &x.as_chunks::<8>().0[..kc * V];
    let mut rows: [&[W]; R] = [&[]; R];
    for (r, row) in rows.iter_mut().enumerate() {
        *row = &w[r.min(out.rows - 1) * w_stride..][..kc];
    }
    let mut prefetch = PrefetchCursor::new(prefetch, kc);
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    let mut buf = [[0f32; FEW_CHUNK]; R];
    for k0 in (0..kc).step_by(FEW_CHUNK) {
        let len = (kc - k0).min(FEW_CHUNK);
        fill_chunk(&rows, k0, len, &mut buf, |w, out| widen(w, out, load));
        few_columns(&mut acc, &buf, &x8[k0 * V..(k0 + len) * V], &mut prefetch, k0);
    }
    // by_row[g][v][i]: the accumulators of rows 8g + i, token vector v
    // (rows R.. zero), each 8 × 8 block transposed into by_token[t][r], the
    // results of token t, row r (R <= 16, 8 * V <= 16).
    let mut by_row = [[[_mm256_setzero_ps(); 8]; V]; 2];
    for (r, acc_r) in acc.iter().enumerate() {
        for (v, &a) in acc_r.iter().enumerate() {
            by_row[r / 8][v][r % 8] = a;
        }
    }
    let mut by_token = [[0f32; 16]; 16];
    for (g, by_row) in by_row.iter().enumerate().take(R.div_ceil(8)) {
        for (v, &by_row) in by_row.iter().enumerate() {
            for (i, &col) in transpose8(by_row).iter().enumerate() {
                store8(&mut by_token[v * 8 + i][g * 8..], col);
            }
        }
    }
    for (t, rows) in by_token.iter().enumerate().take(out.tokens) {
        out.put::<R>(t, rows.first_chunk().expect("R <= 16"));
    }
}

/// The FMAs of [`few_tile`] over one chunk of columns `k0..`:
/// `acc[r][v] += buf[r][k] × x8[k * V + v]` for each column `k` in order.
/// Not inlined: with the chunk's widening in the same loop, LLVM keeps the
/// accumulators on the stack instead of in registers; a call per chunk only
/// moves them there and back once.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
fn few_columns<const R: usize, const V: usize>(
    acc: &mut [[__m256; V]; R],
    buf: &[[f32; FEW_CHUNK]; R],
    x8: &[[f32; 8]],
    prefetch: &mut PrefetchCursor,
    k0: usize,
) {
    let mut a = *acc;
    for (k, xk) in x8.chunks_exact(V).enumerate().take(FEW_CHUNK) {
        prefetch.column(k0 + k);
        let mut xv = [_mm256_setzero_ps(); V];
        for (xv, xk) in xv.iter_mut().zip(xk) {
            *xv = load8(xk);
        }
        for (a_r, buf) in a.iter_mut().zip(buf) {
            // SAFETY: k < FEW_CHUNK, from `take` above.
            let b = _mm256_set1_ps(unsafe { *buf.get_unchecked(k) });
            for (a, &xv) in a_r.iter_mut().zip(&xv) {
                *a = _mm256_fmadd_ps(b, xv, *a);
            }
        }
    }
    *acc = a;
}
