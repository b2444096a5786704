//! The q4_kr matmul (gpt-fast's own 4-bit rows, `gpt_fast_quant::q4_kr`) of
//! every kernel table this CPU can run, against the scalar reference, and the
//! reference against the weights the quant crate decodes.
//!
//! Weights are random tiles (every bit pattern of the scales and quants is
//! valid; the rows' f16 `d`, `dmin` are kept finite, some zero). Widths cover
//! whole groups of 8 sub-blocks, cut groups of 1 to 7 (odd ones leave a high
//! nibble unused) and rows with no whole group. Error budget as the
//! K-quants': `|got - want| <= 1e-5 × M`, `M = Σ (|d·sc·q| + |dmin·m|)·|x|`.
//! Outputs are bit-identical whatever the call's token count, token offset
//! and row range.

mod common;

use std::ops::Range;

use common::{assert_close, random_acts_with_sums as random_acts, row_ranges, tables, Rng};
use gpt_fast_kernels::{reference, Acts, DType, Kernels, Matrix, Q8Acts, Q8_BLOCK};
use gpt_fast_quant::q4_kr::{Q4KrLayout, DMIN, TILE_ROWS};

/// A random packed `[rows, cols]` q4_kr tensor.
fn random_weights(rng: &mut Rng, rows: usize, cols: usize) -> (Q4KrLayout, Vec<u8>) {
    let layout = Q4KrLayout::new(rows, cols).unwrap();
    let mut bytes: Vec<u8> = (0..layout.n_bytes()).map(|_| rng.next_u64() as u8).collect();
    for tile in bytes.chunks_exact_mut(layout.tile_bytes()) {
        for at in (0..2 * TILE_ROWS).step_by(2).chain((DMIN..DMIN + 2 * TILE_ROWS).step_by(2)) {
            let d = match rng.below(8) {
                0 => 0.0,
                1 => 6.0e-8,
                _ => rng.f32().abs() * 0.01,
            };
            tile[at..at + 2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        }
    }
    (layout, bytes)
}

/// `M` of the error budget for row `row` and one token's activations.
fn magnitude(layout: &Q4KrLayout, packed: &[u8], row: usize, xq: &[i8], xs: &[f32]) -> f64 {
    let fit = layout.read_row(packed, row);
    let (d, dmin) = (f64::from(fit.d.to_f32()), f64::from(fit.dmin.to_f32()));
    fit.scale_min
        .iter()
        .enumerate()
        .map(|(b, &(sc, m))| {
            (0..Q8_BLOCK)
                .map(|l| {
                    let v = b * Q8_BLOCK + l;
                    ((d * f64::from(sc) * f64::from(fit.quants[v])).abs() + (dmin * f64::from(m)).abs())
                        * f64::from(xq[v]).abs()
                })
                .sum::<f64>()
                * f64::from(xs[b]).abs()
        })
        .sum()
}

#[allow(clippy::too_many_arguments)]
fn table_matmul(
    k: &Kernels,
    packed: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    sums: &[f32],
    n: usize,
    out: &mut [f32],
    stride: usize,
) {
    let padded_rows = packed.len() / (Q4KrLayout::new(TILE_ROWS, cols).unwrap().tile_bytes() / TILE_ROWS);
    let w = Matrix { rows: padded_rows, cols, dtype: DType::Q4_KR, data: packed };
    k.matmul(&w, rows, &Acts { x: &[], q8: Q8Acts { sums, ..*x } }, n, out, stride);
}

const WIDTHS: [usize; 9] = [32, 64, 96, 224, 256, 288, 576, 640, 800];

/// The reference is the weights the quant crate decodes times the
/// dequantized activations, up to f32 rounding.
#[test]
fn reference_matches_decoded_weights() {
    let mut rng = Rng::new(11);
    for cols in WIDTHS {
        let rows = 9;
        let (layout, packed) = random_weights(&mut rng, rows, cols);
        let n = 3;
        let (xq, xs, sums) = random_acts(&mut rng, n, cols);
        let acts = Q8Acts { cols, quants: &xq, scales: &xs, sums: &[] };
        let mut got = vec![0f32; n * rows];
        reference::matmul_q4_kr(&packed, cols, 0..rows, &acts, &sums, n, &mut got, rows);
        let w = DType::Q4_KR.decode(&packed, rows, cols);
        for r in 0..rows {
            for t in 0..n {
                let want: f64 = (0..cols)
                    .map(|i| {
                        f64::from(w[r * cols + i]) * f64::from(xs[t * cols / 32 + i / 32]) * f64::from(xq[t * cols + i])
                    })
                    .sum();
                let m = magnitude(&layout, &packed, r, &xq[t * cols..], &xs[t * cols / 32..]);
                let g = f64::from(got[t * rows + r]);
                assert!((g - want).abs() <= 1e-5 * m + 1e-30, "cols {cols} row {r} token {t}: {g:e} vs {want:e}");
            }
        }
    }
}

#[test]
fn matmul_q4_kr_matches_reference() {
    for k in tables() {
        let mut rng = Rng::new(1);
        for rows in [1, 7, 8, 9, 17, 40] {
            for cols in WIDTHS {
                let (layout, packed) = random_weights(&mut rng, rows, cols);
                for n in [1, 2, 3, 4, 5, 8, 13] {
                    let (xq, xs, sums) = random_acts(&mut rng, n, cols);
                    let acts = Q8Acts { cols, quants: &xq, scales: &xs, sums: &[] };
                    let nb = cols / Q8_BLOCK;
                    for range in row_ranges(rows) {
                        let stride = range.len() + 3; // gaps between tokens stay untouched
                        let mut want = vec![f32::NAN; n * stride];
                        let mut got = want.clone();
                        reference::matmul_q4_kr(&packed, cols, range.clone(), &acts, &sums, n, &mut want, stride);
                        table_matmul(&k, &packed, cols, range.clone(), &acts, &sums, n, &mut got, stride);
                        let what = format!("{} rows {range:?}/{rows} cols {cols} n {n}", k.name());
                        assert_close(&what, &got, &want, |i| {
                            let (t, j) = (i / stride, i % stride);
                            if j >= range.len() {
                                return 0.0; // must stay NaN
                            }
                            1e-5 * magnitude(&layout, &packed, range.start + j, &xq[t * cols..], &xs[t * nb..]) + 1e-30
                        });
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_q4_kr_is_batch_invariant() {
    for k in tables() {
        let mut rng = Rng::new(3);
        for cols in [576, 640, 224] {
            let (rows, n) = (41, 23);
            let (_, packed) = random_weights(&mut rng, rows, cols);
            let (xq, xs, sums) = random_acts(&mut rng, n, cols);
            let nb = cols / Q8_BLOCK;
            let mut all = vec![0f32; n * rows];
            let acts = Q8Acts { cols, quants: &xq, scales: &xs, sums: &[] };
            table_matmul(&k, &packed, cols, 0..rows, &acts, &sums, n, &mut all, rows);
            for (t0, tn) in [(0, 8), (3, 7), (19, 4), (22, 1), (5, 13)] {
                let acts = Q8Acts {
                    cols,
                    quants: &xq[t0 * cols..][..tn * cols],
                    scales: &xs[t0 * nb..][..tn * nb],
                    sums: &[],
                };
                for range in row_ranges(rows) {
                    let mut got = vec![0f32; tn * range.len()];
                    table_matmul(&k, &packed, cols, range.clone(), &acts, &sums[t0 * nb..], tn, &mut got, range.len());
                    let want: Vec<f32> = (t0..t0 + tn).flat_map(|t| all[t * rows..][range.clone()].to_vec()).collect();
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{} cols {cols} tokens {t0}..+{tn} rows {range:?}", k.name());
                }
            }
        }
    }
}
