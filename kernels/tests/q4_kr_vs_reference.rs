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

use std::ops::Range;

use gpt_fast_kernels::{reference, Acts, DType, Isa, Kernels, Matrix, Q8Acts, Q8_BLOCK};
use gpt_fast_quant::q4_kr::{Q4KrLayout, DMIN, TILE_ROWS};

fn tables() -> Vec<Kernels> {
    let mut found = Vec::new();
    for isa in [Isa::Avx2, Isa::Avx512, Isa::Neon] {
        match Kernels::for_isa(isa) {
            Some(k) => {
                println!("testing: {}", k.name());
                found.push(k);
            }
            None => println!("skipped: {} not available on this CPU (or in this build)", isa.name()),
        }
    }
    found
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

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

/// `n` activation rows quantized by the reference, some blocks zero or large,
/// with their block sums.
fn random_acts(rng: &mut Rng, n: usize, cols: usize) -> (Vec<i8>, Vec<f32>, Vec<f32>) {
    let nb = cols / Q8_BLOCK;
    let mut x: Vec<f32> = (0..n * cols).map(|_| rng.f32() * 2.0).collect();
    for block in x.chunks_exact_mut(Q8_BLOCK) {
        match rng.below(8) {
            0 => block.fill(0.0),
            1 => block.iter_mut().for_each(|v| *v *= 1000.0),
            _ => {}
        }
    }
    let (mut quants, mut scales, mut sums) = (vec![0i8; n * cols], vec![0f32; n * nb], vec![0f32; n * nb]);
    reference::quantize_q8_acts(&x, &mut quants, &mut scales);
    reference::q8_block_sums(&quants, &scales, &mut sums);
    (quants, scales, sums)
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

fn row_ranges(rows: usize) -> Vec<Range<usize>> {
    let mut r = Vec::new();
    r.push(0..rows);
    if rows > 3 {
        r.extend([3..rows, 0..rows - 2, rows / 2..rows / 2 + 1]);
    }
    if rows > 20 {
        r.push(5..rows - 11);
    }
    r
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
                        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                            let (t, j) = (i / stride, i % stride);
                            let tol = if j >= range.len() {
                                0.0 // must stay NaN
                            } else {
                                1e-5 * magnitude(&layout, &packed, range.start + j, &xq[t * cols..], &xs[t * nb..])
                                    + 1e-30
                            };
                            let ok = g == w || (g.is_nan() && w.is_nan()) || f64::from((g - w).abs()) <= tol;
                            assert!(ok, "{} rows {range:?}/{rows} cols {cols} n {n} [{i}]: got {g:e}, want {w:e} (tolerance {tol:e})", k.name());
                        }
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
