//! NEON norms, activations and RoPE: 4 lanes at a time, the last
//! `len % 4` values by the reference's scalar formula.
//!
//! Where the reference is a fixed sequence of IEEE operations (`add`, `rope`,
//! the per-element parts of the norms and activations) the same operations are
//! used in the same order, so those parts agree bit for bit; sums are taken in
//! 4 lanes (a different order), and `exp` is [`super::simd::exp`].

use std::arch::aarch64::*;

use super::simd::{exp, hmax, hsum, load4, store4};

/// `Σ (x[i] - mean)²` in 4 lanes plus a scalar tail.
#[inline]
#[target_feature(enable = "neon")]
fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
    let m = vdupq_n_f32(mean);
    let mut acc = vdupq_n_f32(0.0);
    let chunks = x.chunks_exact(4);
    let tail: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
    for c in chunks {
        let d = vsubq_f32(load4(c), m);
        acc = vfmaq_f32(acc, d, d);
    }
    hsum(acc) + tail
}

/// `out[i] = (x[i] - shift) * inv * weight[i] (+ bias[i])`, as the references.
#[inline]
#[target_feature(enable = "neon")]
fn normalize(x: &[f32], shift: Option<f32>, inv: f32, weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let len = x.len().min(weight.len()).min(out.len()).min(bias.map_or(usize::MAX, <[f32]>::len));
    let main = len / 4 * 4;
    let inv_v = vdupq_n_f32(inv);
    for i in (0..main).step_by(4) {
        let mut v = load4(&x[i..]);
        if let Some(s) = shift {
            v = vsubq_f32(v, vdupq_n_f32(s));
        }
        let mut y = vmulq_f32(vmulq_f32(v, inv_v), load4(&weight[i..]));
        if let Some(b) = bias {
            y = vaddq_f32(y, load4(&b[i..]));
        }
        store4(&mut out[i..], y);
    }
    for i in main..len {
        let v = x[i] - shift.unwrap_or(0.0);
        out[i] = v * inv * weight[i] + bias.map_or(0.0, |b| b[i]);
    }
}

/// As [`crate::reference::rmsnorm`].
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let mean_sq = sum_sq_dev(x, 0.0) / x.len() as f32;
    let inv = 1.0 / (mean_sq + eps).sqrt();
    normalize(x, None, inv, weight, None, out);
}

/// As [`crate::reference::layernorm`].
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn layernorm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len() as f32;
    let mut acc = vdupq_n_f32(0.0);
    let chunks = x.chunks_exact(4);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        acc = vaddq_f32(acc, load4(c));
    }
    let mean = (hsum(acc) + tail) / n;
    let var = sum_sq_dev(x, mean) / n;
    let inv = 1.0 / (var + eps).sqrt();
    normalize(x, Some(mean), inv, weight, Some(bias), out);
}

/// As [`crate::reference::softmax`].
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn softmax(x: &mut [f32]) {
    let main = x.len() / 4 * 4;
    // `fmaxnm` skips quiet NaNs as `f32::max` does.
    let mut m = vdupq_n_f32(f32::NEG_INFINITY);
    for i in (0..main).step_by(4) {
        m = vmaxnmq_f32(load4(&x[i..]), m);
    }
    let max = x[main..].iter().fold(hmax(m), |m, &v| m.max(v));
    let max_v = vdupq_n_f32(max);
    let mut sum = vdupq_n_f32(0.0);
    for i in (0..main).step_by(4) {
        let e = exp(vsubq_f32(load4(&x[i..]), max_v));
        store4(&mut x[i..], e);
        sum = vaddq_f32(sum, e);
    }
    let mut tail = 0.0;
    for v in &mut x[main..] {
        *v = (*v - max).exp();
        tail += *v;
    }
    let inv = 1.0 / (hsum(sum) + tail);
    let inv_v = vdupq_n_f32(inv);
    for i in (0..main).step_by(4) {
        let y = vmulq_f32(load4(&x[i..]), inv_v);
        store4(&mut x[i..], y);
    }
    for v in &mut x[main..] {
        *v *= inv;
    }
}

/// As [`crate::reference::rope`], bit for bit (same products and sums, no FMA).
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn rope(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    let (cos, sin) = (&cos[..half], &sin[..half]);
    let main = half / 4 * 4;
    for head in x.chunks_exact_mut(head_dim) {
        let (a, b) = head.split_at_mut(half);
        for i in (0..main).step_by(4) {
            let (x0, x1) = (load4(&a[i..]), load4(&b[i..]));
            let (c, s) = (load4(&cos[i..]), load4(&sin[i..]));
            store4(&mut a[i..], vsubq_f32(vmulq_f32(x0, c), vmulq_f32(x1, s)));
            store4(&mut b[i..], vaddq_f32(vmulq_f32(x0, s), vmulq_f32(x1, c)));
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
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let len = gate.len().min(up.len()).min(out.len());
    let main = len / 4 * 4;
    let one = vdupq_n_f32(1.0);
    for i in (0..main).step_by(4) {
        let g = load4(&gate[i..]);
        let silu = vdivq_f32(g, vaddq_f32(one, exp(vnegq_f32(g))));
        store4(&mut out[i..], vmulq_f32(silu, load4(&up[i..])));
    }
    for i in main..len {
        let g = gate[i];
        out[i] = g / (1.0 + (-g).exp()) * up[i];
    }
}

/// As [`crate::reference::gelu_tanh`], with `tanh(y) = 1 - 2 / (e^{2y} + 1)`.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn gelu_tanh(x: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let main = x.len() / 4 * 4;
    let set = vdupq_n_f32;
    for i in (0..main).step_by(4) {
        let u = load4(&x[i..]);
        let cube = vmulq_f32(vmulq_f32(vmulq_f32(set(0.044_715), u), u), u);
        let y = vmulq_f32(set(SQRT_2_OVER_PI), vaddq_f32(u, cube));
        let e = exp(vaddq_f32(y, y));
        let tanh = vsubq_f32(set(1.0), vdivq_f32(set(2.0), vaddq_f32(e, set(1.0))));
        let out = vmulq_f32(vmulq_f32(set(0.5), u), vaddq_f32(set(1.0), tanh));
        store4(&mut x[i..], out);
    }
    for v in &mut x[main..] {
        let u = *v;
        *v = 0.5 * u * (1.0 + (SQRT_2_OVER_PI * (u + 0.044_715 * u * u * u)).tanh());
    }
}

/// As [`crate::reference::add`], bit for bit.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn add(acc: &mut [f32], x: &[f32]) {
    let len = acc.len().min(x.len());
    let main = len / 4 * 4;
    for i in (0..main).step_by(4) {
        let y = vaddq_f32(load4(&acc[i..]), load4(&x[i..]));
        store4(&mut acc[i..], y);
    }
    for i in main..len {
        acc[i] += x[i];
    }
}
