//! What every checkpoint reader hands the converter: hyper-parameters, the
//! tokenizer, and tensors by name in one canonical convention, so that the
//! assembly into gpt-fast's tensors (tools/src/assemble.rs) is written once.
//!
//! The canonical convention (checkpoint quirks are undone by each reader):
//! - names as GGUF spells them, unfused: `token_embd.weight`,
//!   `position_embd.weight`, `output.weight`, `output_norm.{weight,bias}`, and per
//!   layer `blk.N.` + `attn_norm`, `attn_q`, `attn_k`, `attn_v` (Llama),
//!   `attn_qkv` (GPT-2, already fused by both GPT-2 checkpoint formats),
//!   `attn_output`, `ffn_norm`, `ffn_gate` (Llama), `ffn_up`, `ffn_down`, each
//!   `.weight` or `.bias`;
//! - matrices `[rows = outputs, cols = inputs]`, row-major (`nn.Linear`);
//! - Q and K rows in the rotate-half RoPE order of the Hugging Face checkpoints.

use crate::format::HParams;
use crate::tokenizer::TokenizerSpec;
use gpt_fast_quant::ggml::GgmlType;

/// A tensor read from a checkpoint and converted to f32.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceTensor {
    pub rows: usize,
    /// 1 for a vector.
    pub cols: usize,
    pub data: Vec<f32>,
}

/// A tensor as the checkpoint stores it, still in its ggml blocks: whole
/// rows of `[rows, cols]`, in canonical row order.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    pub rows: usize,
    pub cols: usize,
    pub ty: GgmlType,
    pub bytes: Vec<u8>,
}

/// How much a checkpoint holds: what backs the hyper-parameters' demand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    pub tensors: u64,
    /// Elements of all its tensors.
    pub elements: u64,
}

/// A checkpoint opened for conversion.
pub trait Source: Sync {
    fn hparams(&self) -> &HParams;
    fn tokenizer(&self) -> &TokenizerSpec;
    /// Whether the checkpoint has a tensor of this canonical name.
    fn has(&self, name: &str) -> bool;
    /// Reads a tensor by canonical name, in canonical layout.
    fn tensor(&self, name: &str) -> Result<SourceTensor, crate::import::ConvertError>;
    /// How many tensors and elements the checkpoint stores (from its headers).
    fn stored(&self) -> Stored;
    /// The ggml block type a tensor is stored in, for checkpoints that have
    /// them (GGUF); `None` for the others, whose tensors are never kept as stored.
    fn stored_type(&self, _name: &str) -> Option<GgmlType> {
        None
    }
    /// The tensor's bytes as stored (see [`Source::stored_type`]).
    fn raw_tensor(&self, name: &str) -> Result<RawTensor, crate::import::ConvertError> {
        Err(crate::import::ConvertError::MissingTensor { path: Default::default(), name: name.into() })
    }
}
