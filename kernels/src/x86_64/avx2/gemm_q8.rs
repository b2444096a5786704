//! The AVX2 q8 GEMM (prefill: many tokens per call), without VNNI. The GEMV
//! tile in `matmul` dots each row's 32-quant block with a token's block in one
//! register and then needs horizontal adds to gather 8 rows' sums; here the
//! rows sit in lanes instead, so a block needs no horizontal sum.
//!
//! Once per tile of 8 interleaved rows (the driver's first token group), its
//! weights are repacked into scratch as `[block][step][row][4 quants]`: one
//! register holds 4 consecutive quants of each of the 8 rows (a step), kept
//! twice, as `|w|` and as `w` (for the sign trick below). Per step and token
//! the token's 4 quants are broadcast to every lane from memory; `maddubs`
//! and `madd` give each row's 4 products summed in one i32 lane. The register
//! tile is 8 rows × 4 tokens (the driver's token groups): per block 8 steps ×
//! 4 tokens of `sign, maddubs, madd, add` into 4 i32 sums, then per token one
//! convert and one FMA as the GEMV does, so the results are the GEMV's bit for
//! bit and an output does not depend on the batch it was computed in.

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::ops::Range;

use half::f16;

use super::simd::{load32_i8, load8_f16, store8};
use crate::driver::q8::{self, Q8Tile, TileSums};
use crate::{Q8Acts, Q8_BLOCK, Q8_TILE_ROWS};

/// Steps of 4 columns per block.
const STEPS: usize = Q8_BLOCK / 4;
/// One step of a repacked tile: `[row in tile][4 quants]`.
type Step = [i8; 4 * Q8_TILE_ROWS];

/// The most blocks of 32 columns a matrix may have for [`gemm_q8`] (8192
/// columns): the repacked tile's scratch holds this many.
const MAX_BLOCKS: usize = 256;
/// The widest matrix [`gemm_q8`] takes; `matmul_q8` runs wider ones on the GEMV.
pub(super) const GEMM_MAX_COLS: usize = MAX_BLOCKS * Q8_BLOCK;

/// One tile's weights repacked, per thread, in fixed-size thread-local arrays
/// (128 KiB) rather than vectors: a prefill after the first (the context shift
/// of a long generation) must not allocate. A tile of 1536 columns uses 24 KiB.
struct Repacked {
    /// `|w|` as u8 (so -128 is 128), `[block][step]`.
    abs: [[Step; STEPS]; MAX_BLOCKS],
    /// `w`, `[block][step]`: its signs move onto the activations.
    signed: [[Step; STEPS]; MAX_BLOCKS],
}

thread_local! {
    static REPACKED: RefCell<Repacked> = const {
        RefCell::new(Repacked {
            abs: [[[0; 4 * Q8_TILE_ROWS]; STEPS]; MAX_BLOCKS],
            signed: [[[0; 4 * Q8_TILE_ROWS]; STEPS]; MAX_BLOCKS],
        })
    };
}

/// As [`crate::reference::matmul_q8`], for at most [`GEMM_MAX_COLS`] columns;
/// bit for bit the same results as `matmul_q8`'s GEMV (per output: blocks in
/// order, the exact i32 block sum converted to f32, one FMA with
/// `w_scale × x_scale` per block).
///
/// Sign trick: `maddubs` multiplies unsigned by signed bytes, so it gets `|w|`
/// and `x` with `w`'s sign. A pair of products is at most 2 × 128 × 127 =
/// 32512 and never saturates the i16; the same limit as the GEMV's on the
/// activations (in [-127, 127]) applies.
#[target_feature(enable = "avx2,fma,f16c")]
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
    assert!(cols <= GEMM_MAX_COLS, "gemm_q8: cols {cols} above {GEMM_MAX_COLS}");
    REPACKED.with_borrow_mut(|repacked| {
        q8::matmul(quants, scales, cols, rows, x, n, out, out_stride, |tile, sums| {
            if tile.first {
                repack_tile(tile.wq, tile.nb, repacked);
            }
            match tile.tokens {
                4 => register_tile::<4>(&tile, repacked, sums),
                3 => register_tile::<3>(&tile, repacked, sums),
                2 => register_tile::<2>(&tile, repacked, sums),
                _ => register_tile::<1>(&tile, repacked, sums),
            }
        });
    });
}

