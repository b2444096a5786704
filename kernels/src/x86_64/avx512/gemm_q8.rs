//! The AVX-512 q8 GEMM (prefill: many tokens per call). The GEMV-style kernel
//! in `matmul_q8` spends most of its time summing each block's products across
//! lanes; here tokens sit in lanes instead, so a block needs no horizontal sum.
//!
//! Per call the activations are repacked once so that one 512-bit register
//! holds 4 consecutive quants (offset to u8 but in a half vector, see
//! [`gemm_q8`]) of each of 16 tokens; per weight
//! row, 4 quants broadcast from the q8 layout as one i32 multiply that whole
//! register in one `vpdpbusd`. A register tile of a q8 tile's 8 rows × 1 or 2
//! vectors of 16 tokens accumulates a block's 8 steps of 4 columns in i32,
//! then converts and fused-multiply-adds into f32 accumulators, as the GEMV
//! does per block: per accumulator and block, 8 `vpdpbusd` (512
//! multiply-adds) and 3 float operations (convert, scale product, FMA), where
//! the GEMV also needs a horizontal sum per token.

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::ops::Range;

use half::f16;

use super::matmul_q8::reduce;
use super::simd::{load16, load64_i8};
use crate::x86_64::avx2::simd::{load32_i8, load8_f16, store8};
use crate::{Q8Acts, Q8_BLOCK, Q8_TILE_ROWS};

/// Tokens per vector (i32 lanes of a 512-bit register).
const LANES: usize = 16;
/// Steps of 4 columns (one `vpdpbusd`) per block.
const STEPS: usize = Q8_BLOCK / 4;
/// Packed activation bytes of one vector of tokens for one block.
const PACKED_BLOCK: usize = STEPS * LANES * 4;

/// One tile's block of weight quants: `[row in tile][step][4 columns]`.
type WeightBlock = [[[i8; 4]; STEPS]; Q8_TILE_ROWS];
/// The same block with the rows in pairs, for a half vector:
/// `[pair p][step][row 2p + h][4 columns]`, one pair's step 8 bytes.
type PairedBlock = [[[i8; 8]; STEPS]; Q8_TILE_ROWS / 2];

/// The most blocks of 32 columns a matrix may have for [`gemm_q8`] (8192
/// columns): the per-tile scratch holds this many.
const MAX_BLOCKS: usize = 256;
/// Packed activation blocks (one vector of 16 tokens × one block) per pass
/// over the matrix: 128 KiB, 80 tokens of 1536 columns or 16 of 8192.
const PACKED_BLOCKS: usize = 256;
/// The widest matrix [`gemm_q8`] takes; `matmul_q8_vnni` runs wider ones on
/// its other path.
pub(super) const GEMM_MAX_COLS: usize = MAX_BLOCKS * Q8_BLOCK;

/// Scratch for [`gemm_q8`], one per thread, in fixed-size thread-local arrays
/// (about 440 KiB) rather than vectors: a prefill after the first (the
/// context shift of a long generation) must not allocate.
struct Scratch {
    /// Packed activation quants `[vector][block][step][token][4]`, offset by
    /// 128 (as u8); the tokens past `n` in the last vector are zero quants. A
    /// half vector has `[step][token][2][4]` in place of `[step][token][4]`
    /// (each token twice).
    x: [[i8; PACKED_BLOCK]; PACKED_BLOCKS],
    /// Activation scales `[vector][block][token]` (0 past `n`; a half vector
    /// has each token twice).
    xs: [[f32; LANES]; PACKED_BLOCKS],
    /// `-128 Σ x` of the half vector's tokens, `[block][lane]`: cancels the
    /// offset of the paired weights.
    x_bias: [[i32; LANES]; MAX_BLOCKS],
    /// `-128 Σ w` of the current tile, `[block][row in tile]`: cancels the
    /// offset of the whole vectors' activations.
    bias: [[i32; Q8_TILE_ROWS]; MAX_BLOCKS],
    /// The current tile's weight scales as f32, `[block][row in tile]`.
    ws: [[f32; Q8_TILE_ROWS]; MAX_BLOCKS],
    /// The current tile's blocks with rows in pairs and offset by 128 (as
    /// u8), when there is a half vector.
    paired: [PairedBlock; MAX_BLOCKS],
    /// The activations `x`, `xs` and `x_bias` were packed from.
    packed_from: PackedFrom,
}

