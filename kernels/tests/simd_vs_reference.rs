//! Every SIMD kernel table this CPU can run, against the scalar reference.
//!
//! Each test runs every instruction set `Kernels::for_isa` returns on this CPU
//! (not only the one `best()` picks) and prints a "skipped" line for the others.
//! Data is random (seeded xorshift) at awkward sizes, plus edge cases.
//!
//! Error budgets (all relative to the magnitude of the terms, so they stay
//! tight whatever the data's scale):
//! - bit-exact: `quantize_q8_acts` (quants and scales), `rope`, `add`;
//! - matmuls: `|got - want| <= 1e-5 × Σ|terms|` (f32/f16: the products
//!   `w·x`; q8: the per-block `w_scale·x_scale·isum`); the SIMD kernels sum in
//!   a different order (f32/f16) or fuse one multiply-add per block (q8);
//! - norms: `1e-5 × |terms|` of each output (`|x - shift| · inv · |w| + |b|`);
//! - softmax, swiglu, gelu: `1e-5 × |want|` plus an absolute `1e-7` (softmax),
//!   `1e-6 × |u|` (gelu), `1e-30` (swiglu), covering the vectorized `exp`
//!   (about 2 ulp) and its flush to 0 / inf just inside f32's range;
//! - attention: `2e-6 × (1 + L) × Σ_j p_j·|v_j|` per output, `L` the row's
//!   largest `Σ_i |q_i k_i| / sqrt(d)` (score rounding is relative to it and
//!   `exp` makes it a relative error of the weights); about 4× the largest
//!   difference seen. Against a naive f64 softmax (every table, scalar
//!   included): `1e-6 ×` the same, about 5× the largest seen. A row's output
//!   must not depend on the other rows of the call: bit-exact.

mod common;

use std::ops::Range;

use common::{assert_bits, assert_close, random_acts, row_ranges, tables, Rng};
use gpt_fast_kernels::{
    reference, Acts, Attention, AttnShape, DType, Kernels, Matrix, Q8Acts, Role, Q8_BLOCK, Q8_TILE_ROWS,
};
use half::f16;

// ---------------------------------------------------------------- q8 matmul

/// `k`'s q8 matmul, reached through its dtype table as the model reaches it.
#[allow(clippy::too_many_arguments)]
fn table_matmul_q8(
    k: &Kernels,
    quants: &[i8],
    scales: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    n: usize,
    out: &mut [f32],
    stride: usize,
) {
    // The stored tensor is the two planes back to back, 8-byte aligned.
    let mut words = vec![0u64; (quants.len() + 2 * scales.len()).div_ceil(8)];
    let bytes = bytemuck::cast_slice_mut::<u64, u8>(&mut words);
    bytes[..quants.len()].copy_from_slice(bytemuck::cast_slice(quants));
    bytes[quants.len()..][..2 * scales.len()].copy_from_slice(bytemuck::cast_slice(scales));
    let padded_rows = scales.len() / (cols / Q8_BLOCK);
    let data = &bytes[..quants.len() + 2 * scales.len()];
    let w = Matrix { rows: padded_rows, cols, dtype: DType::Q8, data };
    k.matmul(&w, rows, &Acts { x: &[], q8: *x }, n, out, stride);
}

/// `k`'s f32 or f16 matmul for tokens of `role`, through its dtype table.
#[allow(clippy::too_many_arguments)]
fn table_matmul_float<W: bytemuck::Pod>(
    k: &Kernels,
    role: Role,
    dtype: DType,
    w: &[W],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    stride: usize,
) {
    let w = Matrix { rows: w.len() / cols, cols, dtype, data: bytemuck::cast_slice(w) };
    let q8 = Q8Acts { cols, quants: &[], scales: &[], sums: &[] };
    k.matmul_as(role, &w, rows, &Acts { x, q8 }, n, out, stride);
}

/// Both roles, each with its own summation order on the SIMD tables.
const ROLES: [Role; 2] = [Role::Prefill, Role::Decode];

/// A packed q8 matrix (docs/FORMAT.md) with random quants and scales, including
/// all-zero blocks, ±127 blocks and extreme scales; padding rows are zero.
fn random_q8(rng: &mut Rng, rows: usize, cols: usize) -> (Vec<i8>, Vec<f16>) {
    let (tiles, nb) = (rows.div_ceil(Q8_TILE_ROWS), cols / Q8_BLOCK);
    let mut quants = vec![0i8; tiles * nb * Q8_TILE_ROWS * Q8_BLOCK];
    let mut scales = vec![f16::ZERO; tiles * nb * Q8_TILE_ROWS];
    for row in 0..rows {
        let (tile, lane) = (row / Q8_TILE_ROWS, row % Q8_TILE_ROWS);
        for b in 0..nb {
            let group = (tile * nb + b) * Q8_TILE_ROWS + lane;
            let q = &mut quants[group * Q8_BLOCK..][..Q8_BLOCK];
            let kind = rng.below(10);
            for v in q.iter_mut() {
                *v = match kind {
                    0 => 0,
                    1 => 127,
                    2 => -127,
                    3 => [127, -127][rng.below(2)],
                    _ => rng.i8_127(),
                };
            }
            scales[group] = f16::from_f32(match rng.below(12) {
                0 => 65504.0,
                1 => 6.0e-8, // subnormal f16
                2 => 6.1e-5,
                3 => 0.0,
                _ => (rng.f32().abs() + 0.01) * 0.05,
            });
        }
    }
    (quants, scales)
}

