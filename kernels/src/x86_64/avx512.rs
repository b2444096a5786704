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

use super::avx2;
use crate::{q4q5, Acts, DType, Isa, Kernels, Matrix};

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
    let mut k = Kernels { isa: Isa::Avx512, name: "avx512", ..avx2::kernels()? };
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
// the table `kernels()` returns, and it returns one only after
// `is_available()` saw AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C, every feature
// the functions they call enable. That is the proof every `SAFETY` comment
// below cites.

fn matmul_f32(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked avx512f/bw/vl/vnni,
    // avx2, fma and f16c.
    unsafe { matmul_float::matmul_f32(w.f32s(), w.cols, rows, x.x, n, out, out_stride) }
}

fn matmul_f16(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked avx512f/bw/vl/vnni,
    // avx2, fma and f16c.
    unsafe { matmul_float::matmul_f16(w.f16s(), w.cols, rows, x.x, n, out, out_stride) }
}

fn matmul_q8(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    let (quants, scales) = w.q8_planes();
    // SAFETY: reached only through `kernels()`, which checked avx512f/bw/vl/vnni,
    // avx2, fma and f16c.
    unsafe { matmul_q8::matmul_q8_vnni(quants, scales, w.cols, rows, &x.q8, n, out, out_stride) }
}

fn matmul_q4q5(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    let (weight, acts) = q4q5::views(w, x);
    // SAFETY: reached only through `kernels()`, which checked avx512f/bw/vl/vnni,
    // avx2, fma and f16c.
    unsafe { matmul_q4q5::matmul_q4q5_vnni(&weight, w.cols, rows, &acts, n, out, out_stride) }
}

fn matmul_q4_k(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked avx512f/bw/vl/vnni,
    // avx2, fma and f16c.
    unsafe { matmul_k::matmul_q4_k_vnni(w.data, w.cols, rows, &x.q8, x.q8.sums, n, out, out_stride) }
}

fn matmul_q5_k(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked avx512f/bw/vl/vnni,
    // avx2, fma and f16c.
    unsafe { matmul_k::matmul_q5_k_vnni(w.data, w.cols, rows, &x.q8, x.q8.sums, n, out, out_stride) }
}

fn matmul_q6_k(w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
    // SAFETY: reached only through `kernels()`, which checked avx512f/bw/vl/vnni,
    // avx2, fma and f16c.
    unsafe { matmul_k::matmul_q6_k_vnni(w.data, w.cols, rows, &x.q8, x.q8.sums, n, out, out_stride) }
}
