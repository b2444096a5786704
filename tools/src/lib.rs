//! gpt-fast's converter: GGUF and Hugging Face checkpoints to the gpt-fast model file.

pub mod assemble;
pub mod convert;
mod error;
pub mod gguf;
// pub mod from_gguf; (enabled once gguf and tokenizer_import land)
pub mod source;

pub use error::ConvertError;