/// `Σ_b |w_scale · x_scale · isum_b|` for each output: the q8 error budget's scale.
fn q8_magnitude(quants: &[i8], scales: &[f16], cols: usize, row: usize, xq: &[i8], xs: &[f32]) -> f64 {
    let nb = cols / Q8_BLOCK;
    let (tile, lane) = (row / Q8_TILE_ROWS, row % Q8_TILE_ROWS);
    (0..nb)
        .map(|b| {
            let group = (tile * nb + b) * Q8_TILE_ROWS + lane;
            let w = &quants[group * Q8_BLOCK..][..Q8_BLOCK];
            let isum: i64 = w.iter().zip(&xq[b * Q8_BLOCK..]).map(|(&a, &c)| i64::from(a) * i64::from(c)).sum();
            (f64::from(scales[group].to_f32()) * f64::from(xs[b]) * isum as f64).abs()
        })
        .sum()
}

#[test]
fn matmul_q8_matches_reference() {
    for k in tables() {
        let mut rng = Rng::new(1);
        for rows in [1, 7, 8, 9, 17, 300] {
            for cols in [32, 96, 160, 576, 4096] {
                let (quants, scales) = random_q8(&mut rng, rows, cols);
                for n in [1, 2, 3, 5, 8] {
                    check_matmul_q8(&k, &mut rng, &quants, &scales, rows, cols, n);
                }
            }
        }
    }
}

/// Token counts of a prefill (the AVX-512 GEMM from 5 tokens, in vectors of
/// 16, a last one of at most 8 tokens as a half vector): whole vectors, runs
/// of 1 to 3 vectors, partial and half last vectors.
#[test]
fn matmul_q8_many_tokens_matches_reference() {
    for k in tables() {
        let mut rng = Rng::new(2);
        for rows in [9, 40, 300] {
            for cols in [32, 576, 1536] {
                let (quants, scales) = random_q8(&mut rng, rows, cols);
                for n in [15, 16, 17, 31, 32, 33, 48, 64, 65, 100] {
                    check_matmul_q8(&k, &mut rng, &quants, &scales, rows, cols, n);
                }
            }
        }
        // Wide rows: the AVX-512 GEMM in several passes over the tokens
        // (4096 columns: 32 tokens a pass), and above its widest (8192).
        for cols in [4096, 8224] {
            let (quants, scales) = random_q8(&mut rng, 17, cols);
            for n in [8, 33, 100] {
                check_matmul_q8(&k, &mut rng, &quants, &scales, 17, cols, n);
            }
        }
    }
}

/// `n` random activation rows times the matrix, over every range of
/// [`row_ranges`], against the reference.
fn check_matmul_q8(k: &Kernels, rng: &mut Rng, quants: &[i8], scales: &[f16], rows: usize, cols: usize, n: usize) {
    let (xq, xs) = random_acts(rng, n, cols);
    let acts = Q8Acts { cols, quants: &xq, scales: &xs, sums: &[] };
    for range in row_ranges(rows) {
        let stride = range.len() + 3; // gaps between tokens stay untouched
        let mut want = vec![f32::NAN; n * stride];
        let mut got = want.clone();
        reference::matmul_q8(quants, scales, cols, range.clone(), &acts, n, &mut want, stride);
        table_matmul_q8(k, quants, scales, cols, range.clone(), &acts, n, &mut got, stride);
        let nb = cols / Q8_BLOCK;
        let what = format!("{} matmul_q8 rows {range:?}/{rows} cols {cols} n {n}", k.name());
        assert_close(&what, &got, &want, |i| {
            let (t, j) = (i / stride, i % stride);
            if j >= range.len() {
                return 0.0; // must stay NaN: compared as NaN == NaN
            }
            let m = q8_magnitude(quants, scales, cols, range.start + j, &xq[t * cols..], &xs[t * nb..]);
            (1e-5 * m) as f32 + f32::MIN_POSITIVE
        });
    }
}