/// Most activation quants [`PackedFrom`] keeps (16 tokens of 4096 columns).
const REUSE_QUANTS: usize = 1 << 16;

/// A copy of the activations last packed, when they were few (the decode
/// step's tokens: at most [`REUSE_QUANTS`] quants). The forward pass cuts a
/// matrix of few tokens into row chunks, several per thread, all with the
/// same activations; a call whose activations are the copy's, value for
/// value, finds them packed already. Packing a pass costs about as much as
/// the pass over 2 tiles, so chunks of 9 tiles of SmolLM2's 1536-column
/// `ffn_down` paid 15-20% for it. Comparing the values (a memcmp of up to
/// 64 KiB) rather than an address is what makes the reuse safe: the forward
/// pass fills the same buffer with new activations for every matmul.
struct PackedFrom {
    quants: [i8; REUSE_QUANTS],
    /// The scales' bits (an f32 comparison would take -0 for +0).
    scales: [u32; REUSE_QUANTS / Q8_BLOCK],
    /// Quants held (0: none) and their tokens.
    len: usize,
    n: usize,
}

impl PackedFrom {
    /// Whether `xq`, `xs` of `n` tokens are the activations held.
    fn holds(&self, xq: &[i8], xs: &[f32], n: usize) -> bool {
        let scales: &[u32] = bytemuck::cast_slice(xs);
        self.len != 0
            && self.len == xq.len()
            && self.n == n
            && self.quants[..self.len] == *xq
            && self.scales[..scales.len()] == *scales
    }

    /// Keeps a copy of `xq`, `xs` of `n` tokens if they are few enough.
    fn keep(&mut self, xq: &[i8], xs: &[f32], n: usize) {
        if xq.len() > REUSE_QUANTS || xs.len() > REUSE_QUANTS / Q8_BLOCK {
            self.len = 0;
            return;
        }
        self.quants[..xq.len()].copy_from_slice(xq);
        self.scales[..xs.len()].copy_from_slice(bytemuck::cast_slice(xs));
        (self.len, self.n) = (xq.len(), n);
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            x: [[0; PACKED_BLOCK]; PACKED_BLOCKS],
            xs: [[0.0; LANES]; PACKED_BLOCKS],
            x_bias: [[0; LANES]; MAX_BLOCKS],
            bias: [[0; Q8_TILE_ROWS]; MAX_BLOCKS],
            ws: [[0.0; Q8_TILE_ROWS]; MAX_BLOCKS],
            paired: [[[[0; 8]; STEPS]; Q8_TILE_ROWS / 2]; MAX_BLOCKS],
            packed_from: PackedFrom {
                quants: [0; REUSE_QUANTS],
                scales: [0; REUSE_QUANTS / Q8_BLOCK],
                len: 0,
                n: 0,
            },
        })
    };
}