/// Repacks the tile's `nb` blocks (`wq`: `[block][row][32]`) into `repacked`:
/// per block a transpose of 8 rows × 8 steps of 4 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn repack_tile(wq: &[i8], nb: usize, repacked: &mut Repacked) {
    let blocks = wq.chunks_exact(Q8_BLOCK * Q8_TILE_ROWS).take(nb);
    for ((block, abs), signed) in blocks.zip(&mut repacked.abs).zip(&mut repacked.signed) {
        let rows: [__m256i; Q8_TILE_ROWS] = std::array::from_fn(|r| load32_i8(&block[r * Q8_BLOCK..]));
        for (k, step) in transpose_8x8(rows).into_iter().enumerate() {
            store32(&mut signed[k], step);
            store32(&mut abs[k], _mm256_sign_epi8(step, step));
        }
    }
}

/// The transpose of an 8 × 8 matrix of 32-bit elements (register `r`, lane
/// `k` to register `k`, lane `r`): unpacks of 32 and 64 bits within each
/// 128-bit half, then the halves exchanged.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn transpose_8x8(r: [__m256i; 8]) -> [__m256i; 8] {
    // t[2i]: rows 2i, 2i + 1 of lanes 0, 1 (and 4, 5); t[2i + 1]: of lanes 2, 3 (6, 7).
    let t: [__m256i; 8] = std::array::from_fn(|j| {
        let (a, b) = (r[j & !1], r[j | 1]);
        if j % 2 == 0 {
            _mm256_unpacklo_epi32(a, b)
        } else {
            _mm256_unpackhi_epi32(a, b)
        }
    });
    // u[4h + m]: rows 4h..4h + 4 of lane m (low half) and m + 4 (high half).
    let u: [__m256i; 8] = std::array::from_fn(|j| {
        let (h, m) = (j / 4, j % 4);
        let (a, b) = (t[4 * h + m / 2], t[4 * h + 2 + m / 2]);
        if m % 2 == 0 {
            _mm256_unpacklo_epi64(a, b)
        } else {
            _mm256_unpackhi_epi64(a, b)
        }
    });
    std::array::from_fn(|k| {
        if k < 4 {
            _mm256_permute2x128_si256::<0x20>(u[k], u[4 + k])
        } else {
            _mm256_permute2x128_si256::<0x31>(u[k - 4], u[k])
        }
    })
}

/// One tile of 8 rows against `T` tokens from the repacked weights:
/// `sums[t][r]` = row `r` · token `t`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn register_tile<const T: usize>(tile: &Q8Tile, repacked: &Repacked, sums: &mut TileSums) {
    let Q8Tile { ws, xq, xs, nb, .. } = *tile;
    let cols = nb * Q8_BLOCK;
    let ones = _mm256_set1_epi16(1);
    let (abs, signed) = (&repacked.abs[..nb], &repacked.signed[..nb]);
    // Each token's blocks as arrays, so a step's 4 quants need no bounds check.
    let x: [&[[i8; Q8_BLOCK]]; T] = std::array::from_fn(|t| xq[t * cols..][..cols].as_chunks().0);
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        let mut dot = [_mm256_setzero_si256(); T];
        for k in 0..STEPS {
            let (w_abs, w) = (load32(&abs[b][k]), load32(&signed[b][k]));
            for t in 0..T {
                let steps: &[[i8; 4]; STEPS] = bytemuck::cast_ref(&x[t][b]);
                let xk = _mm256_set1_epi32(bytemuck::cast(steps[k]));
                let prod = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(xk, w));
                dot[t] = _mm256_add_epi32(dot[t], _mm256_madd_epi16(prod, ones));
            }
        }
        let w_scales = load8_f16(&ws[b * Q8_TILE_ROWS..]);
        for t in 0..T {
            let scale = _mm256_mul_ps(w_scales, _mm256_set1_ps(xs[t * nb + b]));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[t]), scale, acc[t]);
        }
    }
    for (sums, &acc) in sums.iter_mut().zip(&acc) {
        store8(sums, acc);
    }
}

/// One repacked step.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load32(s: &Step) -> __m256i {
    // SAFETY: `s` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// Stores one repacked step.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store32(s: &mut Step, v: __m256i) {
    // SAFETY: `s` is 32 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(s.as_mut_ptr().cast(), v) }
}
