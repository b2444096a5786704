//! Block formats, f16 and (de)quantization for gpt-fast, and the per-dtype
//! table ([`DType::traits`]) that the rest of gpt-fast reads.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod affine;
mod dtype;
mod error;
mod float;
pub mod ggml;
pub mod kquant;
pub mod q4_kr;
pub mod q4q5;
pub mod q8;

pub use dtype::{ActForm, DType, DTypeTraits, DecodeRowFn, EncodeFn, RepackFn};
pub use error::QuantError;