/// As [`crate::reference::matmul_q8`], for many tokens and at most
/// [`GEMM_MAX_COLS`] columns; bit for bit the same results as
/// `matmul_q8_vnni` (per output: blocks in order, the exact i32 block sum
/// converted to f32, one FMA with `w_scale × x_scale` per block), so an output
/// does not depend on the batch it was computed in.
///
/// `vpdpbusd` multiplies unsigned by signed bytes, so one operand is offset
/// by 128 and each block's i32 sum starts at minus 128 × the other's sum
/// (exact, no saturation: any i8 weights and activations). Whole vectors
/// offset the activations when packing them and start at `-128 Σw` of the
/// row, computed once per tile. The half vector (decode: one token of each of
/// up to 8 sequences) offsets the weights instead, in the paired copy it
/// makes of each tile anyway, and starts at `-128 Σx` of the token, computed
/// once per call: a tile then needs no sums of its weights (4 `vpdpbusd` and
/// a reduction per block, against its 32 `vpdpbusd` for 8 tokens) and a
/// block one bias load for all its rows. Both give the same i32 per lane.
///
/// Loops: passes over as many tokens as the scratch holds (one for up to 80
/// tokens of 1536 columns), tiles of 8 rows (a tile's weights stay in L1),
/// register tiles of the whole tile × up to [`TILE_VECTORS`] vectors of 16
/// tokens. A last vector of at most 8 tokens is a half vector: each token
/// takes two lanes, one per row of a pair of rows (see [`register_pairs`]), so
/// that 8 tokens (two threads' share of a 16-token prompt) fill the lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn gemm_q8(
    quants: &[i8],
    scales: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    if !crate::driver::matmul_out_checked(&rows, n, out, out_stride) {
        return;
    }
    assert!(cols > 0 && cols.is_multiple_of(Q8_BLOCK), "matmul_q8: cols {cols} is not a positive multiple of 32");
    assert!(cols <= GEMM_MAX_COLS, "gemm_q8: cols {cols} above {GEMM_MAX_COLS}");
    let nb = cols / Q8_BLOCK;
    let end_tile = rows.end.div_ceil(Q8_TILE_ROWS);
    let (quants, scales) =
        (&quants[..end_tile * nb * Q8_BLOCK * Q8_TILE_ROWS], &scales[..end_tile * nb * Q8_TILE_ROWS]);
    let (xq, xs) = (&x.quants[..n * cols], &x.scales[..n * nb]);
    let weights =
        Weights { blocks: bytemuck::cast_slice(quants), scales, nb, tiles: rows.start / Q8_TILE_ROWS..end_tile };
    let pass_tokens = PACKED_BLOCKS / nb * LANES;
    SCRATCH.with_borrow_mut(|scratch| {
        for t0 in (0..n).step_by(pass_tokens) {
            let tn = (n - t0).min(pass_tokens);
            let out = &mut out[t0 * out_stride..];
            let (xq, xs) = (&xq[t0 * cols..(t0 + tn) * cols], &xs[t0 * nb..(t0 + tn) * nb]);
            gemm_pass(&weights, &rows, xq, xs, tn, out, out_stride, scratch);
        }
    });
}

/// The weight tiles of a call: `blocks`/`scales` from tile 0, `nb` blocks a
/// tile, the call's `tiles`.
struct Weights<'a> {
    blocks: &'a [WeightBlock],
    scales: &'a [f16],
    nb: usize,
    tiles: Range<usize>,
}

