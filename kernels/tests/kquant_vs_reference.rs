//! The K-quant matmuls (Q4_K, Q5_K, Q6_K in gpt-fast's tiles) of every kernel
//! table this CPU can run, against the scalar reference, and the reference
//! against the weights ggml dequantizes.
//!
//! Weights are random GGUF super-blocks (every bit pattern is a valid block;
//! the f16 scales are kept finite, some are zero) repacked by
//! `gpt_fast_quant::kquant`. Error budget: `|got - want| <= 1e-5 × M`, `M`
//! the sum of the magnitudes of the block terms (`|d·sc·q·x| + |dmin·m·x|`
//! per value), since the kernels fuse the per-block multiply-adds and the
//! reference rounds each. Outputs are bit-identical whatever the call's
//! token count, token offset and row range.

mod common;

use std::ops::Range;

use common::{assert_close, random_acts_with_sums as random_acts, row_ranges, tables, Rng};
use gpt_fast_kernels::{reference, Acts, DType, Kernels, Matrix, Q8Acts, Q8_BLOCK};
use gpt_fast_quant::ggml::{BlockQ4K, BlockQ5K, BlockQ6K, QK_K};
use gpt_fast_quant::kquant::{self, q4_k::Q4K, q5_k::Q5K, q6_k::Q6K, KFormat, PackedKLayout};

/// The reference K-quant matmuls' signature: `(packed, cols, rows, x, x_sums, n, out, out_stride)`.
type MatmulK = fn(&[u8], usize, Range<usize>, &Q8Acts, &[f32], usize, &mut [f32], usize);

/// One K-quant type under test: its format, table entry and reference.
struct Case {
    name: &'static str,
    block_bytes: usize,
    /// Offsets of the f16 fields in the GGUF block.
    f16_at: &'static [usize],
    layout: fn(usize, usize) -> PackedKLayout,
    repack: fn(&[u8], &PackedKLayout, &mut [u8]),
    reference: MatmulK,
    dtype: DType,
    /// `Σ |term|` of the 32 values of block `j` of GGUF super-block `block`.
    magnitude: fn(&[u8], usize, &[i8], f32) -> f64,
    dequantize_row: fn(&[u8], &PackedKLayout, usize, &mut [f32]),
}

fn q45_magnitude(d: f32, dmin: f32, (sc, m): (u8, u8), q: impl Fn(usize) -> u8, xq: &[i8], xs: f32) -> f64 {
    let (dsc, dm) = (f64::from(d) * f64::from(sc), f64::from(dmin) * f64::from(m));
    (0..Q8_BLOCK)
        .map(|l| (dsc * f64::from(q(l))).abs() + dm.abs())
        .zip(xq)
        .map(|(w, &x)| w * f64::from(x).abs())
        .sum::<f64>()
        * f64::from(xs).abs()
}

const CASES: [Case; 3] = [
    Case {
        name: "q4_k",
        block_bytes: Q4K::BLOCK_BYTES,
        f16_at: &[0, 2],
        layout: |r, c| PackedKLayout::new::<Q4K>(r, c).unwrap(),
        repack: kquant::repack::<Q4K>,
        reference: reference::matmul_q4_k,
        dtype: DType::Q4_K,
        magnitude: |bytes, j, xq, xs| {
            let b: BlockQ4K = bytemuck::pod_read_unaligned(bytes);
            q45_magnitude(b.d.to_f32(), b.dmin.to_f32(), b.scale_min(j), |l| b.quant(j, l), xq, xs)
        },
        dequantize_row: kquant::dequantize_row::<Q4K>,
    },
    Case {
        name: "q5_k",
        block_bytes: Q5K::BLOCK_BYTES,
        f16_at: &[0, 2],
        layout: |r, c| PackedKLayout::new::<Q5K>(r, c).unwrap(),
        repack: kquant::repack::<Q5K>,
        reference: reference::matmul_q5_k,
        dtype: DType::Q5_K,
        magnitude: |bytes, j, xq, xs| {
            let b: BlockQ5K = bytemuck::pod_read_unaligned(bytes);
            q45_magnitude(b.d.to_f32(), b.dmin.to_f32(), b.scale_min(j), |l| b.quant(j, l), xq, xs)
        },
        dequantize_row: kquant::dequantize_row::<Q5K>,
    },
    Case {
        name: "q6_k",
        block_bytes: Q6K::BLOCK_BYTES,
        f16_at: &[208],
        layout: |r, c| PackedKLayout::new::<Q6K>(r, c).unwrap(),
        repack: kquant::repack::<Q6K>,
        reference: reference::matmul_q6_k,
        dtype: DType::Q6_K,
        magnitude: |bytes, j, xq, xs| {
            let b: BlockQ6K = bytemuck::pod_read_unaligned(bytes);
            let d = f64::from(b.d.to_f32());
            (0..Q8_BLOCK)
                .map(|l| {
                    let v = Q8_BLOCK * j + l;
                    (d * f64::from(b.scales[v / 16]) * f64::from(b.quant(v)) * f64::from(xq[l])).abs()
                })
                .sum::<f64>()
                * f64::from(xs).abs()
        },
        dequantize_row: kquant::dequantize_row::<Q6K>,
    },
];

