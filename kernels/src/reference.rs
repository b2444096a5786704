//! Scalar kernels: the specification of every operation, and the fallback.
//!
//! Shapes are checked by the callers' types and by debug assertions; the SIMD
//! modules implement the same signatures and are tested against these.

mod kquant;
mod q4_kr;
mod q4q5;

use std::ops::Range;

use half::f16;

use crate::{Acts, AttnShape, DType, Matmul, Q8Acts, Q8_BLOCK, Q8_TILE_ROWS};

/// Every dtype's reference matmul, by [`DType::index`]: the table every ISA
/// starts from, and what the tests compare each ISA's kernels with.
pub fn matmuls() -> [Matmul; DType::COUNT] {
    DType::ALL.map(matmul_for)
}

/// `dtype`'s reference matmul, as a [`Matmul`].
pub fn matmul_for(dtype: DType) -> Matmul {
    match dtype {
        DType::F32 => |w, rows, x: &Acts, n, out, stride| matmul_f32(w.f32s(), w.cols, rows, x.x, n, out, stride),
        DType::F16 => |w, rows, x: &Acts, n, out, stride| matmul_f16(w.f16s(), w.cols, rows, x.x, n, out, stride),
        DType::Q8 => |w, rows, x: &Acts, n, out, stride| {
            let (quants, scales) = w.q8_planes();
            matmul_q8(quants, scales, w.cols, rows, &x.q8, n, out, stride)
        },
        DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 => |w, rows, x: &Acts, n, out, stride| {
            let (weight, acts) = crate::q4q5::views(w, x);
            matmul_q4q5(&weight, w.cols, rows, &acts, n, out, stride)
        },
        DType::Q4_K => {
            |w, rows, x: &Acts, n, out, stride| matmul_q4_k(w.data, w.cols, rows, &x.q8, x.q8.sums, n, out, stride)
        }
        DType::Q5_K => {
            |w, rows, x: &Acts, n, out, stride| matmul_q5_k(w.data, w.cols, rows, &x.q8, x.q8.sums, n, out, stride)
        }
        DType::Q6_K => {
            |w, rows, x: &Acts, n, out, stride| matmul_q6_k(w.data, w.cols, rows, &x.q8, x.q8.sums, n, out, stride)
        }
        DType::Q4_KR => {
            |w, rows, x: &Acts, n, out, stride| matmul_q4_kr(w.data, w.cols, rows, &x.q8, x.q8.sums, n, out, stride)
        }
    }
}

pub use kquant::{matmul_q4_k, matmul_q5_k, matmul_q6_k};
pub use q4_kr::matmul_q4_kr;
pub use q4q5::matmul_q4q5;

/// `out[t * out_stride + (r - rows.start)] = dot(w[r], x[t])` for every `r` in
/// `rows` and token `t < n`: a row-major f32 weight (`cols` wide) times `n`
/// activation rows.
pub fn matmul_f32(w: &[f32], cols: usize, rows: Range<usize>, x: &[f32], n: usize, out: &mut [f32], out_stride: usize) {
    for t in 0..n {
        let xt = &x[t * cols..][..cols];
        for (o, r) in out[t * out_stride..].iter_mut().zip(rows.clone()) {
            *o = dot_f32(&w[r * cols..][..cols], xt);
        }
    }
}

/// As [`matmul_f32`], for an f16 weight.
pub fn matmul_f16(w: &[f16], cols: usize, rows: Range<usize>, x: &[f32], n: usize, out: &mut [f32], out_stride: usize) {
    for t in 0..n {
        let xt = &x[t * cols..][..cols];
        for (o, r) in out[t * out_stride..].iter_mut().zip(rows.clone()) {
            *o = w[r * cols..][..cols].iter().zip(xt).map(|(a, b)| a.to_f32() * b).sum();
        }
    }
}

/// As [`matmul_f32`], for a packed q8 weight and q8 activations: per block, an
/// exact integer dot product scaled by both blocks' scales, summed in block order.
pub fn matmul_q8(
    quants: &[i8],
    scales: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let nb = cols / Q8_BLOCK;
    for t in 0..n {
        let xq = &x.quants[t * cols..][..cols];
        let xs = &x.scales[t * nb..][..nb];
        for (o, r) in out[t * out_stride..].iter_mut().zip(rows.clone()) {
            let (tile, lane) = (r / Q8_TILE_ROWS, r % Q8_TILE_ROWS);
            let mut acc = 0f32;
            for b in 0..nb {
                let group = tile * nb + b;
                let wq = &quants[(group * Q8_TILE_ROWS + lane) * Q8_BLOCK..][..Q8_BLOCK];
                let isum: i32 =
                    wq.iter().zip(&xq[b * Q8_BLOCK..][..Q8_BLOCK]).map(|(&a, &b)| i32::from(a) * i32::from(b)).sum();
                acc += scales[group * Q8_TILE_ROWS + lane].to_f32() * xs[b] * isum as f32;
            }
            *o = acc;
        }
    }
}