/// One pass of [`gemm_q8`]: `n` tokens (`xq`, `xs`) that fit in the scratch,
/// token `t`'s row `r` (in `rows`) to `out[t * out_stride + r - rows.start]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn gemm_pass(
    weights: &Weights,
    rows: &Range<usize>,
    xq: &[i8],
    xs: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    scratch: &mut Scratch,
) {
    let Weights { blocks, scales, nb, .. } = *weights;
    let vectors = n.div_ceil(LANES);
    // Whether the last vector is a half vector.
    let half = (n - 1) % LANES < LANES / 2;
    let xp = &mut scratch.x[..vectors * nb];
    let xsp = &mut scratch.xs[..vectors * nb];
    let x_bias = &mut scratch.x_bias[..if half { nb } else { 0 }];
    if !scratch.packed_from.holds(xq, xs, n) {
        pack_acts(xq, xs, nb, n, half, xp, xsp, x_bias);
        scratch.packed_from.keep(xq, xs, n);
    }
    let (xp, xs, x_bias) = (&*xp, &*xsp, &*x_bias);
    let full_vectors = vectors - usize::from(half);
    // The weights' sums only for whole vectors (see `gemm_q8`).
    let (bias, ws) = (&mut scratch.bias[..if full_vectors > 0 { nb } else { 0 }], &mut scratch.ws[..nb]);
    let paired = &mut scratch.paired[..if half { nb } else { 0 }];

    for tile in weights.tiles.clone() {
        let wq = &blocks[tile * nb..][..nb];
        // The next tile's weights, pulled into L1 while this one is computed.
        let next = if tile + 1 < weights.tiles.end { &blocks[(tile + 1) * nb..][..nb] } else { &[] };
        prepare_tile(wq, &scales[tile * nb * Q8_TILE_ROWS..][..nb * Q8_TILE_ROWS], bias, ws, paired);
        let row0 = tile * Q8_TILE_ROWS;
        let mut dst = TileOut {
            out: &mut *out,
            stride: out_stride,
            col0: row0 as isize - rows.start as isize,
            live: rows.start.max(row0) - row0..rows.end.min(row0 + Q8_TILE_ROWS) - row0,
        };
        let mut v0 = 0;
        while v0 < full_vectors {
            let v = (full_vectors - v0).min(TILE_VECTORS);
            let (x, xs) = (&xp[v0 * nb..(v0 + v) * nb], &xs[v0 * nb..(v0 + v) * nb]);
            let prefetch = if v0 == 0 { next } else { &[] };
            let t0 = v0 * LANES;
            let tokens = (n - t0).min(v * LANES);
            match v {
                TILE_VECTORS => dst.write(&register_tile::<TILE_VECTORS>(wq, bias, ws, x, xs, prefetch), t0, tokens),
                _ => dst.write(&register_tile::<1>(wq, bias, ws, x, xs, prefetch), t0, tokens),
            }
            v0 += v;
        }
        if half {
            let (x, xs) = (&xp[v0 * nb..][..nb], &xs[v0 * nb..][..nb]);
            let prefetch = if v0 == 0 { next } else { &[] };
            dst.write_pairs(register_pairs(paired, x_bias, ws, x, xs, prefetch), v0 * LANES, n - v0 * LANES);
        }
    }
}

/// The most token vectors per register tile: 8 rows × 2 vectors = 16 i32
/// accumulators, 2 activation registers and a broadcast weight (per step 2
/// loads and 8 broadcasts feed 16 `vpdpbusd`); the 16 f32 accumulators fill
/// the remaining registers but for a few, which stay in L1. 3 vectors measured
/// no faster.
const TILE_VECTORS: usize = 2;

/// Where a tile's results go: row `r` of the tile for token `t` at
/// `out[t * stride + col0 + r]`, for the rows `r` in `live` only.
struct TileOut<'a> {
    out: &'a mut [f32],
    stride: usize,
    /// The tile's first row minus the call's first row (negative for a tile
    /// that starts before the range).
    col0: isize,
    live: Range<usize>,
}