/// A random GGUF tensor of `case`'s type: random quants, scales and
/// minimums; f16 super-block scales of assorted sizes, some zero.
fn random_gguf(case: &Case, rng: &mut Rng, rows: usize, cols: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..rows * cols / QK_K * case.block_bytes).map(|_| rng.next_u64() as u8).collect();
    for block in bytes.chunks_exact_mut(case.block_bytes) {
        for &at in case.f16_at {
            let d = match rng.below(8) {
                0 => 0.0,
                1 => 6.0e-8,
                _ => rng.f32() * 0.01,
            };
            block[at..at + 2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        }
    }
    bytes
}

/// `M` of the error budget for row `row`, token activations `xq`, `xs`.
fn magnitude(case: &Case, gguf: &[u8], cols: usize, row: usize, xq: &[i8], xs: &[f32]) -> f64 {
    let superblocks = cols / QK_K;
    (0..superblocks * QK_K / Q8_BLOCK)
        .map(|b| {
            let (sb, j) = (b / 8, b % 8);
            let block = &gguf[(row * superblocks + sb) * case.block_bytes..][..case.block_bytes];
            (case.magnitude)(block, j, &xq[b * Q8_BLOCK..][..Q8_BLOCK], xs[b])
        })
        .sum()
}

/// The reference is the weights ggml dequantizes times the dequantized
/// activations, up to f32 rounding.
#[test]
fn reference_matches_dequantized_weights() {
    let mut rng = Rng::new(11);
    for case in &CASES {
        // Under Miri (tools/sanitizers.sh), one full tile plus a short one.
        let shapes: &[(usize, usize)] = if cfg!(miri) { &[(9, 256)] } else { &[(9, 256), (17, 768)] };
        for &(rows, cols) in shapes {
            let gguf = random_gguf(case, &mut rng, rows, cols);
            let layout = (case.layout)(rows, cols);
            let mut packed = vec![0u8; layout.n_bytes()];
            (case.repack)(&gguf, &layout, &mut packed);
            let n = 3;
            let (xq, xs, sums) = random_acts(&mut rng, n, cols);
            let acts = Q8Acts { cols, quants: &xq, scales: &xs, sums: &[] };
            let mut got = vec![0f32; n * rows];
            (case.reference)(&packed, cols, 0..rows, &acts, &sums, n, &mut got, rows);
            let mut w = vec![0f32; cols];
            for r in 0..rows {
                (case.dequantize_row)(&packed, &layout, r, &mut w);
                for t in 0..n {
                    let want: f64 = (0..cols)
                        .map(|i| f64::from(w[i]) * f64::from(xs[t * cols / 32 + i / 32]) * f64::from(xq[t * cols + i]))
                        .sum();
                    let m = magnitude(case, &gguf, cols, r, &xq[t * cols..], &xs[t * cols / 32..]);
                    let g = f64::from(got[t * rows + r]);
                    assert!((g - want).abs() <= 1e-5 * m + 1e-30, "{} row {r} token {t}: {g:e} vs {want:e}", case.name);
                }
            }
        }
    }
}

