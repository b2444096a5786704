//! AVX2 norms, activations and RoPE: 8 lanes at a time, the last
//! `len % 8` values by the reference's scalar formula.
//!
//! Where the reference is a fixed sequence of IEEE operations (`add`, `rope`,
//! the per-element parts of the norms and activations) the same operations are
//! used in the same order, so those parts agree bit for bit; sums are taken in
//! 8 lanes (a different order), and `exp` is [`super::simd::exp`].

use std::arch::x86_64::*;

use super::simd::{exp, hmax, hsum, load8, store8};

/// `Σ (x[i] - mean)²` in 8 lanes plus a scalar tail.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
    let m = _mm256_set1_ps(mean);
    let mut acc = _mm256_setzero_ps();
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
    for c in chunks {
        let d = _mm256_sub_ps(load8(c), m);
        acc = _mm256_fmadd_ps(d, d, acc);
    }
    hsum(acc) + tail
}

/// `out[i] = (x[i] - shift) * inv * weight[i] (+ bias[i])`, as the references.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn normalize(x: &[f32], shift: Option<f32>, inv: f32, weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let len = x.len().min(weight.len()).min(out.len()).min(bias.map_or(usize::MAX, <[f32]>::len));
    let main = len / 8 * 8;
    let inv_v = _mm256_set1_ps(inv);
    for i in (0..main).step_by(8) {
        let mut v = load8(&x[i..]);
        if let Some(s) = shift {
            v = _mm256_sub_ps(v, _mm256_set1_ps(s));
        }
        let mut y = _mm256_mul_ps(_mm256_mul_ps(v, inv_v), load8(&weight[i..]));
        if let Some(b) = bias {
            y = _mm256_add_ps(y, load8(&b[i..]));
        }
        store8(&mut out[i..], y);
    }
    for i in main..len {
        let v = x[i] - shift.unwrap_or(0.0);
        out[i] = v * inv * weight[i] + bias.map_or(0.0, |b| b[i]);
    }
}

/// As [`crate::reference::rmsnorm`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let mean_sq = sum_sq_dev(x, 0.0) / x.len() as f32;
    let inv = 1.0 / (mean_sq + eps).sqrt();
    normalize(x, None, inv, weight, None, out);
}

/// As [`crate::reference::layernorm`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn layernorm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len() as f32;
    let mut acc = _mm256_setzero_ps();
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        acc = _mm256_add_ps(acc, load8(c));
    }
    let mean = (hsum(acc) + tail) / n;
    let var = sum_sq_dev(x, mean) / n;
    let inv = 1.0 / (var + eps).sqrt();
    normalize(x, Some(mean), inv, weight, Some(bias), out);
}

/// As [`crate::reference::softmax`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn softmax(x: &mut [f32]) {
    let main = x.len() / 8 * 8;
    // maxps returns its second operand when either is NaN: NaNs are skipped as
    // `f32::max` skips them.
    let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
    for i in (0..main).step_by(8) {
        m = _mm256_max_ps(load8(&x[i..]), m);
    }
    let max = x[main..].iter().fold(hmax(m), |m, &v| m.max(v));
    let max_v = _mm256_set1_ps(max);
    let mut sum = _mm256_setzero_ps();
    for i in (0..main).step_by(8) {
        let e = exp(_mm256_sub_ps(load8(&x[i..]), max_v));
        store8(&mut x[i..], e);
        sum = _mm256_add_ps(sum, e);
    }
    let mut tail = 0.0;
    for v in &mut x[main..] {
        *v = (*v - max).exp();
        tail += *v;
    }
    let inv = 1.0 / (hsum(sum) + tail);
    let inv_v = _mm256_set1_ps(inv);
    for i in (0..main).step_by(8) {
        let y = _mm256_mul_ps(load8(&x[i..]), inv_v);
        store8(&mut x[i..], y);
    }
    for v in &mut x[main..] {
        *v *= inv;
    }
}

/// As [`crate::reference::rope`], bit for bit (same products and sums, no FMA).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rope(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    let (cos, sin) = (&cos[..half], &sin[..half]);
    let main = half / 8 * 8;
    for head in x.chunks_exact_mut(head_dim) {
        let (a, b) = head.split_at_mut(half);
        for i in (0..main).step_by(8) {
            let (x0, x1) = (load8(&a[i..]), load8(&b[i..]));
            let (c, s) = (load8(&cos[i..]), load8(&sin[i..]));
            store8(&mut a[i..], _mm256_sub_ps(_mm256_mul_ps(x0, c), _mm256_mul_ps(x1, s)));
            store8(&mut b[i..], _mm256_add_ps(_mm256_mul_ps(x0, s), _mm256_mul_ps(x1, c)));
        }
        for i in main..half {
            let (x0, x1) = (a[i], b[i]);
            a[i] = x0 * cos[i] - x1 * sin[i];
            b[i] = x0 * sin[i] + x1 * cos[i];
        }
    }
}

/// As [`crate::reference::swiglu`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let len = gate.len().min(up.len()).min(out.len());
    let main = len / 8 * 8;
    let one = _mm256_set1_ps(1.0);
    let neg = _mm256_set1_ps(-0.0);
    for i in (0..main).step_by(8) {
        let g = load8(&gate[i..]);
        let silu = _mm256_div_ps(g, _mm256_add_ps(one, exp(_mm256_xor_ps(g, neg))));
        store8(&mut out[i..], _mm256_mul_ps(silu, load8(&up[i..])));
    }
    for i in main..len {
        let g = gate[i];
        out[i] = g / (1.0 + (-g).exp()) * up[i];
    }
}

/// As [`crate::reference::gelu_tanh`], with `tanh(y) = 1 - 2 / (e^{2y} + 1)`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gelu_tanh(x: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let main = x.len() / 8 * 8;
    let set = _mm256_set1_ps;
    for i in (0..main).step_by(8) {
        let u = load8(&x[i..]);
        let cube = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(set(0.044_715), u), u), u);
        let y = _mm256_mul_ps(set(SQRT_2_OVER_PI), _mm256_add_ps(u, cube));
        let e = exp(_mm256_add_ps(y, y));
        let tanh = _mm256_sub_ps(set(1.0), _mm256_div_ps(set(2.0), _mm256_add_ps(e, set(1.0))));
        let out = _mm256_mul_ps(_mm256_mul_ps(set(0.5), u), _mm256_add_ps(set(1.0), tanh));
        store8(&mut x[i..], out);
    }
    for v in &mut x[main..] {
        let u = *v;
        *v = 0.5 * u * (1.0 + (SQRT_2_OVER_PI * (u + 0.044_715 * u * u * u)).tanh());
    }
}

/// As [`crate::reference::add`], bit for bit.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn add(acc: &mut [f32], x: &[f32]) {
    let len = acc.len().min(x.len());
    let main = len / 8 * 8;
    for i in (0..main).step_by(8) {
        let y = _mm256_add_ps(load8(&acc[i..]), load8(&x[i..]));
        store8(&mut acc[i..], y);
    }
    for i in main..len {
        acc[i] += x[i];
    }
}