impl TileOut<'_> {
    /// Writes `acc[r][v]` lane `t`, row `r` of the tile for token
    /// `t0 + 16 v + t`, for the first `tokens` tokens.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn write<const V: usize>(&mut self, acc: &[[__m512; V]; Q8_TILE_ROWS], t0: usize, tokens: usize) {
        for v in 0..V {
            let mut regs = [_mm512_setzero_si512(); Q8_TILE_ROWS];
            for (reg, acc) in regs.iter_mut().zip(acc) {
                *reg = _mm512_castps_si512(acc[v]);
            }
            // by_token[j]: token j's 8 rows, then token j + 8's.
            let by_token = transpose_16x8(regs).map(|r| _mm512_castsi512_ps(r));
            for t in 0..tokens.saturating_sub(v * LANES).min(LANES) {
                self.put(t0 + v * LANES + t, half_of(by_token[t % 8], t / 8));
            }
        }
    }

    /// Writes `acc[p]` lane `2 t + h`, row `2 p + h` of the tile for token
    /// `t0 + t`, for the first `tokens` (at most 8) tokens.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn write_pairs(&mut self, acc: [__m512; Q8_TILE_ROWS / 2], t0: usize, tokens: usize) {
        let a = acc.map(|a| _mm512_castps_si512(a));
        // Each token's two rows of pair p are 64-bit element t of acc[p].
        // u[i]: tokens 4i..4i + 4 of pairs 0 and 1 (then v[i]: pairs 2 and 3),
        // 128 bits per token.
        let lo = vec_i64([0, 8, 1, 9, 2, 10, 3, 11]);
        let hi = vec_i64([4, 12, 5, 13, 6, 14, 7, 15]);
        let u = [_mm512_permutex2var_epi64(a[0], lo, a[1]), _mm512_permutex2var_epi64(a[0], hi, a[1])];
        let v = [_mm512_permutex2var_epi64(a[2], lo, a[3]), _mm512_permutex2var_epi64(a[2], hi, a[3])];
        // by_pair[j]: token 2j's 8 rows, then token 2j + 1's.
        let first = vec_i64([0, 1, 8, 9, 2, 3, 10, 11]);
        let second = vec_i64([4, 5, 12, 13, 6, 7, 14, 15]);
        let by_pair = [
            _mm512_permutex2var_epi64(u[0], first, v[0]),
            _mm512_permutex2var_epi64(u[0], second, v[0]),
            _mm512_permutex2var_epi64(u[1], first, v[1]),
            _mm512_permutex2var_epi64(u[1], second, v[1]),
        ];
        for t in 0..tokens.min(LANES / 2) {
            self.put(t0 + t, half_of(_mm512_castsi512_ps(by_pair[t / 2]), t % 2));
        }
    }

    /// Writes the tile's rows in range of token `t` from `rows` (the tile's 8).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn put(&mut self, t: usize, rows: __m256) {
        // Row r of this token at out[row0 + r]; row0 is before the token's
        // first output when the tile starts before the range, but row0 + r is
        // not for the live rows (r >= live.start).
        let row0 = (t * self.stride) as isize + self.col0;
        if self.live == (0..Q8_TILE_ROWS) {
            store8(&mut self.out[row0 as usize..], rows);
        } else {
            let mut tmp = [0f32; Q8_TILE_ROWS];
            store8(&mut tmp, rows);
            let live = self.live.clone();
            let start = (row0 + live.start as isize) as usize;
            self.out[start..start + live.len()].copy_from_slice(&tmp[live]);
        }
    }
}

/// The low (`h = 0`) or high (`h = 1`) 8 lanes of `v`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn half_of(v: __m512, h: usize) -> __m256 {
    if h == 0 {
        _mm512_castps512_ps256(v)
    } else {
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)))
    }
}

/// The vector of the 8 values of `i`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn vec_i64(i: [i64; 8]) -> __m512i {
    _mm512_setr_epi64(i[0], i[1], i[2], i[3], i[4], i[5], i[6], i[7])
}

/// `bias[b][r] = -128 Σ_k wq[b][r][k]` (if not empty), `ws[b][r] = scales[b * 8 + r]`
/// as f32, and `paired[b]` (if not empty) block `b` with rows in pairs, offset
/// by 128.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn prepare_tile(
    wq: &[WeightBlock],
    scales: &[f16],
    bias: &mut [[i32; Q8_TILE_ROWS]],
    ws: &mut [[f32; Q8_TILE_ROWS]],
    paired: &mut [PairedBlock],
) {
    let offset = _mm512_set1_epi8(-128); // 0x80: as an unsigned byte, 128
    let to_row_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    // Register k holds rows 2k (steps 0-7) and 2k + 1; interleave their steps.
    let to_pairs = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
    for (b, (w, ws)) in wq.iter().zip(ws.iter_mut()).enumerate() {
        let bytes: &[i8; Q8_BLOCK * Q8_TILE_ROWS] = bytemuck::cast_ref(w);
        let w: [__m512i; 4] = std::array::from_fn(|k| load64_i8(&bytes[k * 2 * Q8_BLOCK..]));
        if let Some(paired) = paired.get_mut(b) {
            let paired: &mut [i8; Q8_BLOCK * Q8_TILE_ROWS] = bytemuck::cast_mut(paired);
            for (k, &w) in w.iter().enumerate() {
                store64_i8(&mut paired[k * 64..], _mm512_xor_si512(_mm512_permutexvar_epi32(to_pairs, w), offset));
            }
        }
        if let Some(bias) = bias.get_mut(b) {
            let sums = w.map(|w| _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, w));
            let sums = _mm256_permutevar8x32_epi32(reduce(sums), to_row_order);
            store8_i32(bias, _mm256_sub_epi32(_mm256_setzero_si256(), sums));
        }
        store8_f32(ws, load8_f16(&scales[b * Q8_TILE_ROWS..]));
    }
}