/// `k`'s matmul for `case`, reached through its dtype table as the model reaches it.
#[allow(clippy::too_many_arguments)]
fn table_matmul(
    k: &Kernels,
    case: &Case,
    packed: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    sums: &[f32],
    n: usize,
    out: &mut [f32],
    stride: usize,
) {
    let padded_rows = packed.len() / (cols / QK_K * case.block_bytes);
    let w = Matrix { rows: padded_rows, cols, dtype: case.dtype, data: packed };
    k.matmul(&w, rows, &Acts { x: &[], q8: Q8Acts { sums, ..*x } }, n, out, stride);
}

fn check(k: &Kernels, case: &Case, rng: &mut Rng, gguf: &[u8], packed: &[u8], rows: usize, cols: usize, n: usize) {
    let (xq, xs, sums) = random_acts(rng, n, cols);
    let acts = Q8Acts { cols, quants: &xq, scales: &xs, sums: &[] };
    let nb = cols / Q8_BLOCK;
    for range in row_ranges(rows) {
        let stride = range.len() + 3; // gaps between tokens stay untouched
        let mut want = vec![f32::NAN; n * stride];
        let mut got = want.clone();
        (case.reference)(packed, cols, range.clone(), &acts, &sums, n, &mut want, stride);
        table_matmul(k, case, packed, cols, range.clone(), &acts, &sums, n, &mut got, stride);
        let what = format!("{} matmul_{} rows {range:?}/{rows} cols {cols} n {n}", k.name(), case.name);
        assert_close(&what, &got, &want, |i| {
            let (t, j) = (i / stride, i % stride);
            if j >= range.len() {
                return 0.0; // must stay NaN
            }
            1e-5 * magnitude(case, gguf, cols, range.start + j, &xq[t * cols..], &xs[t * nb..]) + 1e-30
        });
    }
}

#[test]
fn matmul_k_matches_reference() {
    for k in tables() {
        let mut rng = Rng::new(1);
        for case in &CASES {
            for rows in [1, 7, 8, 9, 17, 40] {
                for cols in [256, 512, 2048] {
                    let gguf = random_gguf(case, &mut rng, rows, cols);
                    let layout = (case.layout)(rows, cols);
                    let mut packed = vec![0u8; layout.n_bytes()];
                    (case.repack)(&gguf, &layout, &mut packed);
                    for n in [1, 2, 3, 4, 5, 8, 13] {
                        check(&k, case, &mut rng, &gguf, &packed, rows, cols, n);
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_k_is_batch_invariant() {
    for k in tables() {
        let mut rng = Rng::new(3);
        for case in &CASES {
            let (rows, cols, n) = (41, 512, 23);
            let gguf = random_gguf(case, &mut rng, rows, cols);
            let layout = (case.layout)(rows, cols);
            let mut packed = vec![0u8; layout.n_bytes()];
            (case.repack)(&gguf, &layout, &mut packed);
            let (xq, xs, sums) = random_acts(&mut rng, n, cols);
            let nb = cols / Q8_BLOCK;
            let mut all = vec![0f32; n * rows];
            let f = |packed: &[u8], cols, rows, acts: &Q8Acts, sums: &[f32], n, out: &mut [f32], stride| {
                table_matmul(&k, case, packed, cols, rows, acts, sums, n, out, stride)
            };
            f(&packed, cols, 0..rows, &Q8Acts { cols, quants: &xq, scales: &xs, sums: &[] }, &sums, n, &mut all, rows);
            for (t0, tn) in [(0, 8), (3, 7), (19, 4), (22, 1), (5, 13)] {
                let acts = Q8Acts {
                    cols,
                    quants: &xq[t0 * cols..][..tn * cols],
                    scales: &xs[t0 * nb..][..tn * nb],
                    sums: &[],
                };
                for range in row_ranges(rows) {
                    let mut got = vec![0f32; tn * range.len()];
                    f(&packed, cols, range.clone(), &acts, &sums[t0 * nb..], tn, &mut got, range.len());
                    let want: Vec<f32> = (t0..t0 + tn).flat_map(|t| all[t * rows..][range.clone()].to_vec()).collect();
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{} {} tokens {t0}..+{tn} rows {range:?}", k.name(), case.name);
                }
            }
        }
    }
}
