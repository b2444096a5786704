//! AVX2 + FMA + F16C kernels (Intel Haswell and later, AMD Zen and later).
//!
//! Layout: `matmul` holds the three matmuls (where decode spends its time),
//! `elementwise` the norms, activations, RoPE and attention, `simd` the
//! load/store and reduction helpers (the only `unsafe` blocks besides the
//! wrappers below). Every function here has the same signature and semantics
//! as its namesake in [`crate::reference`], which the tests compare against.

mod elementwise;
pub(super) mod matmul;
pub(super) mod simd;

use std::ops::Range;

use half::f16;

use crate::{Isa, Kernels, Q8Acts};

/// Whether this CPU can run the AVX2 kernels.
pub fn is_available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

/// The AVX2 kernel table, or `None` when this CPU lacks AVX2, FMA or F16C.
pub fn kernels() -> Option<Kernels> {
    if !is_available() {
        return None;
    }
    Some(Kernels {
        isa: Isa::Avx2,
        name: "avx2",
        matmul_f32,
        matmul_f16,
        matmul_q8,
        quantize_q8_acts,
        rmsnorm,
        layernorm,
        softmax,
        rope,
        swiglu,
        gelu_tanh,
        add,
        attention_head,
    })
}

// The safe wrappers below are private: the only way to reach them is through
// the table `kernels()` returns, and it returns one only after `is_available()`
// saw AVX2, FMA and F16C. That is the proof every `SAFETY` comment below cites.

fn matmul_f32(w: &[f32], cols: usize, rows: Range<usize>, x: &[f32], n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { matmul::matmul_f32(w, cols, rows, x, n, out, out_stride) }
}

fn matmul_f16(w: &[f16], cols: usize, rows: Range<usize>, x: &[f32], n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { matmul::matmul_f16(w, cols, rows, x, n, out, out_stride) }
}

fn matmul_q8(
    quants: &[i8],
    scales: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { matmul::matmul_q8(quants, scales, cols, rows, x, n, out, out_stride) }
}

fn quantize_q8_acts(x: &[f32], quants: &mut [i8], scales: &mut [f32]) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { matmul::quantize_q8_acts(x, quants, scales) }
}

fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { elementwise::rmsnorm(x, weight, eps, out) }
}

fn layernorm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { elementwise::layernorm(x, weight, bias, eps, out) }
}

fn softmax(x: &mut [f32]) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { elementwise::softmax(x) }
}

fn rope(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { elementwise::rope(x, head_dim, cos, sin) }
}

fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { elementwise::swiglu(gate, up, out) }
}

fn gelu_tanh(x: &mut [f32]) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { elementwise::gelu_tanh(x) }
}

fn add(acc: &mut [f32], x: &[f32]) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { elementwise::add(acc, x) }
}

fn attention_head(q: &[f32], keys: &[f32], values: &[f32], n_pos: usize, scores: &mut [f32], out: &mut [f32]) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { elementwise::attention_head(q, keys, values, n_pos, scores, out) }
}