/// `acc[r][v]` lane `t`: the dot product of the tile's row `r` with token
/// `16 v + t` of `x`/`xs` (`V × nb` blocks), over every block in order.
/// Prefetches `prefetch` (empty, or as many blocks as `wq`) into L1.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn register_tile<const V: usize>(
    wq: &[WeightBlock],
    bias: &[[i32; Q8_TILE_ROWS]],
    ws: &[[f32; Q8_TILE_ROWS]],
    x: &[[i8; PACKED_BLOCK]],
    xs: &[[f32; LANES]],
    prefetch: &[WeightBlock],
) -> [[__m512; V]; Q8_TILE_ROWS] {
    const R: usize = Q8_TILE_ROWS;
    let nb = wq.len();
    let (bias, ws) = (&bias[..nb], &ws[..nb]);
    let (x, xs) = (&x[..V * nb], &xs[..V * nb]);
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    for b in 0..nb {
        if let Some(next) = prefetch.get(b) {
            for line in (0..size_of::<WeightBlock>()).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(next).cast::<i8>().wrapping_add(line));
            }
        }
        let w = &wq[b];
        let mut dot = [[_mm512_setzero_si512(); V]; R];
        for r in 0..R {
            for d in &mut dot[r] {
                *d = _mm512_set1_epi32(bias[b][r]);
            }
        }
        for k in 0..STEPS {
            let mut xv = [_mm512_setzero_si512(); V];
            for (v, xv) in xv.iter_mut().enumerate() {
                *xv = load64_i8(&x[v * nb + b][k * 64..]);
            }
            for r in 0..R {
                let wk = _mm512_set1_epi32(bytemuck::cast(w[r][k]));
                for v in 0..V {
                    dot[r][v] = _mm512_dpbusd_epi32(dot[r][v], xv[v], wk);
                }
            }
        }
        let mut x_scale = [_mm512_setzero_ps(); V];
        for (v, s) in x_scale.iter_mut().enumerate() {
            *s = load16(&xs[v * nb + b]);
        }
        for r in 0..R {
            let w_scale = _mm512_set1_ps(ws[b][r]);
            for v in 0..V {
                let scale = _mm512_mul_ps(w_scale, x_scale[v]);
                acc[r][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[r][v]), scale, acc[r][v]);
            }
        }
    }
    acc
}

