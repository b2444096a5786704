//! AVX-512 (F, BW, VL, VNNI) kernels: the matmuls. Every other operation is
//! the AVX2 kernel (the CPU check below includes AVX2, FMA and F16C, so those
//! are valid here too).
//!
//! Layout: `matmul_q8` holds the q8 matmul (`vpdpbusd`), `gemm_q8` its
//! many-token register tile (tokens in lanes), `matmul_float` the
//! f32/f16 GEMV and GEMM register tile (the GEMM's blocking is the AVX2
//! module's driver), `matmul_q4q5` and `matmul_k` the GGUF block types'
//! matmuls, `simd` the load/store helpers.

mod gemm_q8;
mod matmul_float;
mod matmul_k;
mod matmul_q4q5;
mod matmul_q8;
mod simd;

use std::ops::Range;

use half::f16;

use super::avx2;
use crate::q4q5::{Q4Q5Weight, Q8SumActs};
use crate::{Isa, Kernels, Q8Acts};

/// Whether this CPU can run the AVX-512 kernels.
pub fn is_available() -> bool {
    avx2::is_available()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// The AVX-512 kernel table, or `None` when this CPU lacks any of AVX-512
/// F/BW/VL/VNNI, AVX2, FMA or F16C.
pub fn kernels() -> Option<Kernels> {
    if !is_available() {
        return None;
    }
    Some(Kernels {
        isa: Isa::Avx512,
        name: "avx512",
        matmul_f32,
        matmul_f16,
        matmul_q8,
        matmul_q4q5,
        matmul_q4_k,
        matmul_q5_k,
        matmul_q6_k,
        ..avx2::kernels()?
    })
}

// The safe wrappers below are private: the only way to reach them is through
// the table `kernels()` returns, and it returns one only after
// `is_available()` saw AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C, every feature
// the functions they call enable. That is the proof every `SAFETY` comment
// below cites.

fn matmul_f32(w: &[f32], cols: usize, rows: Range<usize>, x: &[f32], n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked avx512f/bw/vl/vnni,
    // avx2, fma and f16c.
    unsafe { matmul_float::matmul_f32(w, cols, rows, x, n, out, out_stride) }
}

fn matmul_f16(w: &[f16], cols: usize, rows: Range<usize>, x: &[f32], n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked avx512f/bw/vl/vnni,
    // avx2, fma and f16c.
    unsafe { matmul_float::matmul_f16(w, cols, rows, x, n, out, out_stride) }
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
    // SAFETY: reached only through `kernels()`, which checked avx512f/bw/vl/vnni,
    // avx2, fma and f16c.
    unsafe { matmul_q8::matmul_q8_vnni(quants, scales, cols, rows, x, n, out, out_stride) }
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
    // SAFETY: reached only through `kernels()`, which checked avx512f/bw/vl/vnni,
    // avx2, fma and f16c.
    unsafe { matmul_q4q5::matmul_q4q5_vnni(w, cols, rows, x, n, out, out_stride) }
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
    // SAFETY: reached only through `kernels()`, which checked avx512f/bw/vl/vnni,
    // avx2, fma and f16c.
    unsafe { matmul_k::matmul_q4_k_vnni(w, cols, rows, x, x_sums, n, out, out_stride) }
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
    // SAFETY: reached only through `kernels()`, which checked avx512f/bw/vl/vnni,
    // avx2, fma and f16c.
    unsafe { matmul_k::matmul_q5_k_vnni(w, cols, rows, x, x_sums, n, out, out_stride) }
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
    // SAFETY: reached only through `kernels()`, which checked avx512f/bw/vl/vnni,
    // avx2, fma and f16c.
    unsafe { matmul_k::matmul_q6_k_vnni(w, cols, rows, x, x_sums, n, out, out_stride) }
}
