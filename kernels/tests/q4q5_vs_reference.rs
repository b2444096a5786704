//! The Q4_0/Q4_1/Q5_0/Q5_1 matmul of every SIMD table this CPU can run,
//! against the scalar reference (`reference::matmul_q4q5`), on random GGUF
//! blocks packed as the converter packs them.
//!
//! Error budget: `|got - want| <= 1e-5 × Σ_b (|d·xs·isum_b| + |m'·sum_b|)`,
//! the magnitude of the terms each output sums (the SIMD kernels fuse the two
//! multiply-adds of each block, the reference rounds each). Bit-exact: an
//! output does not depend on the tokens or rows it was computed with.

mod common;

use common::{assert_bits, assert_close, block_sums, random_acts, row_ranges, tables, Rng};
use gpt_fast_kernels::q4q5::{Q4Q5Weight, Q8SumActs};
use gpt_fast_kernels::{reference, Acts, Kernels, Matrix, Q8Acts, Q8_BLOCK};
use gpt_fast_quant::q4q5::{block_quants, dequantize_row, pack_rows, Kind, PackedLayout};
use half::f16;

/// A packed matrix of `kind` from random GGUF blocks: random nibbles and
/// fifth bits (some blocks all 0 or all at the maximum), scales and minimums of
/// either sign, some zero, some at f16's extremes. Kept in u32s so the
/// planes are aligned as in the model file.
fn random_packed(rng: &mut Rng, kind: Kind, rows: usize, cols: usize) -> (Vec<u32>, PackedLayout) {
    let layout = PackedLayout::new(kind, rows, cols).unwrap();
    let block_bytes = kind.gguf_block_bytes();
    let mut gguf = vec![0u8; rows * layout.gguf_row_bytes()];
    for block in gguf.chunks_exact_mut(block_bytes) {
        let halves = if kind.has_min() { 2 } else { 1 };
        let fill = rng.below(10);
        for byte in block.iter_mut().skip(2 * halves) {
            *byte = match fill {
                0 => 0,
                1 => 0xFF,
                _ => rng.next_u64() as u8,
            };
        }
        for h in 0..halves {
            let v = f16::from_f32(match rng.below(12) {
                0 => 65504.0,
                1 => 6.0e-8,
                2 => 0.0,
                _ => rng.f32() * 0.05,
            });
            block[2 * h..2 * h + 2].copy_from_slice(&v.to_bits().to_le_bytes());
        }
    }
    let mut words = vec![0u32; layout.n_bytes().div_ceil(4)];
    let row_bytes = layout.gguf_row_bytes();
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    pack_rows(&layout, |r| &gguf[r * row_bytes..][..row_bytes], &mut bytes[..layout.n_bytes()]);
    (words, layout)
}

fn weight<'a>(words: &'a [u32], layout: &PackedLayout) -> Q4Q5Weight<'a> {
    let bytes: &[u8] = bytemuck::cast_slice(words);
    Q4Q5Weight::from_bytes(layout.kind, layout.rows, layout.cols, &bytes[..layout.n_bytes()]).unwrap()
}

/// `Σ_b |d·xs·isum_b| + |m'·sum_b|` for one output.
fn magnitude(w: &Q4Q5Weight, row: usize, xq: &[i8], xs: &[f32], sums: &[f32]) -> f64 {
    (0..w.layout.blocks_per_row)
        .map(|b| {
            let (q, d, m) = block_quants(w.bytes, &w.layout, row, b);
            let d = f64::from(d.to_f32());
            let m = if w.kind.has_min() { f64::from(m.to_f32()) } else { -f64::from(w.kind.offset()) * d };
            let isum: i64 = q.iter().zip(&xq[b * Q8_BLOCK..]).map(|(&q, &x)| i64::from(q) * i64::from(x)).sum();
            (d * f64::from(xs[b]) * isum as f64).abs() + (m * f64::from(sums[b])).abs()
        })
        .sum()
}

/// `k`'s matmul for `w`'s kind, reached through its dtype table as the model reaches it.
fn table_matmul(
    k: &Kernels,
    w: &Q4Q5Weight,
    cols: usize,
    rows: std::ops::Range<usize>,
    x: &Q8SumActs,
    n: usize,
    out: &mut [f32],
    stride: usize,
) {
    let m = Matrix { rows: w.layout.rows, cols, dtype: w.kind.dtype(), data: w.bytes };
    let q8 = Q8Acts { cols, quants: x.quants, scales: x.scales, sums: x.sums };
    k.matmul(&m, rows, &Acts { x: &[], q8 }, n, out, stride);
}