/// The half-vector register tile: `acc[p]` lane `2 t + h`, the dot product
/// of the tile's row `2 p + h` with token `t` of `x`/`xs` (packed as a half
/// vector: token `t` in lanes `2t` and `2t + 1`, not offset; `x_bias` its
/// `-128 Σx`), over every block in order. A 64-bit broadcast of `paired`
/// (offset weights) holds a step of both rows of a pair; the float
/// operations per output are those of [`register_tile`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn register_pairs(
    paired: &[PairedBlock],
    x_bias: &[[i32; LANES]],
    ws: &[[f32; Q8_TILE_ROWS]],
    x: &[[i8; PACKED_BLOCK]],
    xs: &[[f32; LANES]],
    prefetch: &[WeightBlock],
) -> [__m512; Q8_TILE_ROWS / 2] {
    const P: usize = Q8_TILE_ROWS / 2;
    let nb = paired.len();
    let (x_bias, ws, x, xs) = (&x_bias[..nb], &ws[..nb], &x[..nb], &xs[..nb]);
    let mut acc = [_mm512_setzero_ps(); P];
    for b in 0..nb {
        if let Some(next) = prefetch.get(b) {
            for line in (0..size_of::<WeightBlock>()).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(next).cast::<i8>().wrapping_add(line));
            }
        }
        let ws_pairs: &[[f32; 2]; P] = bytemuck::cast_ref(&ws[b]);
        // Two chains per pair (even and odd steps): 8 chains of 4 `vpdpbusd`
        // rather than 4 of 8, which would leave the units waiting on latency.
        let bias = load16_i32(&x_bias[b]);
        let mut dot = [[bias, _mm512_setzero_si512()]; P];
        for k in 0..STEPS {
            let xv = load64_i8(&x[b][k * 64..]);
            for p in 0..P {
                let wk = _mm512_set1_epi64(bytemuck::cast(paired[b][p][k]));
                dot[p][k % 2] = _mm512_dpbusd_epi32(dot[p][k % 2], wk, xv);
            }
        }
        let x_scale = load16(&xs[b]);
        for p in 0..P {
            let w_scale = _mm512_castsi512_ps(_mm512_set1_epi64(bytemuck::cast(ws_pairs[p])));
            let scale = _mm512_mul_ps(w_scale, x_scale);
            let dot = _mm512_add_epi32(dot[p][0], dot[p][1]);
            acc[p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[p]);
        }
    }
    acc
}

/// Packs `n` tokens' activations (`xq`: `n × 32 nb` quants, `xs`: `n × nb`
/// scales) into `out` and `out_scales` (see [`Scratch`]); if `half`, the last
/// vector as a half vector (token `t` in lanes `2t` and `2t + 1`, not offset)
/// with its `-128 Σx` per block and lane in `x_bias`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pack_acts(
    xq: &[i8],
    xs: &[f32],
    nb: usize,
    n: usize,
    half: bool,
    out: &mut [[i8; PACKED_BLOCK]],
    out_scales: &mut [[f32; LANES]],
    x_bias: &mut [[i32; LANES]],
) {
    let cols = nb * Q8_BLOCK;
    let vectors = n.div_ceil(LANES);
    let offset = _mm512_set1_epi8(-128);
    let twice = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    for (g, (out, out_scales)) in out.chunks_exact_mut(nb).zip(out_scales.chunks_exact_mut(nb)).enumerate() {
        let t0 = g * LANES;
        let pairs = half && g == vectors - 1;
        let token = |t: usize, b: usize| {
            if t0 + t < n {
                load32_i8(&xq[(t0 + t) * cols + b * Q8_BLOCK..])
            } else {
                _mm256_setzero_si256()
            }
        };
        for (b, (out, out_scales)) in out.iter_mut().zip(out_scales.iter_mut()).enumerate() {
            // Register j: token j's block (8 groups of 4 quants), then token j + 8's.
            let mut regs = [_mm512_setzero_si512(); 8];
            for (j, reg) in regs.iter_mut().enumerate() {
                *reg = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(token(j, b)), token(j + 8, b));
            }
            if pairs {
                let mut sum = _mm512_setzero_si512();
                for (k, reg) in transpose_16x8(regs).into_iter().enumerate() {
                    let reg = _mm512_permutexvar_epi32(twice, reg);
                    sum = _mm512_dpbusd_epi32(sum, offset, reg);
                    store64_i8(&mut out[k * 64..], reg);
                }
                store16_i32(&mut x_bias[b], _mm512_sub_epi32(_mm512_setzero_si512(), sum));
            } else {
                for (k, reg) in transpose_16x8(regs).into_iter().enumerate() {
                    store64_i8(&mut out[k * 64..], _mm512_xor_si512(reg, offset));
                }
            }
            for (l, s) in out_scales.iter_mut().enumerate() {
                let t = if pairs { l / 2 } else { l };
                *s = if t0 + t < n { xs[(t0 + t) * nb + b] } else { 0.0 };
            }
        }
    }
}

