//! Byte-level BPE tokenizer.

mod spec;

pub use spec::{PreTokenizer, TokenType, TokenizerSpec};
