//! gpt-fast: GPT-2 and Llama family inference on CPUs.

pub mod format;
pub mod mmap;
pub mod synthetic;
pub mod tokenizer;
