//! The AVX2 q8 GEMM (prefill: many tokens per call), without VNNI. The GEMV
//! tile in `matmul` dots each row's 32-quant block with a token's block in one
//! register and then needs horizontal adds to gather 8 rows' sums; here the
//! rows sit in lanes instead, so a block needs no horizontal sum.
//!
//! Once per pair of adjacent tiles of 8 interleaved rows (the driver's first
//! token group, [`q8::matmul_pairs`]), their weights are repacked into scratch
//! as `[block][step][tile][row][4 quants]`: one register holds 4 consecutive
//! quants of each of a tile's 8 rows (a step), kept twice, as `|w|` and as `w`
//! (for the sign trick below). Per step and token the token's 4 quants are
//! broadcast to every lane from memory, once for both tiles; `maddubs` and
//! `madd` give each row's 4 products summed in one i32 lane. The register tile
//! is 16 rows × 4 tokens: per block 8 steps × 4 tokens × 2 tiles of `sign,
//! maddubs, madd, add` into 8 i32 sums, then per token and tile one convert
//! and one FMA as the GEMV does, so the results are the GEMV's bit for bit and
//! an output does not depend on the batch it was computed in. With
//! AVX-VNNI one `vpdpbusd` replaces `maddubs, madd, add` (`gemm_q8_vnni`).

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::ops::Range;

use half::f16;

use super::simd::{load32_i8, load8_f16, store8};
use crate::driver::q8::{self, PairSums, Q8Tiles, PAIR};
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

/// Two tiles' weights repacked, per thread, in fixed-size thread-local
/// arrays (256 KiB) rather than vectors: a prefill after the first (the
/// context shift of a long generation) must not allocate. Two tiles of 1536
/// columns use 48 KiB.
struct Repacked {
    /// `|w|` as u8 (so -128 is 128), `[block][step][tile in pair]`.
    abs: [[[Step; PAIR]; STEPS]; MAX_BLOCKS],
    /// `w`, `[block][step][tile in pair]`: its signs move onto the activations.
    signed: [[[Step; PAIR]; STEPS]; MAX_BLOCKS],
}

thread_local! {
    static REPACKED: RefCell<Repacked> = const {
        RefCell::new(Repacked {
            abs: [[[[0; 4 * Q8_TILE_ROWS]; PAIR]; STEPS]; MAX_BLOCKS],
            signed: [[[[0; 4 * Q8_TILE_ROWS]; PAIR]; STEPS]; MAX_BLOCKS],
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
    let ones = _mm256_set1_epi16(1);
    let step = |acc, w_abs, w, x| {
        let pairs = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(x, w));
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones))
    };
    gemm(quants, scales, cols, rows, x, n, out, out_stride, step);
}

/// [`gemm_q8`] with AVX-VNNI (the 256-bit VEX `vpdpbusd` of Intel Alder Lake
/// and later, AMD Zen 5): one instruction per step and token in place of
/// `maddubs`, `madd` and `add`. `vpdpbusd` sums 4 products into each i32
/// exactly (no i16 stage to saturate), so the block sums, and so the results,
/// are [`gemm_q8`]'s bit for bit.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(super) fn gemm_q8_vnni(
    quants: &[i8],
    scales: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let step = |acc, w_abs, w, x| _mm256_dpbusd_avx_epi32(acc, w_abs, _mm256_sign_epi8(x, w));
    gemm(quants, scales, cols, rows, x, n, out, out_stride, step);
}

/// The GEMM with `step(acc, |w|, w, x)` adding, per i32 lane (row), the dot
/// product of one step's 4 weight quants with the token's 4 quants `x`
/// (broadcast to every lane). Each entry point defines its `step` with its
/// own features; `gemm` is inlined into it, and the step into `gemm` there.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn gemm(
    quants: &[i8],
    scales: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    step: impl Fn(__m256i, __m256i, __m256i, __m256i) -> __m256i + Copy,
) {
    assert!(cols <= GEMM_MAX_COLS, "gemm_q8: cols {cols} above {GEMM_MAX_COLS}");
    REPACKED.with_borrow_mut(|repacked| {
        q8::matmul_pairs(quants, scales, cols, rows, x, n, out, out_stride, |tiles, sums| {
            if tiles.first {
                repack_tiles(&tiles, repacked);
            }
            if tiles.tiles == PAIR {
                match tiles.tokens {
                    4 => register_tile::<4, 2>(&tiles, repacked, sums, step),
                    3 => register_tile::<3, 2>(&tiles, repacked, sums, step),
                    2 => register_tile::<2, 2>(&tiles, repacked, sums, step),
                    _ => register_tile::<1, 2>(&tiles, repacked, sums, step),
                }
            } else {
                match tiles.tokens {
                    4 => register_tile::<4, 1>(&tiles, repacked, sums, step),
                    3 => register_tile::<3, 1>(&tiles, repacked, sums, step),
                    2 => register_tile::<2, 1>(&tiles, repacked, sums, step),
                    _ => register_tile::<1, 1>(&tiles, repacked, sums, step),
                }
            }
        });
    });
}

