//! NEON (Advanced SIMD) kernels, for every AArch64 CPU; the q8 matmul uses SDOT
//! where the CPU has the dotprod extension (Arm Cortex-A55/A75 and later, Apple
//! M1 and later, Neoverse N1 and later).
//!
//! Layout as in the AVX2 module: `matmul` holds the three matmuls (where decode
//! spends its time), `attention` the attention over the KV cache,
//! `elementwise` the norms, activations and RoPE, `simd` the load/store,
//! reduction and dot-product helpers (with a few unchecked loads in the inner
//! loops, the only `unsafe` blocks besides the wrappers below). Every function here has the same
//! signature and semantics as its namesake in [`crate::reference`], which the
//! tests compare against.

mod attention;
mod elementwise;
mod matmul;
mod matmul_k;
mod matmul_q4q5;
mod simd;

use std::arch::is_aarch64_feature_detected;
use std::ops::Range;

use half::f16;

use crate::{q4q5, reference, Acts, AttnShape, DType, Isa, Kernels, Matrix};

/// Whether this CPU can run the NEON kernels.
pub fn is_available() -> bool {
    is_aarch64_feature_detected!("neon")
}

/// Whether the q8 matmul can use SDOT (the dotprod extension).
pub fn has_dotprod() -> bool {
    is_available() && is_aarch64_feature_detected!("dotprod")
}

/// The NEON kernel table, or `None` when this CPU lacks NEON. Its q8 matmul is
/// chosen here, once: SDOT with dotprod (table name `neon+dotprod`), widening
/// multiplies without (`neon`).
pub fn kernels() -> Option<Kernels> {
    if !is_available() {
        return None;
    }
    let mut k = Kernels {
        matmuls: reference::matmuls(),
        isa: Isa::Neon,
        name: "neon",
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
    if has_dotprod() {
        k.name = "neon+dotprod";
        k.set_matmul(DType::Q8, matmul_q8_sdot);
        for dtype in q4q5::dtypes() {
            k.set_matmul(dtype, matmul_q4q5_sdot);
        }
        k.set_matmul(DType::Q4_K, matmul_q4_k_sdot);
        k.set_matmul(DType::Q5_K, matmul_q5_k_sdot);
        k.set_matmul(DType::Q6_K, matmul_q6_k_sdot);
    }
    Some(k)
}

// The safe wrappers below are private: the only way to reach them is through
// the table `kernels()` returns, and it returns one only after `is_available()`
// saw NEON, and puts `matmul_q8_sdot` and the `_sdot` K-quant matmuls in it only after `has_dotprod()` saw
// dotprod. That is the proof every `SAFETY` comment below cites.

fn matmul_f32(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { matmul::matmul_f32(w.f32s(), w.cols, rows, x.x, n, out, out_stride) }
}

fn matmul_f16(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { matmul::matmul_f16(w.f16s(), w.cols, rows, x.x, n, out, out_stride) }
}

fn matmul_q8(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    let (quants, scales) = w.q8_planes();
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { matmul::matmul_q8(quants, scales, w.cols, rows, &x.q8, n, out, out_stride) }
}

fn matmul_q8_sdot(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    let (quants, scales) = w.q8_planes();
    // SAFETY: reached only through `kernels()`, which checked neon and, before
    // choosing this function, dotprod.
    unsafe { matmul::matmul_q8_sdot(quants, scales, w.cols, rows, &x.q8, n, out, out_stride) }
}

fn matmul_q4_k(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { matmul_k::matmul_q4_k(w.data, w.cols, rows, &x.q8, x.q8.sums, n, out, out_stride) }
}

fn matmul_q4_k_sdot(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked neon and, before
    // choosing this function, dotprod.
    unsafe { matmul_k::matmul_q4_k_sdot(w.data, w.cols, rows, &x.q8, x.q8.sums, n, out, out_stride) }
}

fn matmul_q5_k(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { matmul_k::matmul_q5_k(w.data, w.cols, rows, &x.q8, x.q8.sums, n, out, out_stride) }
}

fn matmul_q5_k_sdot(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked neon and, before
    // choosing this function, dotprod.
    unsafe { matmul_k::matmul_q5_k_sdot(w.data, w.cols, rows, &x.q8, x.q8.sums, n, out, out_stride) }
}

fn matmul_q6_k(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { matmul_k::matmul_q6_k(w.data, w.cols, rows, &x.q8, x.q8.sums, n, out, out_stride) }
}

fn matmul_q6_k_sdot(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked neon and, before
    // choosing this function, dotprod.
    unsafe { matmul_k::matmul_q6_k_sdot(w.data, w.cols, rows, &x.q8, x.q8.sums, n, out, out_stride) }
}

fn matmul_q4q5(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    let (weight, acts) = q4q5::views(w, x);
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { matmul_q4q5::matmul_q4q5(&weight, w.cols, rows, &acts, n, out, out_stride) }
}

fn matmul_q4q5_sdot(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    let (weight, acts) = q4q5::views(w, x);
    // SAFETY: reached only through `kernels()`, which checked neon and, before
    // choosing this function, dotprod.
    unsafe { matmul_q4q5::matmul_q4q5_sdot(&weight, w.cols, rows, &acts, n, out, out_stride) }
}

fn quantize_q8_acts(x: &[f32], quants: &mut [i8], scales: &mut [f32]) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { matmul::quantize_q8_acts(x, quants, scales) }
}

fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { elementwise::rmsnorm(x, weight, eps, out) }
}

fn layernorm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { elementwise::layernorm(x, weight, bias, eps, out) }
}

fn softmax(x: &mut [f32]) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { elementwise::softmax(x) }
}

fn rope(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { elementwise::rope(x, head_dim, cos, sin) }
}

fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { elementwise::swiglu(gate, up, out) }
}

fn gelu_tanh(x: &mut [f32]) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { elementwise::gelu_tanh(x) }
}

fn add(acc: &mut [f32], x: &[f32]) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { elementwise::add(acc, x) }
}

fn attention_f32(shape: &AttnShape, q: &[f32], keys: &[f32], values: &[f32], scratch: &mut [f32], out: &mut [f32]) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { attention::attention_f32(shape, q, keys, values, scratch, out) }
}

fn attention_f16(shape: &AttnShape, q: &[f32], keys: &[f16], values: &[f16], scratch: &mut [f32], out: &mut [f32]) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { attention::attention_f16(shape, q, keys, values, scratch, out) }
}
