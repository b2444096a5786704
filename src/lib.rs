//! gpt-fast: GPT-2 and Llama family inference on CPUs.
//!
//! The embedding API is at the crate root: open a [`Model`] (memory-mapped,
//! validated), create a [`Session`] (one conversation's KV cache, allocated
//! once) or a [`Generator`] (a session plus sampling, streaming text and stop
//! conditions), and generate. Conversations continue: each call appends.
//!
//! ```
//! use gpt_fast::{Flow, GenerateParams, Generator, Model, ModelOptions, SamplerParams, SessionOptions};
//! # fn main() -> Result<(), gpt_fast::Error> {
//! # let dir = std::env::temp_dir().join(format!("gpt-fast-doc-root-{}", std::process::id()));
//! # let h = gpt_fast::synthetic::config("test-llama").unwrap();
//! # gpt_fast::synthetic::write(&dir, &h, gpt_fast::format::DType::Q8, 1, |_, _| {}).unwrap();
//! # let path = dir.as_path();
//! let model = Model::open(path, ModelOptions::default())?;
//! let mut chat = Generator::new(&model, SessionOptions { context: 128, ..Default::default() })?;
//! let params = GenerateParams { max_tokens: 8, sampler: SamplerParams::greedy(), ..Default::default() };
//! let mut text = String::new();
//! let stats = chat.generate("Hello", false, &params, |piece| {
//!     text.push_str(piece);
//!     Flow::Continue // Flow::Stop cancels
//! })?;
//! assert_eq!(stats.generated_tokens, chat.len() - stats.prompt_tokens);
//! // The next turn evaluates only its own tokens.
//! chat.generate(" and then", false, &params, |_| Flow::Continue)?;
//! # std::fs::remove_file(&dir).unwrap();
//! # Ok(())
//! # }
//! ```
//!
//! The modules below the root are the engine's internals, public for the
//! project's own tools, tests and benches; they are hidden from the docs
//! and may change without notice.
//!
//! `unsafe` is allowed only in `mmap` (mapping model files) and `threads`
//! (the thread pool); the SIMD kernels live in the `gpt-fast-kernels` crate.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod error;

pub use error::Error;
pub use generate::{Flow, GenerateError, GenerateParams, GenerateStats, Generator, StopReason};
pub use model::{Model, ModelError, ModelOptions};
pub use sampler::{Sampler, SamplerError, SamplerParams};
pub use session::{KvType, Session, SessionError, SessionOptions, StateError};
pub use threads::{shared_pool, ThreadPool};
pub use tokenizer::{StreamDecoder, Tokenizer, TokenizerError};

#[doc(hidden)]
pub use gpt_fast_kernels as kernels;

#[doc(hidden)]
pub mod bench;
#[doc(hidden)]
pub mod chat;
#[doc(hidden)]
pub mod escape;
#[doc(hidden)]
pub mod format;
pub mod generate;
#[doc(hidden)]
pub mod import;
#[doc(hidden)]
pub mod memory;
#[doc(hidden)]
pub mod mmap;
pub mod model;
#[doc(hidden)]
pub mod perplexity;
pub mod sampler;
pub mod server;
pub mod session;
#[doc(hidden)]
pub mod synthetic;
pub mod threads;
pub mod tokenizer;
