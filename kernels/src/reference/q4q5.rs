//! The scalar Q4_0/Q4_1/Q5_0/Q5_1 matmul: the specification of every ISA's.

use std::ops::Range;

use gpt_fast_quant::q4q5::block_quants;

use crate::q4q5::{Q4Q5Weight, Q8SumActs, Q4Q5_BLOCK};

/// `out[t * out_stride + (r - rows.start)] = dot(w[r], x[t])` for `r` in
/// `rows`, `t < n`, over blocks `b` of 32 columns:
///
/// `Σ_b d·xs·(Σ_i q_i·xq_i) + m'·sum`, with `q` the unsigned 4- or 5-bit
/// quants, `xq`, `xs`, `sum` the activations' quants, scale and sum, and
/// `m' = m` (Q4_1, Q5_1) or `-offset·d` (Q4_0: 8, Q5_0: 16) — the block's
/// values `q·d + m'` exactly, as `(q - offset)·d = q·d - offset·d`. The inner
/// sum is exact (i32); each block adds its two terms in that order.
pub fn matmul_q4q5(
    w: &Q4Q5Weight,
    cols: usize,
    rows: Range<usize>,
    x: &Q8SumActs,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let nb = cols / Q4Q5_BLOCK;
    for t in 0..n {
        let xq = &x.quants[t * cols..][..cols];
        let (xs, sums) = (&x.scales[t * nb..][..nb], &x.sums[t * nb..][..nb]);
        for (o, r) in out[t * out_stride..].iter_mut().zip(rows.clone()) {
            let mut acc = 0f32;
            for b in 0..nb {
                let (q, d, m) = block(w, r, b);
                let isum: i32 =
                    q.iter().zip(&xq[b * Q4Q5_BLOCK..][..Q4Q5_BLOCK]).map(|(&q, &x)| i32::from(q) * i32::from(x)).sum();
                acc += d * xs[b] * isum as f32;
                acc += m * sums[b];
            }
            *o = acc;
        }
    }
}

/// Row `r`'s block `b`: its quants, `d` and `m'` (see [`matmul_q4q5`]).
fn block(w: &Q4Q5Weight, r: usize, b: usize) -> ([u8; Q4Q5_BLOCK], f32, f32) {
    let (q, d, m) = block_quants(w.bytes, &w.layout, r, b);
    let d = d.to_f32();
    let m = if w.kind.has_min() { m.to_f32() } else { -(w.kind.offset() as f32) * d };
    (q, d, m)
}
