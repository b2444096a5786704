//! Scalar matmul of gpt-fast's q4_kr weights (`gpt_fast_quant::q4_kr`) with
//! q8 activations and their block sums: the specification its SIMD kernels
//! are tested against. Each row is read back through the quant crate's
//! layout (no offset arithmetic shared with the kernels); per 32-value block
//! `b` with scale `sc`, minimum `m`, in block order, as Q4_K's:
//! `acc += (d·sc) · (x_scale · Σ q·xq) − (dmin·m) · x_sum`.

use std::ops::Range;

use gpt_fast_quant::q4_kr::Q4KrLayout;

use crate::{Q8Acts, Q8_BLOCK};

/// `out[t * out_stride + (r - rows.start)] = dot(row r, token t)` for a packed
/// q4_kr matrix `cols` wide; `x_sums[t * cols / 32 + b]` is block `b`'s
/// `scale × Σ quants`.
#[allow(clippy::too_many_arguments)] // the matmul signature plus the activation sums
pub fn matmul_q4_kr(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    x_sums: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let layout = Q4KrLayout::new(rows.end, cols).expect("q4_kr matmul: cols must be a multiple of 32");
    let nb = cols / Q8_BLOCK;
    for (i, r) in rows.enumerate() {
        let fit = layout.read_row(w, r);
        let (d, dmin) = (fit.d.to_f32(), fit.dmin.to_f32());
        for t in 0..n {
            let (xq, xs, xsum) = (&x.quants[t * cols..][..cols], &x.scales[t * nb..][..nb], &x_sums[t * nb..][..nb]);
            let mut acc = 0f32;
            for (b, &(sc, m)) in fit.scale_min.iter().enumerate() {
                let (q, xb) = (&fit.quants[b * Q8_BLOCK..][..Q8_BLOCK], &xq[b * Q8_BLOCK..][..Q8_BLOCK]);
                let isum: i32 = q.iter().zip(xb).map(|(&q, &x)| i32::from(q) * i32::from(x)).sum();
                acc += super::kquant::with_minimum(d, dmin, sc, m, isum, xs[b], xsum[b]);
            }
            out[t * out_stride + i] = acc;
        }
    }
}
