//! gpt-fast: GPT-2 and Llama family inference on CPUs.

pub mod format;
pub mod mmap;
pub mod model;
pub mod perplexity;
pub mod sampler;
pub mod session;
pub mod synthetic;
pub mod tokenizer;
