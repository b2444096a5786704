//! GGUF checkpoints (llama.cpp's format) as a [`Source`].
//!
//! Quirks undone here: ggml lists dimensions innermost first (`[cols, rows]`),
//! and llama.cpp's converter permutes the rows of Llama's Q and K projections
//! so that RoPE rotates adjacent pairs; gpt-fast uses the Hugging Face
//! rotate-half order, so those rows are permuted back.

use std::path::{Path, PathBuf};

use crate::format::{Arch, HParams};
use crate::tokenizer::TokenizerSpec;

use crate::import::gguf::{GgufFile, GgufValue};
use crate::import::source::{Source, SourceTensor, Stored};
use crate::import::tokenizer_import;
use crate::import::ConvertError;

pub struct GgufSource {
    path: PathBuf,
    file: GgufFile,
    hparams: HParams,
    tokenizer: TokenizerSpec,
}

impl GgufSource {
    pub fn open(path: &Path) -> Result<Self, ConvertError> {
        let input = |reason: String| ConvertError::Input { path: path.to_path_buf(), reason };
        let file = GgufFile::open(path).map_err(|e| input(e.kind.to_string()))?;
        let arch_name = file
            .get("general.architecture")
            .and_then(GgufValue::as_str)
            .ok_or_else(|| input("missing general.architecture".into()))?
            .to_string();
        let arch = match arch_name.as_str() {
            "llama" => Arch::Llama,
            "gpt2" => Arch::Gpt2,
            other => {
                return Err(input(format!(
                    "unsupported architecture '{}' (gpt-fast reads llama and gpt2)",
                    crate::escape::untrusted(other)
                )))
            }
        };
        let tokenizer = tokenizer_import::from_gguf(&file).map_err(|e| input(e.to_string()))?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let get_u32 = |k: &str| -> Result<Option<u32>, ConvertError> {
            match file.get(&key(k)) {
                None => Ok(None),
                Some(v) => v.as_u32().map(Some).ok_or_else(|| input(format!("{} is not a u32", key(k)))),
            }
        };
        let need_u32 = |k: &str| get_u32(k)?.ok_or_else(|| input(format!("missing {}", key(k))));
        let get_f32 = |k: &str| -> Result<Option<f32>, ConvertError> {
            match file.get(&key(k)) {
                None => Ok(None),
                Some(v) => v.as_f32().map(Some).ok_or_else(|| input(format!("{} is not a number", key(k)))),
            }
        };
        let dim = need_u32("embedding_length")?;
        let n_heads = need_u32("attention.head_count")?;
        if n_heads == 0 || dim % n_heads != 0 {
            return Err(input(format!("embedding_length {dim} is not a multiple of head_count {n_heads}")));
        }
        let head_dim = get_u32("attention.key_length")?.unwrap_or(dim / n_heads);
        let vocab_size = u32::try_from(tokenizer.tokens.len()).map_err(|_| input("vocabulary too large".into()))?;
        let hparams = HParams {
            arch,
            n_layers: need_u32("block_count")?,
            dim,
            n_heads,
            n_kv_heads: get_u32("attention.head_count_kv")?.unwrap_or(n_heads),
            head_dim,
            ffn_dim: need_u32("feed_forward_length")?,
            vocab_size,
            max_seq_len: need_u32("context_length")?,
            rope_theta: match arch {
                Arch::Llama => get_f32("rope.freq_base")?.unwrap_or(10_000.0),
                Arch::Gpt2 => 0.0,
            },
            norm_eps: match arch {
                Arch::Llama => get_f32("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
                Arch::Gpt2 => get_f32("attention.layer_norm_epsilon")?.unwrap_or(1e-5),
            },
            // GPT-2 always ties; llama.cpp's GPT-2 files may still carry a copy as output.weight.
            tied_embeddings: arch == Arch::Gpt2 || file.tensor("output.weight").is_none(),
        };
        hparams.validate().map_err(input)?;
        if let Some(rope_dim) = get_u32("rope.dimension_count")? {
            if arch == Arch::Llama && rope_dim != head_dim {
                return Err(input(format!("partial RoPE ({rope_dim} of {head_dim} dims) is not supported")));
            }
        }
        Ok(Self { path: path.to_path_buf(), file, hparams, tokenizer })
    }
}

/// Undoes llama.cpp's Q/K row permutation for one matrix of `n_heads` heads:
/// within a head, GGUF row `2i + s` is Hugging Face row `s * head_dim/2 + i`.
pub fn unpermute_rows(data: &[f32], rows: usize, cols: usize, n_heads: usize) -> Vec<f32> {
    let head_dim = rows / n_heads;
    let half = head_dim / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_heads {
        for i in 0..half {
            for s in 0..2 {
                let src = h * head_dim + 2 * i + s;
                let dst = h * head_dim + s * half + i;
                out[dst * cols..][..cols].copy_from_slice(&data[src * cols..][..cols]);
            }
        }
    }
    out
}

impl Source for GgufSource {
    fn hparams(&self) -> &HParams {
        &self.hparams
    }

    fn tokenizer(&self) -> &TokenizerSpec {
        &self.tokenizer
    }

    fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    fn stored(&self) -> Stored {
        let tensors = self.file.tensors();
        // Each tensor's element count was checked to fit the file at open.
        let elements = tensors.iter().map(|t| t.n_elements()).fold(0u64, u64::saturating_add);
        Stored { tensors: tensors.len() as u64, elements }
    }

    fn tensor(&self, name: &str) -> Result<SourceTensor, ConvertError> {
        let info = self
            .file
            .tensor(name)
            .ok_or_else(|| ConvertError::MissingTensor { path: self.path.clone(), name: name.into() })?;
        let fail = |reason: String| ConvertError::Tensor { path: self.path.clone(), name: name.into(), reason };
        let (rows, cols) = match info.dims.as_slice() {
            [n] => (*n as usize, 1),
            [cols, rows] => (*rows as usize, *cols as usize),
            dims => return Err(fail(format!("has {} dimensions, expected 1 or 2", dims.len()))),
        };
        let data = self.file.tensor_f32(info).map_err(|e| fail(e.to_string()))?;
        let h = &self.hparams;
        let data = if h.arch == Arch::Llama && name.ends_with(".attn_q.weight") {
            unpermute_rows(&data, rows, cols, h.n_heads as usize)
        } else if h.arch == Arch::Llama && name.ends_with(".attn_k.weight") {
            unpermute_rows(&data, rows, cols, h.n_kv_heads as usize)
        } else {
            data
        };
        Ok(SourceTensor { rows, cols, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp: reshape(n_head, 2, hd/2, cols).swapaxes(1, 2): HF row (h, s, i) goes to GGUF row (h, i, s).
        let (n_heads, head_dim, cols) = (3, 8, 2);
        let rows = n_heads * head_dim;
        let hf: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let mut gguf = vec![0f32; hf.len()];
        for h in 0..n_heads {
            for s in 0..2 {
                for i in 0..head_dim / 2 {
                    let hf_row = h * head_dim + s * head_dim / 2 + i;
                    let gguf_row = h * head_dim + i * 2 + s;
                    gguf[gguf_row * cols..][..cols].copy_from_slice(&hf[hf_row * cols..][..cols]);
                }
            }
        }
        assert_eq!(unpermute_rows(&gguf, rows, cols, n_heads), hf);
    }
}
