//! AVX2 + FMA + F16C kernels (Intel Haswell and later, AMD Zen and later).
//!
//! Layout: `matmul` holds the q8 matmul (where decode spends its time) and
//! the activation quantizer, `matmul_float` the f32/f16 matmuls' dot form
//! (decode), `gemm_float` their GEMM form (prefill),
//! `attention` the attention over the KV cache, `elementwise` the norms,
//! activations and RoPE, `simd` the load/store and reduction helpers (with a
//! few unchecked loads in the inner loops, the only `unsafe` blocks besides
//! the table's safe wrappers, made by the macros of `crate::register`). Every
//! function here has the same signature and semantics as its namesake in
//! [`crate::reference`], which the tests compare against.

mod attention;
mod elementwise;
pub(super) mod gemm_float;
mod gemm_q8;
pub(super) mod matmul;
pub(super) mod matmul_float;
pub(super) mod matmul_k;
pub(super) mod matmul_kr;
pub(super) mod matmul_q4q5;
pub(super) mod simd;

use crate::register::{isa_table, register_matmul};
use crate::{q4q5, DType, Isa, Kernels};

/// Whether this CPU can run the AVX2 kernels.
pub fn is_available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

/// Whether the q8 GEMM can use AVX-VNNI (256-bit VEX `vpdpbusd`: Intel Alder
/// Lake and later, AMD Zen 5). Zen 4 has only the AVX-512 (EVEX) form, which
/// the AVX-512 table uses.
pub fn has_avx_vnni() -> bool {
    is_available() && is_x86_feature_detected!("avxvnni")
}

/// The AVX2 kernel table, or `None` when this CPU lacks AVX2, FMA or F16C.
/// Its q8 matmul is chosen here, once: with AVX-VNNI where the CPU has it
/// (table name `avx2+vnni`), `maddubs` without (`avx2`).
pub fn kernels() -> Option<Kernels> {
    if !is_available() {
        return None;
    }
    let mut k = table(Isa::Avx2, "avx2");
    register_matmul!(k, DType::F32, f32 => matmul_float::matmul_f32);
    register_matmul!(k, DType::F16, f16 => matmul_float::matmul_f16);
    register_matmul!(k, DType::F32, prefill f32 => gemm_float::gemm_f32);
    register_matmul!(k, DType::F16, prefill f16 => gemm_float::gemm_f16);
    if has_avx_vnni() {
        k.name = "avx2+vnni";
        register_matmul!(k, DType::Q8, q8 => matmul::matmul_q8_vnni);
    } else {
        register_matmul!(k, DType::Q8, q8 => matmul::matmul_q8);
    }
    for dtype in q4q5::dtypes() {
        register_matmul!(k, dtype, q4q5 => matmul_q4q5::matmul_q4q5);
    }
    register_matmul!(k, DType::Q4_K, kquant => matmul_k::matmul_q4_k);
    register_matmul!(k, DType::Q5_K, kquant => matmul_k::matmul_q5_k);
    register_matmul!(k, DType::Q6_K, kquant => matmul_k::matmul_q6_k);
    register_matmul!(k, DType::Q4_KR, kquant => matmul_kr::matmul_q4_kr);
    Some(k)
}

isa_table!();