/// An output does not depend on the call it was computed in: the same token
/// and row give the same bits whatever the token count (below and above the
/// AVX-512 GEMM's threshold), the token's position in the batch, and the row
/// range. The model's prefill relies on it (results independent of the
/// thread split).
#[test]
fn matmul_q8_is_batch_invariant() {
    for k in tables() {
        let mut rng = Rng::new(3);
        let (rows, cols, n) = (300, 576, 100);
        let (quants, scales) = random_q8(&mut rng, rows, cols);
        let (xq, xs) = random_acts(&mut rng, n, cols);
        let nb = cols / Q8_BLOCK;
        let mut all = vec![0f32; n * rows];
        let acts = Q8Acts { cols, quants: &xq, scales: &xs, sums: &[] };
        table_matmul_q8(&k, &quants, &scales, cols, 0..rows, &acts, n, &mut all, rows);
        for (t0, tn) in [(0, 64), (36, 64), (7, 33), (50, 8), (3, 7), (90, 4), (99, 1), (0, 1)] {
            let acts =
                Q8Acts { cols, quants: &xq[t0 * cols..][..tn * cols], scales: &xs[t0 * nb..][..tn * nb], sums: &[] };
            for range in row_ranges(rows) {
                let mut got = vec![0f32; tn * range.len()];
                table_matmul_q8(&k, &quants, &scales, cols, range.clone(), &acts, tn, &mut got, range.len());
                let want: Vec<f32> = (t0..t0 + tn).flat_map(|t| all[t * rows..][range.clone()].to_vec()).collect();
                assert_bits(&format!("{} matmul_q8 tokens {t0}..+{tn} rows {range:?}", k.name()), &got, &want);
            }
        }
    }
}

/// A matmul's row chunks share their activations, and a kernel may keep what
/// it prepared from them for the next chunk (the AVX-512 GEMM keeps its
/// packing): the same buffer filled with other values (one quant changed, a
/// scale's sign, a scale) must give that call's own results, bit for bit those
/// of each token alone in a fresh buffer.
#[test]
fn matmul_q8_sees_new_values_in_the_same_buffer() {
    for k in tables() {
        let mut rng = Rng::new(4);
        let (rows, cols) = (40, 576);
        let nb = cols / Q8_BLOCK;
        let (quants, scales) = random_q8(&mut rng, rows, cols);
        for n in [3, 5, 8, 16] {
            let (mut xq, mut xs) = random_acts(&mut rng, n, cols);
            for change in 0..4 {
                match change {
                    0 => {}
                    1 => xq[n * cols - 1] = xq[n * cols - 1].wrapping_add(1),
                    2 => xs[0] = -xs[0],
                    _ => xs[n * nb - 1] *= 2.0,
                }
                let acts = Q8Acts { cols, quants: &xq, scales: &xs, sums: &[] };
                for range in [0..16, 16..rows] {
                    let mut got = vec![0f32; n * range.len()];
                    table_matmul_q8(&k, &quants, &scales, cols, range.clone(), &acts, n, &mut got, range.len());
                    let mut want = vec![0f32; n * range.len()];
                    for (t, want) in want.chunks_exact_mut(range.len()).enumerate() {
                        let (q, s) = (xq[t * cols..][..cols].to_vec(), xs[t * nb..][..nb].to_vec());
                        let alone = Q8Acts { cols, quants: &q, scales: &s, sums: &[] };
                        table_matmul_q8(&k, &quants, &scales, cols, range.clone(), &alone, 1, want, range.len());
                    }
                    assert_bits(&format!("{} matmul_q8 n {n} change {change} rows {range:?}", k.name()), &got, &want);
                }
            }
        }
    }
}

#[test]
fn quantize_q8_acts_is_bit_identical() {
    for k in tables() {
        let mut rng = Rng::new(2);
        let mut lengths: Vec<usize> = (1..=20).map(|b| b * Q8_BLOCK).collect();
        lengths.extend([576, 1536, 4096, 33, 95]); // the last two: a partial block is ignored
        for len in lengths {
            for scale in [1.0, 1e-3, 3e4, 1e-38] {
                let mut x = rng.vec(len, scale);
                for block in x.chunks_exact_mut(Q8_BLOCK) {
                    match rng.below(12) {
                        0 => block.fill(0.0),
                        // scale exactly 1: every value k + 0.5 is a rounding tie.
                        1 => {
                            for (i, v) in block.iter_mut().enumerate() {
                                *v = (rng.below(254) as f32 - 127.0 + 0.5) * [1.0, -1.0][i % 2];
                            }
                            block[0] = 127.0;
                        }
                        2 => {
                            block[0] = 127.0;
                            block[1] = 0.499_999_97;
                            block[2] = -0.5;
                            block[3] = 126.5;
                            block[4] = -126.499_99;
                            block[5] = -0.0;
                        }
                        3 => block[rng.below(Q8_BLOCK)] = f32::NAN,
                        4 => block[rng.below(Q8_BLOCK)] = f32::INFINITY,
                        5 => block[rng.below(Q8_BLOCK)] = f32::NEG_INFINITY,
                        6 => block.iter_mut().for_each(|v| *v *= 1e-39), // subnormal scale
                        _ => {}
                    }
                }
                let nb = len / Q8_BLOCK;
                let (mut want_q, mut want_s) = (vec![0i8; nb * Q8_BLOCK], vec![0f32; nb]);
                let (mut got_q, mut got_s) = (vec![1i8; nb * Q8_BLOCK], vec![1f32; nb]);
                reference::quantize_q8_acts(&x, &mut want_q, &mut want_s);
                (k.quantize_q8_acts)(&x, &mut got_q, &mut got_s);
                assert_eq!(got_q, want_q, "{} quantize_q8_acts len {len} scale {scale}: quants", k.name());
                assert_bits(&format!("{} quantize_q8_acts len {len}: scales", k.name()), &got_s, &want_s);
            }
        }
    }
}

