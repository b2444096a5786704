//! AVX-512 (F, BW, VL, VNNI) kernels: the matmuls. Every other operation is
//! the AVX2 kernel (the CPU check below includes AVX2, FMA and F16C, so those
//! are valid here too).
//!
//! Layout: `matmul_q8` holds the q8 matmul (`vpdpbusd`), `gemm_q8` its
//! many-token register tile (tokens in lanes), `matmul_float` the
//! f32/f16 matmuls' dot form (decode) and `gemm_float` their GEMM form
//! (prefill; the blocking is the driver's), `matmul_q4q5` and `matmul_k` the GGUF block types'
//! matmuls, `matmul_kr` gpt-fast's own q4_kr's, `simd` the load/store helpers.

mod gemm_float;
mod gemm_q8;
mod matmul_float;
mod matmul_k;
mod matmul_kr;
mod matmul_q4q5;
mod matmul_q8;
mod simd;

use super::avx2;
use crate::register::register_matmul;
use crate::{q4q5, DType, Isa, Kernels};

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
    register_matmul!(k, DType::F32, f32 => matmul_float::matmul_f32);
    register_matmul!(k, DType::F16, f16 => matmul_float::matmul_f16);
    register_matmul!(k, DType::F32, prefill f32 => gemm_float::gemm_f32);
    register_matmul!(k, DType::F16, prefill f16 => gemm_float::gemm_f16);
    register_matmul!(k, DType::Q8, q8 => matmul_q8::matmul_q8_vnni);
    for dtype in q4q5::dtypes() {
        register_matmul!(k, dtype, q4q5 => matmul_q4q5::matmul_q4q5_vnni);
    }
    register_matmul!(k, DType::Q4_K, kquant => matmul_k::matmul_q4_k_vnni);
    register_matmul!(k, DType::Q5_K, kquant => matmul_k::matmul_q5_k_vnni);
    register_matmul!(k, DType::Q6_K, kquant => matmul_k::matmul_q6_k_vnni);
    register_matmul!(k, DType::Q4_KR, kquant => matmul_kr::matmul_q4_kr_vnni);
    Some(k)
}
