//! gpt-fast's numeric kernels.
//!
//! `reference` holds the scalar kernels: the specification every instruction
//! set's module is tested against, and the fallback on any CPU. A [`Kernels`]
//! table (one function pointer per operation) is chosen once at start-up; the
//! model calls through it, so no feature check sits in a hot loop.

// `unsafe` lives only in the instruction-set modules (STYLE.md, "unsafe"); the
// lint keeps it out of everything else.
#![deny(unsafe_code)]
#![deny(missing_docs)]

#[cfg(target_arch = "aarch64")]
#[allow(unsafe_code)]
mod aarch64;
mod attention;
mod driver;
mod matrix;
pub mod q4q5;
pub mod reference;
mod register;
mod table;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86_64;

pub use attention::{AttnShape, KEY_BLOCK};
pub use table::{Attention, Isa, Kernels, Matmul, Role};

pub use gpt_fast_quant::q8::{BLOCK as Q8_BLOCK, TILE_ROWS as Q8_TILE_ROWS};
pub use gpt_fast_quant::{ActForm, DType};
pub use matrix::{Acts, Matrix, Q8Acts};