// ------------------------------------------------------------ float matmuls

fn float_matmul_case(k: &Kernels, role: Role, rng: &mut Rng, rows: usize, cols: usize, n: usize) {
    let w32 = rng.vec(rows * cols, 1.0);
    let w16: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
    let x = rng.vec(n * cols, 3.0);
    let mut ranges = row_ranges(rows);
    if rows > 8 {
        ranges.push(1..rows - 4); // odd start, a length that cuts the register and cache tiles
    }
    for range in ranges {
        let stride = range.len() + 1;
        let magnitude = |i: usize, w: &dyn Fn(usize) -> f32| {
            let (t, j) = (i / stride, i % stride);
            if j >= range.len() {
                return 0.0;
            }
            let r = range.start + j;
            let m: f32 = (0..cols).map(|c| (w(r * cols + c) * x[t * cols + c]).abs()).sum();
            1e-5 * m + f32::MIN_POSITIVE
        };
        let what = format!("{} {role:?} matmul rows {range:?}/{rows} cols {cols} n {n}", k.name());
        let mut want = vec![f32::NAN; n * stride];
        let mut got = want.clone();
        reference::matmul_f32(&w32, cols, range.clone(), &x, n, &mut want, stride);
        table_matmul_float(k, role, DType::F32, &w32, cols, range.clone(), &x, n, &mut got, stride);
        assert_close(&format!("{what} f32"), &got, &want, |i| magnitude(i, &|j| w32[j]));
        let mut want = vec![f32::NAN; n * stride];
        let mut got = want.clone();
        reference::matmul_f16(&w16, cols, range.clone(), &x, n, &mut want, stride);
        table_matmul_float(k, role, DType::F16, &w16, cols, range.clone(), &x, n, &mut got, stride);
        assert_close(&format!("{what} f16"), &got, &want, |i| magnitude(i, &|j| w16[j].to_f32()));
    }
}

/// Shapes around every boundary of the f32/f16 kernels: GEMV row groups (4)
/// and column steps (8, 16, 32, masked tails); GEMM register tiles (6 and 12
/// rows; 8, 16 and 32 tokens), row blocks (the 300-row matrices), column
/// blocks (2048: the wider matrices add a second block to the outputs).
#[test]
fn matmul_f32_f16_match_reference() {
    for k in tables() {
        let mut rng = Rng::new(3);
        for rows in [1, 3, 4, 5, 6, 7, 9, 12, 13, 25, 300] {
            for cols in [1, 7, 8, 9, 15, 17, 31, 33, 64, 130, 576, 2049, 4096] {
                for n in [1, 2, 3, 5, 8, 9, 16, 17, 33] {
                    if rows * cols * n > 2_000_000 {
                        continue;
                    }
                    for role in ROLES {
                        float_matmul_case(&k, role, &mut rng, rows, cols, n);
                    }
                }
            }
        }
    }
}

/// Every token count from 1 to 13, and more up to 129 (several blocks of
/// rows' token groups), with row counts that cut the register tiles.
#[test]
fn matmul_f32_f16_token_counts() {
    for k in tables() {
        let mut rng = Rng::new(9);
        for n in (1..=13).chain([15, 16, 24, 31, 32, 47, 48, 63, 64, 65, 100, 129]) {
            for (rows, cols) in [(13, 40), (25, 67)] {
                for role in ROLES {
                    float_matmul_case(&k, role, &mut rng, rows, cols, n);
                }
            }
        }
    }
}