/// Repacks the tiles' `nb` blocks each (`wq`: `[tile][block][row][32]`) into
/// `repacked`: per block a transpose of 8 rows × 8 steps of 4 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn repack_tiles(tiles: &Q8Tiles, repacked: &mut Repacked) {
    let nb = tiles.nb;
    for (h, wq) in tiles.wq.chunks_exact(nb * Q8_BLOCK * Q8_TILE_ROWS).enumerate() {
        let blocks = wq.chunks_exact(Q8_BLOCK * Q8_TILE_ROWS);
        for ((block, abs), signed) in blocks.zip(&mut repacked.abs).zip(&mut repacked.signed) {
            // A loop, not `array::from_fn`: a closure with target features
            // is not inlined into it.
            let mut rows = [_mm256_setzero_si256(); Q8_TILE_ROWS];
            for (r, row) in rows.iter_mut().enumerate() {
                *row = load32_i8(&block[r * Q8_BLOCK..]);
            }
            for (k, step) in transpose_8x8(rows).into_iter().enumerate() {
                store32(&mut signed[k][h], step);
                store32(&mut abs[k][h], _mm256_sign_epi8(step, step));
            }
        }
    }
}

/// The transpose of an 8 × 8 matrix of 32-bit elements (register `r`, lane
/// `k` to register `k`, lane `r`): unpacks of 32 and 64 bits within each
/// 128-bit half, then the halves exchanged.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn transpose_8x8(r: [__m256i; 8]) -> [__m256i; 8] {
    // Loops, not `array::from_fn`: a closure with target features is not
    // inlined into it.
    // t[2i]: rows 2i, 2i + 1 of lanes 0, 1 (and 4, 5); t[2i + 1]: of lanes 2, 3 (6, 7).
    let mut t = [_mm256_setzero_si256(); 8];
    for (j, t) in t.iter_mut().enumerate() {
        let (a, b) = (r[j & !1], r[j | 1]);
        *t = if j % 2 == 0 { _mm256_unpacklo_epi32(a, b) } else { _mm256_unpackhi_epi32(a, b) };
    }
    // u[4h + m]: rows 4h..4h + 4 of lane m (low half) and m + 4 (high half).
    let mut u = [_mm256_setzero_si256(); 8];
    for (j, u) in u.iter_mut().enumerate() {
        let (h, m) = (j / 4, j % 4);
        let (a, b) = (t[4 * h + m / 2], t[4 * h + 2 + m / 2]);
        *u = if m % 2 == 0 { _mm256_unpacklo_epi64(a, b) } else { _mm256_unpackhi_epi64(a, b) };
    }
    let mut out = [_mm256_setzero_si256(); 8];
    for (k, out) in out.iter_mut().enumerate() {
        *out = if k < 4 {
            _mm256_permute2x128_si256::<0x20>(u[k], u[4 + k])
        } else {
            _mm256_permute2x128_si256::<0x31>(u[k - 4], u[k])
        };
    }
    out
}