/// The transpose of a 16 × 8 matrix of i32: register `j` of `a` holds rows
/// `j` (low 8 lanes) and `j + 8` (high 8 lanes), register `k` of the result
/// column `k` (lane `t`: row `t`). It is its own inverse: from 8 registers of
/// 16 lanes it gives, in register `j`, lane `j` of each then lane `j + 8` of
/// each.
///
/// The element of row `t`, column `k` starts in register `t mod 8`, lane
/// `8 (t / 8) + k`. Each stage exchanges one bit of the register index with
/// the same bit of the lane index, bits 2, 1 and 0 in turn, which moves it to
/// register `k`, lane `t`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn transpose_16x8(a: [__m512i; 8]) -> [__m512i; 8] {
    let a = swap_bit::<2>(a);
    let a = swap_bit::<1>(a);
    swap_bit::<0>(a)
}

/// One stage of [`transpose_16x8`]: exchanges bit `Q` of the register index
/// with bit `Q` of the lane index, one pair of registers (`j`, `j | 2^Q`) at a
/// time.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn swap_bit<const Q: usize>(a: [__m512i; 8]) -> [__m512i; 8] {
    let bit = 1 << Q;
    let (lo, hi) = (vec_i32(const { swap_index(Q, 0) }), vec_i32(const { swap_index(Q, 1) }));
    let mut out = a;
    for j in (0..8).filter(|j| j & bit == 0) {
        out[j] = _mm512_permutex2var_epi32(a[j], lo, a[j | bit]);
        out[j | bit] = _mm512_permutex2var_epi32(a[j], hi, a[j | bit]);
    }
    out
}

/// The `permutex2var` indices of [`swap_bit`] for the output register whose
/// bit `q` is `h`: its lane `l` comes from the register whose bit `q` is bit
/// `q` of `l` (indices 16.. select the second source), lane `l` with bit `q`
/// set to `h`.
const fn swap_index(q: usize, h: usize) -> [i32; LANES] {
    let mut index = [0; LANES];
    let mut l = 0;
    while l < LANES {
        index[l] = ((l >> q & 1) * 16 + (l & !(1 << q) | h << q)) as i32;
        l += 1;
    }
    index
}

/// The vector of the 16 values of `i`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn vec_i32(i: [i32; LANES]) -> __m512i {
    _mm512_setr_epi32(
        i[0], i[1], i[2], i[3], i[4], i[5], i[6], i[7], i[8], i[9], i[10], i[11], i[12], i[13], i[14], i[15],
    )
}

/// Stores 64 i8 to the front of `s`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn store64_i8(s: &mut [i8], v: __m512i) {
    let a: &mut [i8; 64] = s.first_chunk_mut().expect("store64_i8: fewer than 64 values");
    // SAFETY: `a` is 64 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm512_storeu_si512(a.as_mut_ptr().cast(), v) }
}

/// 16 i32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load16_i32(a: &[i32; LANES]) -> __m512i {
    // SAFETY: `a` is 16 readable i32 (64 bytes); `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(a.as_ptr().cast()) }
}

/// Stores 16 i32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn store16_i32(a: &mut [i32; LANES], v: __m512i) {
    // SAFETY: `a` is 16 writable i32 (64 bytes); `storeu` has no alignment requirement.
    unsafe { _mm512_storeu_si512(a.as_mut_ptr().cast(), v) }
}

/// Stores 8 i32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn store8_i32(a: &mut [i32; 8], v: __m256i) {
    // SAFETY: `a` is 8 writable i32 (32 bytes); `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(a.as_mut_ptr().cast(), v) }
}

/// Stores 8 f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn store8_f32(a: &mut [f32; 8], v: __m256) {
    // SAFETY: `a` is 8 writable f32 (32 bytes); `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) }
}