/// A float matmul output does not depend on the call it was computed in,
/// for either role: the same token and row give the same bits whatever the
/// token count (every count from 1 to 13, one token included: the decode
/// GEMV, a prompt's lone last token), the token's position in the batch and
/// the row range, with row and column counts that cut the vectors and tiles
/// (67), SmolLM2's width (576) and a wide one (2100: two GEMM column
/// blocks). The model relies on it: prefill results independent of the
/// thread split and of a prompt's chunks, a decode token's alone or beside
/// other sequences'. The two roles may differ from each other (that is the
/// point of having two), and on the SIMD tables do.
#[test]
fn matmul_f32_f16_are_batch_invariant() {
    for k in tables() {
        let mut rng = Rng::new(5);
        for (rows, cols, n) in [(300, 576, 100), (45, 67, 40), (30, 2100, 40)] {
            let w32 = rng.vec(rows * cols, 1.0);
            let w16: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
            let x = rng.vec(n * cols, 3.0);
            let mut orders_differ = false;
            let mut prefill = Vec::new();
            for role in ROLES {
                let mut all32 = vec![0f32; n * rows];
                let mut all16 = vec![0f32; n * rows];
                table_matmul_float(&k, role, DType::F32, &w32, cols, 0..rows, &x, n, &mut all32, rows);
                table_matmul_float(&k, role, DType::F16, &w16, cols, 0..rows, &x, n, &mut all16, rows);
                let mut groups = vec![(0, 33), (7, 17), (3, 16), (20, 9), (n - 2, 2), (13, 1), (n - 1, 1)];
                groups.extend((1..=13).map(|tn| (tn + 2, tn)));
                for (t0, tn) in groups {
                    let xt = &x[t0 * cols..][..tn * cols];
                    for range in row_ranges(rows) {
                        let what = format!(
                            "{} {role:?} matmul rows {range:?}/{rows} cols {cols} tokens {t0}..+{tn}",
                            k.name()
                        );
                        let want = |all: &[f32]| -> Vec<f32> {
                            (t0..t0 + tn).flat_map(|t| all[t * rows..][range.clone()].to_vec()).collect()
                        };
                        let mut got = vec![0f32; tn * range.len()];
                        let r = range.clone();
                        table_matmul_float(&k, role, DType::F32, &w32, cols, r.clone(), xt, tn, &mut got, r.len());
                        assert_bits(&format!("{what} f32"), &got, &want(&all32));
                        table_matmul_float(&k, role, DType::F16, &w16, cols, r.clone(), xt, tn, &mut got, r.len());
                        assert_bits(&format!("{what} f16"), &got, &want(&all16));
                    }
                }
                match role {
                    Role::Prefill => prefill = all32,
                    Role::Decode => orders_differ = prefill != all32,
                }
            }
            // Else the prefill entry would not be the GEMM form at all.
            assert!(orders_differ, "{}: both roles sum {rows} x {cols} in the same order", k.name());
        }
    }
}

// ------------------------------------------------------------- elementwise

fn lengths() -> impl Iterator<Item = usize> {
    (1..=130).chain([576, 1000, 1536, 4096])
}

#[test]
fn rmsnorm_layernorm_match_reference() {
    for k in tables() {
        let mut rng = Rng::new(4);
        for len in lengths() {
            for scale in [1.0, 1e-3, 1e3] {
                let x: Vec<f32> = rng.vec(len, scale).iter().map(|v| v + 0.3 * scale).collect();
                let (w, b) = (rng.vec(len, 2.0), rng.vec(len, 1.0));
                let (mut want, mut got) = (vec![0.0; len], vec![0.0; len]);
                reference::rmsnorm(&x, &w, 1e-5, &mut want);
                (k.rmsnorm)(&x, &w, 1e-5, &mut got);
                let inv = want.iter().zip(&x).zip(&w).find(|((o, v), w)| **o != 0.0 && **v != 0.0 && **w != 0.0);
                let inv = inv.map_or(0.0, |((o, v), w)| (o / (v * w)).abs());
                let what = format!("{} rmsnorm len {len} scale {scale}", k.name());
                assert_close(&what, &got, &want, |i| 1e-5 * (x[i] * inv * w[i]).abs() + f32::MIN_POSITIVE);

                reference::layernorm(&x, &w, &b, 1e-5, &mut want);
                (k.layernorm)(&x, &w, &b, 1e-5, &mut got);
                let mean = x.iter().sum::<f32>() / len as f32;
                let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / len as f32;
                let inv = 1.0 / (var + 1e-5).sqrt();
                let what = format!("{} layernorm len {len} scale {scale}", k.name());
                assert_close(&what, &got, &want, |i| {
                    1e-5 * ((x[i].abs() + mean.abs()) * inv * w[i].abs() + b[i].abs()) + f32::MIN_POSITIVE
                });
            }
        }
    }
}

#[test]
fn softmax_matches_reference() {
    for k in tables() {
        let mut rng = Rng::new(5);
        for len in lengths() {
            for scale in [1.0, 10.0, 100.0] {
                let mut want = rng.vec(len, scale);
                if len > 3 {
                    want[len / 3] = f32::NEG_INFINITY; // a masked position
                }
                let mut got = want.clone();
                reference::softmax(&mut want);
                (k.softmax)(&mut got);
                let what = format!("{} softmax len {len} scale {scale}", k.name());
                assert_close(&what, &got, &want, |i| 1e-5 * want[i] + 1e-7);
            }
        }
    }
}

#[test]
fn swiglu_gelu_match_reference() {
    for k in tables() {
        let mut rng = Rng::new(6);
        for len in lengths() {
            for scale in [1.0, 8.0, 100.0] {
                let (gate, up) = (rng.vec(len, scale), rng.vec(len, 2.0));
                let (mut want, mut got) = (vec![0.0; len], vec![0.0; len]);
                reference::swiglu(&gate, &up, &mut want);
                (k.swiglu)(&gate, &up, &mut got);
                let what = format!("{} swiglu len {len} scale {scale}", k.name());
                assert_close(&what, &got, &want, |i| 1e-5 * want[i].abs() + 1e-30);

                let mut want = gate.clone();
                let mut got = gate.clone();
                reference::gelu_tanh(&mut want);
                (k.gelu_tanh)(&mut got);
                let what = format!("{} gelu_tanh len {len} scale {scale}", k.name());
                assert_close(&what, &got, &want, |i| 1e-5 * want[i].abs() + 1e-6 * gate[i].abs());
            }
        }
    }
}

