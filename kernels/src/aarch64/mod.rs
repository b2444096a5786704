//! aarch64 kernels, one module per instruction-set level.
//!
//! Each module exposes `is_available()` and `kernels() -> Option<Kernels>`: the
//! table is only handed out after the CPU check, and the table's entries are the
//! only way to reach the module's `#[target_feature]` functions, so every
//! `unsafe` call into them is justified by that one check.

pub mod neon;
