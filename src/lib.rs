//! gpt-fast: GPT-2 and Llama family inference on CPUs.
//!
//! `unsafe` is allowed only in `mmap` (mapping model files) and `threads`
//! (the thread pool); the SIMD kernels live in the `gpt-fast-kernels` crate.
#![deny(unsafe_code)]

pub use gpt_fast_kernels as kernels;

pub mod bench;
pub mod chat;
pub mod escape;
pub mod format;
pub mod generate;
pub mod import;
pub mod memory;
pub mod mmap;
pub mod model;
pub mod perplexity;
pub mod sampler;
pub mod session;
pub mod synthetic;
pub mod threads;
pub mod tokenizer;
