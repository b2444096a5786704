//! Import: GGUF files and Hugging Face checkpoints to the gpt-fast model file.

pub mod assemble;
pub mod cache;
#[cfg(feature = "cli")]
pub mod command;
pub mod convert;
pub mod detect;
mod error;
pub mod family;
pub mod from_gguf;
pub mod from_hf;
pub mod gguf;
pub mod source;
pub mod tokenizer_import;
pub mod weight_types;

pub use error::ConvertError;