/// Quantizes activation rows to q8 blocks of 32 (`scale = max|x| / 127`,
/// round half away from zero), the counterpart of the weights' format.
pub fn quantize_q8_acts(x: &[f32], quants: &mut [i8], scales: &mut [f32]) {
    for ((xb, qb), s) in x.chunks_exact(Q8_BLOCK).zip(quants.chunks_exact_mut(Q8_BLOCK)).zip(scales.iter_mut()) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        for (q, &v) in qb.iter_mut().zip(xb) {
            *q = (v * inv).round() as i8;
        }
        *s = scale;
    }
}

/// `sums[b] = scales[b] × Σ quants[32 b..32 b + 32]`: the activations'
/// block sums that weights with a per-block offset multiply by it.
pub fn q8_block_sums(quants: &[i8], scales: &[f32], sums: &mut [f32]) {
    for ((sum, qb), &s) in sums.iter_mut().zip(quants.chunks_exact(Q8_BLOCK)).zip(scales) {
        *sum = s * qb.iter().map(|&q| i32::from(q)).sum::<i32>() as f32;
    }
}

/// `Σ a[i] b[i]` over the shorter length, summed in order.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `out = x / rms(x) * weight`.
pub fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (mean_sq + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * inv * w;
    }
}

/// `out = (x - mean) / std * weight + bias`.
pub fn layernorm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for (((o, &v), &w), &b) in out.iter_mut().zip(x).zip(weight).zip(bias) {
        *o = (v - mean) * inv * w + b;
    }
}

/// Numerically stable softmax in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Rotary position embedding, rotate-half pairing (`i`, `i + head_dim/2`), on
/// each of the `x.len() / head_dim` heads; `cos`/`sin` hold `head_dim / 2`
/// values for this position.
pub fn rope(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    for head in x.chunks_exact_mut(head_dim) {
        let (a, b) = head.split_at_mut(half);
        for i in 0..half {
            let (x0, x1) = (a[i], b[i]);
            a[i] = x0 * cos[i] - x1 * sin[i];
            b[i] = x0 * sin[i] + x1 * cos[i];
        }
    }
}

/// SwiGLU: `out[i] = silu(gate[i]) * up[i]`.
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// GELU, tanh approximation (GPT-2's `gelu_new`), in place.
pub fn gelu_tanh(x: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for v in x.iter_mut() {
        let u = *v;
        *v = 0.5 * u * (1.0 + (SQRT_2_OVER_PI * (u + 0.044_715 * u * u * u)).tanh());
    }
}

/// `acc += x`.
pub fn add(acc: &mut [f32], x: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}

/// Causal attention of one KV head for `shape.rows()` query rows (see
/// [`AttnShape`] for the layout): each row gets
/// `softmax(q·K^T / sqrt(head_dim)) V` over the slots it attends to.
///
/// One pass over the keys with a running maximum `m` and sum `l` (online
/// softmax): when a score exceeds `m`, what was accumulated so far is rescaled
/// by `exp(m_old - m_new)`, so no exponent is ever positive. Keys and values are
/// `f32` or `f16` (widened exactly). `scratch` is unused here but checked, as
/// the SIMD kernels need it.
pub fn attention<T: Copy + Into<f32>>(
    shape: &AttnShape,
    q: &[f32],
    keys: &[T],
    values: &[T],
    scratch: &mut [f32],
    out: &mut [f32],
) {
    shape.check(q.len(), [keys.len(), values.len()], scratch.len(), out.len());
    let hd = shape.head_dim;
    let scale = 1.0 / (hd as f32).sqrt();
    for r in 0..shape.rows() {
        let q = shape.query(q, r);
        let o = &mut out[r * hd..][..hd];
        o.fill(0.0);
        let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
        for slot in 0..shape.n_pos + r / shape.group {
            let (k, v) = (&keys[slot * hd..][..hd], &values[slot * hd..][..hd]);
            let s = k.iter().zip(q).map(|(&k, q)| k.into() * q).sum::<f32>() * scale;
            if s > m {
                let alpha = (m - s).exp();
                l *= alpha;
                o.iter_mut().for_each(|o| *o *= alpha);
                m = s;
            }
            let p = (s - m).exp();
            l += p;
            for (o, &v) in o.iter_mut().zip(v) {
                *o += p * v.into();
            }
        }
        let inv = 1.0 / l;
        o.iter_mut().for_each(|o| *o *= inv);
    }
}
