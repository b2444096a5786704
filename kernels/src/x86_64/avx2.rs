//! AVX2 + FMA + F16C kernels (Intel Haswell and later, AMD Zen and later).
//!
//! Layout: `matmul` holds the q8 matmul (where decode spends its time) and
//! the activation quantizer, `matmul_float` the f32/f16 matmuls,
//! `attention` the attention over the KV cache, `elementwise` the norms,
//! activations and RoPE, `simd` the load/store and reduction helpers (with a
//! few unchecked loads in the inner loops, the only `unsafe` blocks besides
//! the table's safe wrappers, made by the macros of `crate::register`). Every
//! function here has the same signature and semantics as its namesake in
//! [`crate::reference`], which the tests compare against.

mod attention;
mod elementwise;
mod gemm_q8;
pub(super) mod matmul;
pub(super) mod matmul_float;
pub(super) mod matmul_k;
pub(super) mod matmul_q4q5;
pub(super) mod simd;

use crate::register::{isa_table, register_matmul};
use crate::{q4q5, DType, Isa, Kernels};

/// Whether this CPU can run the AVX2 kernels.
pub fn is_available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

/// The AVX2 kernel table, or `None` when this CPU lacks AVX2, FMA or F16C.
pub fn kernels() -> Option<Kernels> {
    if !is_available() {
        return None;
    }
    let mut k = table(Isa::Avx2, "avx2");
    register_matmul!(k, DType::F32, f32 => matmul_float::matmul_f32);
    register_matmul!(k, DType::F16, f16 => matmul_float::matmul_f16);
    register_matmul!(k, DType::Q8, q8 => matmul::matmul_q8);
    for dtype in q4q5::dtypes() {
        register_matmul!(k, dtype, q4q5 => matmul_q4q5::matmul_q4q5);
    }
    register_matmul!(k, DType::Q4_K, kquant => matmul_k::matmul_q4_k);
    register_matmul!(k, DType::Q5_K, kquant => matmul_k::matmul_q5_k);
    register_matmul!(k, DType::Q6_K, kquant => matmul_k::matmul_q6_k);
    Some(k)
}

isa_table!();
