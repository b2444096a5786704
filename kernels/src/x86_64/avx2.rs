//! AVX2 + FMA + F16C kernels (Intel Haswell and later, AMD Zen and later).
//!
//! Layout: `matmul` holds the q8 matmul (where decode spends its time) and
//! the activation quantizer, `matmul_float` the f32/f16 matmuls,
//! `attention` the attention over the KV cache, `elementwise` the norms,
//! activations and RoPE, `simd` the load/store and reduction helpers (with a
//! few unchecked loads in the inner loops, the only `unsafe` blocks besides
//! the wrappers below). Every function here has the same signature and semantics
//! as its namesake in [`crate::reference`], which the tests compare against.

mod attention;
mod elementwise;
mod gemm_q8;
pub(super) mod matmul;
pub(super) mod matmul_float;
pub(super) mod matmul_k;
pub(super) mod matmul_q4q5;
pub(super) mod simd;

use std::ops::Range;

use half::f16;

use crate::{q4q5, reference, Acts, AttnShape, DType, Isa, Kernels, Matrix};

/// Whether this CPU can run the AVX2 kernels.
pub fn is_available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

/// The AVX2 kernel table, or `None` when this CPU lacks AVX2, FMA or F16C.
pub fn kernels() -> Option<Kernels> {
    if !is_available() {
        return None;
    }
    let mut k = Kernels {
        matmuls: reference::matmuls(),
        isa: Isa::Avx2,
        name: "avx2",
        quantize_q8_acts,
        rmsnorm,
        layernorm,
        softmax,
        rope,
        swiglu,
        gelu_tanh,
        add,
        attention_f32,
        attention_f16,
    };
    k.set_matmul(DType::F32, matmul_f32);
    k.set_matmul(DType::F16, matmul_f16);
    k.set_matmul(DType::Q8, matmul_q8);
    for dtype in q4q5::dtypes() {
        k.set_matmul(dtype, matmul_q4q5);
    }
    k.set_matmul(DType::Q4_K, matmul_q4_k);
    k.set_matmul(DType::Q5_K, matmul_q5_k);
    k.set_matmul(DType::Q6_K, matmul_q6_k);
    Some(k)
}

// The safe wrappers below are private: the only way to reach them is through
// the table `kernels()` returns, and it returns one only after `is_available()`
// saw AVX2, FMA and F16C. That is the proof every `SAFETY` comment below cites.

fn matmul_f32(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { matmul_float::matmul_f32(w.f32s(), w.cols, rows, x.x, n, out, out_stride) }
}

fn matmul_f16(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { matmul_float::matmul_f16(w.f16s(), w.cols, rows, x.x, n, out, out_stride) }
}

fn matmul_q8(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    let (quants, scales) = w.q8_planes();
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { matmul::matmul_q8(quants, scales, w.cols, rows, &x.q8, n, out, out_stride) }
}

fn matmul_q4_k(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { matmul_k::matmul_q4_k(w.data, w.cols, rows, &x.q8, x.q8.sums, n, out, out_stride) }
}

fn matmul_q5_k(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { matmul_k::matmul_q5_k(w.data, w.cols, rows, &x.q8, x.q8.sums, n, out, out_stride) }
}

fn matmul_q6_k(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { matmul_k::matmul_q6_k(w.data, w.cols, rows, &x.q8, x.q8.sums, n, out, out_stride) }
}

fn matmul_q4q5(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    let (weight, acts) = q4q5::views(w, x);
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { matmul_q4q5::matmul_q4q5(&weight, w.cols, rows, &acts, n, out, out_stride) }
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

fn attention_f32(shape: &AttnShape, q: &[f32], keys: &[f32], values: &[f32], scratch: &mut [f32], out: &mut [f32]) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { attention::attention_f32(shape, q, keys, values, scratch, out) }
}

fn attention_f16(shape: &AttnShape, q: &[f32], keys: &[f16], values: &[f16], scratch: &mut [f32], out: &mut [f32]) {
    // SAFETY: reached only through `kernels()`, which checked avx2, fma and f16c.
    unsafe { attention::attention_f16(shape, q, keys, values, scratch, out) }
}