fn check(k: &Kernels, rng: &mut Rng, w: &Q4Q5Weight, n: usize) {
    let (rows, cols) = (w.layout.rows, w.layout.cols);
    let (xq, xs) = random_acts(rng, n, cols);
    let sums = block_sums(&xq, &xs);
    let acts = Q8SumActs { cols, quants: &xq, scales: &xs, sums: &sums };
    let nb = cols / Q8_BLOCK;
    for range in row_ranges(rows) {
        let stride = range.len() + 3; // gaps between tokens stay untouched
        let mut want = vec![f32::NAN; n * stride];
        let mut got = want.clone();
        reference::matmul_q4q5(w, cols, range.clone(), &acts, n, &mut want, stride);
        table_matmul(k, w, cols, range.clone(), &acts, n, &mut got, stride);
        let what = format!("{} {} rows {range:?}/{rows} cols {cols} n {n}", k.name(), w.kind.name());
        assert_close(&what, &got, &want, |i| {
            let (t, j) = (i / stride, i % stride);
            if j >= range.len() {
                return 0.0; // must stay NaN: compared as NaN == NaN
            }
            let m = magnitude(w, range.start + j, &xq[t * cols..], &xs[t * nb..], &sums[t * nb..]);
            (1e-5 * m) as f32 + f32::MIN_POSITIVE
        });
    }
}

#[test]
fn matmul_q4q5_matches_reference() {
    for k in tables() {
        let mut rng = Rng::new(11);
        for kind in Kind::ALL {
            for rows in [1, 7, 8, 9, 17, 100] {
                for cols in [32, 96, 576, 1536] {
                    let (words, layout) = random_packed(&mut rng, kind, rows, cols);
                    let w = weight(&words, &layout);
                    for n in [1, 2, 3, 4, 5, 9] {
                        check(&k, &mut rng, &w, n);
                    }
                }
            }
        }
    }
}

/// The reference itself against the f64 dot product of the GGUF's
/// dequantized values (ggml's decoder) with the dequantized activations: the
/// `m'` rewrite of Q4_0/Q5_0's offset and the sums are what they claim.
#[test]
fn reference_is_the_dot_product_of_the_gguf_values() {
    let mut rng = Rng::new(12);
    for kind in Kind::ALL {
        let (rows, cols, n) = (9, 96, 2);
        let (words, layout) = random_packed(&mut rng, kind, rows, cols);
        let w = weight(&words, &layout);
        let (xq, xs) = random_acts(&mut rng, n, cols);
        let sums = block_sums(&xq, &xs);
        let acts = Q8SumActs { cols, quants: &xq, scales: &xs, sums: &sums };
        let mut got = vec![0f32; n * rows];
        reference::matmul_q4q5(&w, cols, 0..rows, &acts, n, &mut got, rows);
        let mut values = vec![0f32; cols];
        for r in 0..rows {
            dequantize_row(w.bytes, &layout, r, &mut values);
            for t in 0..n {
                let x = |c: usize| f64::from(xs[t * cols / Q8_BLOCK + c / Q8_BLOCK]) * f64::from(xq[t * cols + c]);
                let want: f64 = (0..cols).map(|c| f64::from(values[c]) * x(c)).sum();
                let m = magnitude(&w, r, &xq[t * cols..], &xs[t * cols / Q8_BLOCK..], &sums[t * cols / Q8_BLOCK..]);
                let g = f64::from(got[t * rows + r]);
                assert!((g - want).abs() <= 1e-5 * m + 1e-30, "{kind:?} row {r} token {t}: {g} vs {want}");
            }
        }
    }
}

/// An output does not depend on the call it was computed in: the same token
/// and row give the same bits whatever the token count, the token's position
/// in the batch, and the row range (the model's prefill relies on it).
#[test]
fn matmul_q4q5_is_batch_invariant() {
    for k in tables() {
        let mut rng = Rng::new(13);
        for kind in Kind::ALL {
            let (rows, cols, n) = (40, 576, 20);
            let (words, layout) = random_packed(&mut rng, kind, rows, cols);
            let w = weight(&words, &layout);
            let (xq, xs) = random_acts(&mut rng, n, cols);
            let sums = block_sums(&xq, &xs);
            let nb = cols / Q8_BLOCK;
            let mut all = vec![0f32; n * rows];
            let acts = Q8SumActs { cols, quants: &xq, scales: &xs, sums: &sums };
            table_matmul(&k, &w, cols, 0..rows, &acts, n, &mut all, rows);
            for (t0, tn) in [(0, 20), (3, 7), (10, 4), (19, 1), (0, 1), (5, 2)] {
                let (q, s, m) = (&xq[t0 * cols..][..tn * cols], &xs[t0 * nb..][..tn * nb], &sums[t0 * nb..][..tn * nb]);
                let acts = Q8SumActs { cols, quants: q, scales: s, sums: m };
                for range in row_ranges(rows) {
                    let mut got = vec![0f32; tn * range.len()];
                    table_matmul(&k, &w, cols, range.clone(), &acts, tn, &mut got, range.len());
                    let want: Vec<f32> = (t0..t0 + tn).flat_map(|t| all[t * rows..][range.clone()].to_vec()).collect();
                    assert_bits(&format!("{} {kind:?} tokens {t0}..+{tn} rows {range:?}", k.name()), &got, &want);
                }
            }
        }
    }
}