#[test]
fn add_and_rope_are_bit_identical() {
    for k in tables() {
        let mut rng = Rng::new(7);
        for len in lengths() {
            let x = rng.vec(len, 5.0);
            let mut want = rng.vec(len, 5.0);
            let mut got = want.clone();
            reference::add(&mut want, &x);
            (k.add)(&mut got, &x);
            assert_bits(&format!("{} add len {len}", k.name()), &got, &want);
        }
        for head_dim in [2, 4, 6, 16, 18, 34, 64, 128] {
            for heads in [1, 2, 3, 9] {
                let half = head_dim / 2;
                let (cos, sin) = (rng.vec(half, 1.0), rng.vec(half, 1.0));
                let mut want = rng.vec(heads * head_dim, 4.0);
                let mut got = want.clone();
                reference::rope(&mut want, head_dim, &cos, &sin);
                (k.rope)(&mut got, head_dim, &cos, &sin);
                assert_bits(&format!("{} rope head_dim {head_dim} heads {heads}", k.name()), &got, &want);
            }
        }
    }
}

// ---------------------------------------------------------------- attention

/// How keys relate to the queries: random, or arranged so that every block
/// raises the running max (`Rising`: the online softmax rescales on every
/// block) or the first key dominates (`Falling`).
#[derive(Clone, Copy, Debug)]
enum Keys {
    Random,
    Rising,
    Falling,
}

