//! Block formats, f16 and (de)quantization for gpt-fast.
#![forbid(unsafe_code)]

pub mod q8;
