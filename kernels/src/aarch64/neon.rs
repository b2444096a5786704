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

use crate::q4q5::{Q4Q5Weight, Q8SumActs};
use crate::{AttnShape, Isa, Kernels, Q8Acts};

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
    let base = Kernels {
        isa: Isa::Neon,
        name: "neon",
        matmul_f32,
        matmul_f16,
        matmul_q8,
        matmul_q4q5,
        matmul_q4_k,
        matmul_q5_k,
        matmul_q6_k,
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
    if has_dotprod() {
        return Some(Kernels {
            name: "neon+dotprod",
            matmul_q8: matmul_q8_sdot,
            matmul_q4q5: matmul_q4q5_sdot,
            matmul_q4_k: matmul_q4_k_sdot,
            matmul_q5_k: matmul_q5_k_sdot,
            matmul_q6_k: matmul_q6_k_sdot,
            ..base
        });
    }
    Some(base)
}

// The safe wrappers below are private: the only way to reach them is through
// the table `kernels()` returns, and it returns one only after `is_available()`
// saw NEON, and puts `matmul_q8_sdot` and the `_sdot` K-quant matmuls in it only after `has_dotprod()` saw
// dotprod. That is the proof every `SAFETY` comment below cites.

fn matmul_f32(w: &[f32], cols: usize, rows: Range<usize>, x: &[f32], n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { matmul::matmul_f32(w, cols, rows, x, n, out, out_stride) }
}

fn matmul_f16(w: &[f16], cols: usize, rows: Range<usize>, x: &[f32], n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked neon.
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
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { matmul::matmul_q8(quants, scales, cols, rows, x, n, out, out_stride) }
}

fn matmul_q8_sdot(
    quants: &[i8],
    scales: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    // SAFETY: reached only through `kernels()`, which checked neon and, before
    // choosing this function, dotprod.
    unsafe { matmul::matmul_q8_sdot(quants, scales, cols, rows, x, n, out, out_stride) }
}

#[allow(clippy::too_many_arguments)] // the matmul signature plus the activation sums
fn matmul_q4_k(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    x_sums: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { matmul_k::matmul_q4_k(w, cols, rows, x, x_sums, n, out, out_stride) }
}

#[allow(clippy::too_many_arguments)] // the matmul signature plus the activation sums
fn matmul_q4_k_sdot(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    x_sums: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    // SAFETY: reached only through `kernels()`, which checked neon and, before
    // choosing this function, dotprod.
    unsafe { matmul_k::matmul_q4_k_sdot(w, cols, rows, x, x_sums, n, out, out_stride) }
}

#[allow(clippy::too_many_arguments)] // the matmul signature plus the activation sums
fn matmul_q5_k(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    x_sums: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { matmul_k::matmul_q5_k(w, cols, rows, x, x_sums, n, out, out_stride) }
}

#[allow(clippy::too_many_arguments)] // the matmul signature plus the activation sums
fn matmul_q5_k_sdot(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    x_sums: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    // SAFETY: reached only through `kernels()`, which checked neon and, before
    // choosing this function, dotprod.
    unsafe { matmul_k::matmul_q5_k_sdot(w, cols, rows, x, x_sums, n, out, out_stride) }
}

#[allow(clippy::too_many_arguments)] // the matmul signature plus the activation sums
fn matmul_q6_k(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    x_sums: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { matmul_k::matmul_q6_k(w, cols, rows, x, x_sums, n, out, out_stride) }
}

#[allow(clippy::too_many_arguments)] // the matmul signature plus the activation sums
fn matmul_q6_k_sdot(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    x_sums: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    // SAFETY: reached only through `kernels()`, which checked neon and, before
    // choosing this function, dotprod.
    unsafe { matmul_k::matmul_q6_k_sdot(w, cols, rows, x, x_sums, n, out, out_stride) }
}

fn matmul_q4q5(
    w: &Q4Q5Weight,
    cols: usize,
    rows: Range<usize>,
    x: &Q8SumActs,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    // SAFETY: reached only through `kernels()`, which checked neon.
    unsafe { matmul_q4q5::matmul_q4q5(w, cols, rows, x, n, out, out_stride) }
}

fn matmul_q4q5_sdot(
    w: &Q4Q5Weight,
    cols: usize,
    rows: Range<usize>,
    x: &Q8SumActs,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    // SAFETY: reached only through `kernels()`, which checked neon and, before
    // choosing this function, dotprod.
    unsafe { matmul_q4q5::matmul_q4q5_sdot(w, cols, rows, x, n, out, out_stride) }
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
