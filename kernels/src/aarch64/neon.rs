//! NEON (Advanced SIMD) kernels, for every AArch64 CPU; the q8 matmul uses SDOT
//! where the CPU has the dotprod extension (Arm Cortex-A55/A75 and later, Apple
//! M1 and later, Neoverse N1 and later).
//!
//! Layout as in the AVX2 module: `matmul` holds the three matmuls (where decode
//! spends its time), `attention` the attention over the KV cache,
//! `elementwise` the norms, activations and RoPE, `simd` the load/store,
//! reduction and dot-product helpers (with a few unchecked loads in the inner
//! loops, the only `unsafe` blocks besides the table's safe wrappers, made by
//! the macros of `crate::register`). Every function here has the same
//! signature and semantics as its namesake in [`crate::reference`], which the
//! tests compare against.

mod attention;
mod elementwise;
mod matmul;
mod matmul_k;
mod matmul_kr;
mod matmul_q4q5;
mod simd;

use std::arch::is_aarch64_feature_detected;

use crate::register::{isa_table, register_matmul};
use crate::{q4q5, DType, Isa, Kernels};

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
    let mut k = table(Isa::Neon, "neon");
    register_matmul!(k, DType::F32, f32 => matmul::matmul_f32);
    register_matmul!(k, DType::F16, f16 => matmul::matmul_f16);
    register_matmul!(k, DType::F32, prefill f32 => matmul::gemm_f32);
    register_matmul!(k, DType::F16, prefill f16 => matmul::gemm_f16);
    if has_dotprod() {
        k.name = "neon+dotprod";
        register_matmul!(k, DType::Q8, q8 => matmul::matmul_q8_sdot);
        for dtype in q4q5::dtypes() {
            register_matmul!(k, dtype, q4q5 => matmul_q4q5::matmul_q4q5_sdot);
        }
        register_matmul!(k, DType::Q4_K, kquant => matmul_k::matmul_q4_k_sdot);
        register_matmul!(k, DType::Q5_K, kquant => matmul_k::matmul_q5_k_sdot);
        register_matmul!(k, DType::Q6_K, kquant => matmul_k::matmul_q6_k_sdot);
        register_matmul!(k, DType::Q4_KR, kquant => matmul_kr::matmul_q4_kr_sdot);
    } else {
        register_matmul!(k, DType::Q8, q8 => matmul::matmul_q8);
        for dtype in q4q5::dtypes() {
            register_matmul!(k, dtype, q4q5 => matmul_q4q5::matmul_q4q5);
        }
        register_matmul!(k, DType::Q4_K, kquant => matmul_k::matmul_q4_k);
        register_matmul!(k, DType::Q5_K, kquant => matmul_k::matmul_q5_k);
        register_matmul!(k, DType::Q6_K, kquant => matmul_k::matmul_q6_k);
        register_matmul!(k, DType::Q4_KR, kquant => matmul_kr::matmul_q4_kr);
    }
    Some(k)
}

isa_table!();