/// `H` tiles of 8 rows against `T` tokens from the repacked weights:
/// `sums[h][t][r]` = row `r` of tile `h` · token `t`. Per step, `T`
/// broadcasts of a token's 4 quants and `2 H` loads of weights feed `T H`
/// steps: at `H` = 2, `T` = 4 that is 8 i32 sums in registers, each broadcast
/// used twice.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn register_tile<const T: usize, const H: usize>(
    tiles: &Q8Tiles,
    repacked: &Repacked,
    sums: &mut PairSums,
    step: impl Fn(__m256i, __m256i, __m256i, __m256i) -> __m256i,
) {
    let Q8Tiles { ws, xq, xs, nb, .. } = *tiles;
    let (abs, signed) = (&repacked.abs[..nb], &repacked.signed[..nb]);
    // The tokens' blocks as arrays, so a step's 4 quants need no bounds check.
    // (Not one slice per token from `array::from_fn`: a closure with target
    // features is not inlined into it, and that call cost 9% of a prefill.)
    let x = &xq.as_chunks::<Q8_BLOCK>().0[..T * nb];
    let xs = &xs[..T * nb];
    // Each tile's scales, `[block][row in tile]` (a loop, not `from_fn`: see above).
    let mut tile_ws: [&[f16]; H] = [&[]; H];
    for (h, tile_ws) in tile_ws.iter_mut().enumerate() {
        *tile_ws = &ws[h * nb * Q8_TILE_ROWS..][..nb * Q8_TILE_ROWS];
    }
    let mut acc = [[_mm256_setzero_ps(); H]; T];
    for b in 0..nb {
        let mut dot = [[_mm256_setzero_si256(); H]; T];
        let (abs, signed) = (&abs[b], &signed[b]);
        for k in 0..STEPS {
            let mut w_abs = [_mm256_setzero_si256(); H];
            let mut w = [_mm256_setzero_si256(); H];
            for h in 0..H {
                w_abs[h] = load32(&abs[k][h]);
                w[h] = load32(&signed[k][h]);
            }
            for t in 0..T {
                let steps: &[[i8; 4]; STEPS] = bytemuck::cast_ref(&x[t * nb + b]);
                let xk = _mm256_set1_epi32(bytemuck::cast(steps[k]));
                for h in 0..H {
                    dot[t][h] = step(dot[t][h], w_abs[h], w[h], xk);
                }
            }
        }
        let mut w_scales = [_mm256_setzero_ps(); H];
        for h in 0..H {
            w_scales[h] = load8_f16(&tile_ws[h][b * Q8_TILE_ROWS..]);
        }
        for t in 0..T {
            let x_scale = _mm256_set1_ps(xs[t * nb + b]);
            for h in 0..H {
                let scale = _mm256_mul_ps(w_scales[h], x_scale);
                acc[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[t][h]), scale, acc[t][h]);
            }
        }
    }
    for h in 0..H {
        for t in 0..T {
            store8(&mut sums[h][t], acc[t][h]);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// [`gemm`] with the EVEX form of the same `vpdpbusd` (AVX-512 VNNI + VL),
    /// so that [`gemm_q8_vnni`]'s step runs on CPUs that have AVX-512 VNNI
    /// but not AVX-VNNI (AMD Zen 4).
    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    fn gemm_q8_evex(
        quants: &[i8],
        scales: &[f16],
        cols: usize,
        rows: Range<usize>,
        x: &Q8Acts,
        n: usize,
        out: &mut [f32],
    ) {
        let step = |acc, w_abs, w, x| _mm256_dpbusd_epi32(acc, w_abs, _mm256_sign_epi8(x, w));
        gemm(quants, scales, cols, rows.clone(), x, n, out, rows.len(), step);
    }

    /// xorshift64*: the same values on every run.
    fn random(seed: &mut u64) -> u64 {
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The VNNI step gives `maddubs`'s bits (both are exact block sums), on
    /// extreme quants too: -128 and 127 weights against ±127 activations.
    #[test]
    fn vnni_step_matches_maddubs() {
        let has = |f: &str| match f {
            "avx512vnni" => is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl"),
            _ => is_x86_feature_detected!("avxvnni"),
        };
        if !super::super::is_available() || !(has("avx512vnni") || has("avxvnni")) {
            println!("skipped: no VNNI (AVX-VNNI or AVX-512 VNNI + VL) on this CPU");
            return;
        }
        let mut seed = 0x5EED_u64;
        for (rows, cols, n) in [(8usize, 32usize, 4usize), (24, 576, 9), (17, 1536, 64), (40, 8192, 5)] {
            let tiles = rows.div_ceil(Q8_TILE_ROWS);
            let extreme = |r: u64| match r % 8 {
                0 => -128,
                1 => 127,
                _ => (r >> 8) as i8,
            };
            let quants: Vec<i8> = (0..tiles * Q8_TILE_ROWS * cols).map(|_| extreme(random(&mut seed))).collect();
            let scales: Vec<f16> = (0..tiles * Q8_TILE_ROWS * cols / Q8_BLOCK)
                .map(|_| f16::from_f32((random(&mut seed) % 1000) as f32 / 5e4))
                .collect();
            let xq: Vec<i8> = (0..n * cols).map(|_| ((random(&mut seed) % 255) as i32 - 127) as i8).collect();
            let xs: Vec<f32> = (0..n * cols / Q8_BLOCK).map(|_| (random(&mut seed) % 1000) as f32 / 1e4).collect();
            let x = Q8Acts { cols, quants: &xq, scales: &xs, sums: &[] };
            let mut want = vec![0f32; n * rows];
            let mut got = vec![f32::NAN; n * rows];
            // SAFETY: AVX2, FMA and F16C checked above (`is_available`).
            unsafe { gemm_q8(&quants, &scales, cols, 0..rows, &x, n, &mut want, rows) };
            if has("avxvnni") {
                // SAFETY: AVX-VNNI checked above.
                unsafe { gemm_q8_vnni(&quants, &scales, cols, 0..rows, &x, n, &mut got, rows) };
            } else {
                // SAFETY: AVX-512 VNNI and VL checked above.
                unsafe { gemm_q8_evex(&quants, &scales, cols, 0..rows, &x, n, &mut got) };
            }
            let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(same, "VNNI GEMM differs from maddubs at {rows}x{cols} n {n}");
        }
    }
}
