//! Block formats, f16 and (de)quantization for gpt-fast.
#![forbid(unsafe_code)]

mod error;
pub mod ggml;
pub mod kquant;
pub mod q4q5;
pub mod q8;

pub use error::QuantError;
