//! gpt-fast: GPT-2 and Llama family inference on CPUs.

pub mod mmap;
pub mod tokenizer;