/// One attention call's inputs: `q` holds `n_tokens` rows of `q_stride` (a
/// gap after each token's `group` queries, as in the forward pass's qkv rows).
struct AttnCase {
    shape: AttnShape,
    q: Vec<f32>,
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl AttnCase {
    fn new(rng: &mut Rng, head_dim: usize, group: usize, n_tokens: usize, n_pos: usize, q_scale: f32, k: Keys) -> Self {
        let q_stride = group * head_dim + 3;
        let shape = AttnShape { head_dim, group, n_tokens, n_pos, q_stride };
        let slots = shape.slots();
        let q = rng.vec(n_tokens * q_stride, q_scale);
        let mut keys = rng.vec(slots * head_dim, 1.0);
        // Keys along the first query's direction, growing or shrinking with the slot.
        let dir: Vec<f32> = q[..head_dim].iter().map(|v| v.signum()).collect();
        for (slot, key) in keys.chunks_exact_mut(head_dim).enumerate() {
            let w = match k {
                Keys::Random => continue,
                Keys::Rising => slot as f32 / slots as f32,
                Keys::Falling => 1.0 - slot as f32 / slots as f32,
            };
            for (v, d) in key.iter_mut().zip(&dir) {
                *v = 0.1 * *v + w * d;
            }
        }
        let values = rng.vec(slots * head_dim, 2.0);
        Self { shape, q, keys, values }
    }

    /// Keys and values rounded to f16, and those values widened back.
    fn f16(&self) -> (Vec<f16>, Vec<f16>, AttnCase) {
        let (k16, v16): (Vec<f16>, Vec<f16>) = (
            self.keys.iter().map(|&v| f16::from_f32(v)).collect(),
            self.values.iter().map(|&v| f16::from_f32(v)).collect(),
        );
        let widened = AttnCase {
            shape: self.shape,
            q: self.q.clone(),
            keys: k16.iter().map(|v| v.to_f32()).collect(),
            values: v16.iter().map(|v| v.to_f32()).collect(),
        };
        (k16, v16, widened)
    }

    /// `softmax(q·K^T / sqrt(d)) V` per row in f64 (scores all at once, then
    /// the softmax, as written), with the error budget's scales: per output
    /// `Σ_j p_j |v_j|`, per row `max_j Σ_i |q_i k_ji| / sqrt(d)` (the largest
    /// logit a rounding error of the dot product is relative to).
    fn naive_f64(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let AttnShape { head_dim: hd, group, q_stride, n_pos, .. } = self.shape;
        let rows = self.shape.rows();
        let (mut out, mut mag, mut logit) = (vec![0f64; rows * hd], vec![0f64; rows * hd], vec![0f64; rows]);
        let scale = 1.0 / (hd as f64).sqrt();
        for r in 0..rows {
            let (t, g) = (r / group, r % group);
            let q = &self.q[t * q_stride + g * hd..][..hd];
            let n = n_pos + t;
            let dot = |slot: usize, abs: bool| -> f64 {
                let k = &self.keys[slot * hd..][..hd];
                let terms = k.iter().zip(q).map(|(&a, &b)| f64::from(a) * f64::from(b));
                scale * if abs { terms.map(f64::abs).sum::<f64>() } else { terms.sum::<f64>() }
            };
            let s: Vec<f64> = (0..n).map(|j| dot(j, false)).collect();
            logit[r] = (0..n).map(|j| dot(j, true)).fold(0.0, f64::max);
            let m = s.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
            let p: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
            let total: f64 = p.iter().sum();
            for (j, pj) in p.iter().enumerate() {
                let v = &self.values[j * hd..][..hd];
                for d in 0..hd {
                    out[r * hd + d] += pj / total * f64::from(v[d]);
                    mag[r * hd + d] += pj / total * f64::from(v[d]).abs();
                }
            }
        }
        (out, mag, logit)
    }
}

/// Runs one attention kernel on fresh NaN-filled scratch and output (a read of
/// scratch before its write, or an output left unwritten, shows as NaN).
fn run_attention<T>(f: Attention<T>, shape: &AttnShape, q: &[f32], keys: &[T], values: &[T]) -> Vec<f32> {
    let mut scratch = vec![f32::NAN; AttnShape::scratch_len(shape.head_dim, shape.rows())];
    let mut out = vec![f32::NAN; shape.rows() * shape.head_dim];
    f(shape, q, keys, values, &mut scratch, &mut out);
    out
}

/// The attention error budget: `tol × (1 + logit) × Σ_j p_j |v_j|` per
/// output, `logit` being the row's largest `Σ|q_i k_i| / sqrt(d)`: score
/// rounding is relative to that, and `exp` turns it into a relative error of
/// the weights.
fn attention_tol<'a>(tol: f64, mag: &'a [f64], logit: &'a [f64], head_dim: usize) -> impl Fn(usize) -> f32 + 'a {
    move |i| (tol * (1.0 + logit[i / head_dim]) * mag[i]) as f32 + 1e-30
}

/// Shapes: decode at every depth up to 130 and one deep; prefill runs of
/// tokens that start before, at and after block boundaries.
fn attention_shapes() -> Vec<(usize, usize)> {
    let mut shapes: Vec<(usize, usize)> = (1..=130).map(|n_pos| (1, n_pos)).collect();
    shapes.push((1, 1000));
    for n_tokens in [2, 3, 5, 17, 40] {
        for n_pos in [1, 2, 60, 64, 65, 127, 130] {
            shapes.push((n_tokens, n_pos));
        }
    }
    shapes.push((70, 1));
    shapes.push((9, 1000));
    shapes
}

#[test]
fn attention_matches_reference() {
    let mut worst = 0f64;
    for k in tables() {
        let mut rng = Rng::new(8);
        for head_dim in [1, 7, 9, 20, 64, 80, 128] {
            for group in [1, 3, 8] {
                for (i, (n_tokens, n_pos)) in attention_shapes().into_iter().enumerate() {
                    // All shapes at the model's head sizes, a sample at the odd ones.
                    if ![64, 80, 128].contains(&head_dim) && i % 5 != 0 {
                        continue;
                    }
                    let (q_scale, pattern) = match i % 7 {
                        0 => (30.0, Keys::Rising),
                        1 => (30.0, Keys::Falling),
                        2 => (100.0, Keys::Random),
                        _ => (4.0, Keys::Random),
                    };
                    let case = AttnCase::new(&mut rng, head_dim, group, n_tokens, n_pos, q_scale, pattern);
                    let (k16, v16, case16) = case.f16();
                    let what = format!(
                        "{} attention head_dim {head_dim} group {group} tokens {n_tokens} n_pos {n_pos} {pattern:?} q×{q_scale}",
                        k.name()
                    );
                    let shape = &case.shape;
                    for (dtype, got, want, c) in [
                        (
                            "f32",
                            run_attention(k.attention_f32, shape, &case.q, &case.keys, &case.values),
                            run_attention(reference::attention::<f32>, shape, &case.q, &case.keys, &case.values),
                            &case,
                        ),
                        (
                            "f16",
                            run_attention(k.attention_f16, shape, &case.q, &k16, &v16),
                            run_attention(reference::attention::<f16>, shape, &case.q, &k16, &v16),
                            &case16,
                        ),
                    ] {
                        let (_, mag, logit) = c.naive_f64();
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            let scale = (1.0 + logit[i / head_dim]) * mag[i];
                            worst = worst.max(f64::from((g - w).abs()) / scale);
                        }
                        assert_close(
                            &format!("{what} {dtype}"),
                            &got,
                            &want,
                            attention_tol(ATTN_TOL, &mag, &logit, head_dim),
                        );
                    }
                }
            }
        }
    }
    println!("attention: largest |simd - reference| / ((1 + logit) Σp|v|) = {worst:e}");
}

/// The attention budget against the reference, `× (1 + logit) × Σ_j p_j |v_j|`
/// (largest seen: 4.7e-7 on AVX2, 5.4e-7 on NEON under qemu).
const ATTN_TOL: f64 = 2e-6;

#[test]
fn attention_matches_naive_f64() {
    let mut all = vec![Kernels::scalar()];
    all.extend(tables());
    for k in all {
        let mut worst = 0f64;
        let mut rng = Rng::new(9);
        // Under Miri (tools/sanitizers.sh; about a thousand times slower) a
        // head that is not a multiple of the vector width, a grouped one, and
        // a few tokens over a short cache.
        let heads: &[(usize, usize)] =
            if cfg!(miri) { &[(9, 2), (64, 3)] } else { &[(64, 3), (80, 1), (128, 8), (9, 2)] };
        let lengths: &[(usize, usize)] = if cfg!(miri) {
            &[(1, 1), (1, 40), (3, 9)]
        } else {
            &[(1, 1), (1, 100), (1, 1000), (33, 1), (20, 70), (4, 500)]
        };
        for &(head_dim, group) in heads {
            for &(n_tokens, n_pos) in lengths {
                for (q_scale, pattern) in [(1.0, Keys::Random), (30.0, Keys::Rising), (300.0, Keys::Random)] {
                    let case = AttnCase::new(&mut rng, head_dim, group, n_tokens, n_pos, q_scale, pattern);
                    let got = run_attention(k.attention_f32, &case.shape, &case.q, &case.keys, &case.values);
                    let (want, mag, logit) = case.naive_f64();
                    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                        let err = (f64::from(g) - w).abs();
                        let budget = (F64_TOL * (1.0 + logit[i / head_dim])) * mag[i] + 1e-30;
                        worst = worst.max(err / ((1.0 + logit[i / head_dim]) * mag[i]));
                        assert!(
                            err <= budget,
                            "{} attention vs f64: head_dim {head_dim} group {group} tokens {n_tokens} n_pos {n_pos} \
                             {pattern:?} q×{q_scale} [{i}]: got {g:e}, want {w:e} (budget {budget:e})",
                            k.name()
                        );
                    }
                }
            }
        }
        println!("{}: largest |attention - f64| / ((1 + logit) Σp|v|) = {worst:e}", k.name());
    }
}

/// The budget against f64, `× (1 + logit) × Σ_j p_j |v_j|` (largest seen: 2.1e-7
/// for the scalar reference, whose sums over up to 1000 keys run one after the
/// other; 1.3e-7 on AVX2).
const F64_TOL: f64 = 1e-6;

/// A row's output does not depend on the other rows of the call: one call for
/// a run of tokens equals one call per token, bit for bit (the forward pass
/// relies on it to cut batches by thread count).
///
/// That needs `f32::exp` to give the same result for the same input, which
/// every libm does but Rust does not promise ("can even differ within the
/// same execution from one invocation to the next"): Miri models that by
/// adding a random error of a few ulp to each result, so this test fails
/// under plain Miri for a reason that is not a bug. tools/sanitizers.sh runs
/// it under Miri on its own with `-Zmiri-no-extra-rounding-error`.
#[test]
#[cfg_attr(miri, ignore = "Miri perturbs each f32::exp result; run with -Zmiri-no-extra-rounding-error")]
fn attention_rows_do_not_depend_on_the_call() {
    let mut all = vec![Kernels::scalar()];
    all.extend(tables());
    for k in all {
        let mut rng = Rng::new(10);
        // Under Miri (about a thousand times slower) a short run of each kind:
        // grouped queries, a head size that is not a multiple of the vector width.
        let cases: &[(usize, usize, usize, usize)] = if cfg!(miri) {
            &[(64, 3, 4, 1), (20, 3, 5, 3)]
        } else {
            &[(64, 3, 40, 1), (80, 8, 9, 60), (128, 1, 70, 100), (20, 3, 12, 3)]
        };
        for &(head_dim, group, n_tokens, n_pos) in cases {
            let case = AttnCase::new(&mut rng, head_dim, group, n_tokens, n_pos, 8.0, Keys::Random);
            let (k16, v16, _) = case.f16();
            let batch32 = run_attention(k.attention_f32, &case.shape, &case.q, &case.keys, &case.values);
            let batch16 = run_attention(k.attention_f16, &case.shape, &case.q, &k16, &v16);
            for t in 0..n_tokens {
                let one = AttnShape { n_tokens: 1, n_pos: n_pos + t, ..case.shape };
                let q = &case.q[t * one.q_stride..];
                let row = t * group * head_dim..(t + 1) * group * head_dim;
                let what = format!("{} head_dim {head_dim} group {group} token {t} of {n_tokens}", k.name());
                let alone = run_attention(k.attention_f32, &one, q, &case.keys, &case.values);
                assert_bits(&format!("{what} f32"), &alone, &batch32[row.clone()]);
                let alone = run_attention(k.attention_f16, &one, q, &k16, &v16);
                assert_bits(&format!("{what} f16"), &alone, &batch16[row]);
            }
        }
    }
}

/// The NEON table picks its q8 matmul from the CPU: SDOT with dotprod, the
/// widening multiplies without (run under `qemu-aarch64 -cpu max` and
/// `-cpu cortex-a57` to test both).
#[cfg(target_arch = "aarch64")]
#[test]
fn neon_q8_path_follows_dotprod() {
    let k = Kernels::for_isa(gpt_fast_kernels::Isa::Neon).expect("every AArch64 Linux CPU has NEON");
    let want = if std::arch::is_aarch64_feature_detected!("dotprod") { "neon+dotprod" } else { "neon" };
    assert_eq!(k.name(), want);
    println!("neon q8 matmul path: {}", k.name());
}
