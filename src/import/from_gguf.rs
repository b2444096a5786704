//! GGUF checkpoints (llama.cpp's format) as a [`Source`].
//!
//! Quirks undone here: ggml lists dimensions innermost first (`[cols, rows]`),
//! and llama.cpp's converter permutes the rows of the Q and K projections of
//! its `llama` architecture (Llama, Mistral) so that RoPE rotates adjacent
//! pairs; gpt-fast uses the Hugging Face rotate-half order, so those rows are
//! permuted back. Its other RoPE architectures (`qwen2`, `qwen3`, `gemma3`,
//! `phi3`) keep the rotate-half ("NEOX") order and are read as they are.
//! Gemma's norm weights are stored with the 1 of its `(1 + w)` RMSNorm
//! already added, as gpt-fast wants them.
//!
//! What llama.cpp fixes in code rather than in the file is fixed the same way
//! here: Gemma 3's √dim embedding scale, its query scale (`1/sqrt(head_dim)`,
//! but `1/sqrt(dim / n_heads)` for the 62-layer 27B), its local layers (five
//! of every six unless `attention.sliding_window_pattern` says otherwise) and
//! their RoPE base (10000 unless `rope.freq_base_swa` says otherwise).

use std::path::{Path, PathBuf};

use crate::format::{HParams, Variant};
use crate::tokenizer::TokenizerSpec;

use crate::import::family::{linear_divisors, Family};
use crate::import::gguf::{GgufFile, GgufValue};
use crate::import::source::{RawTensor, Source, SourceTensor, Stored};
use crate::import::tokenizer_import;
use crate::import::ConvertError;
use gpt_fast_quant::ggml::GgmlType;

pub struct GgufSource {
    path: PathBuf,
    file: GgufFile,
    family: Family,
    hparams: HParams,
    tokenizer: TokenizerSpec,
    /// `rope_freqs.weight`: the file's own, or made from linear RoPE scaling.
    rope_freqs: Option<Vec<f32>>,
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
        let family = match Family::GGUF_NAMES.iter().find(|(n, _)| *n == arch_name) {
            Some((_, family)) => *family,
            None => {
                return Err(input(format!(
                    "unsupported architecture '{}' (gpt-fast reads {})",
                    crate::escape::untrusted(&arch_name),
                    Family::list(Family::GGUF_NAMES)
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
        let get_str = |k: &str| file.get(&key(k)).and_then(GgufValue::as_str);
        let gpt2 = family == Family::Gpt2;
        let gemma = family == Family::Gemma3;
        let dim = need_u32("embedding_length")?;
        let n_heads = need_u32("attention.head_count")?;
        if n_heads == 0 || dim % n_heads != 0 {
            return Err(input(format!("embedding_length {dim} is not a multiple of head_count {n_heads}")));
        }
        let head_dim = get_u32("attention.key_length")?.unwrap_or(dim / n_heads);
        let n_layers = need_u32("block_count")?;
        let vocab_size = u32::try_from(tokenizer.tokens.len()).map_err(|_| input("vocabulary too large".into()))?;
        for k in ["final_logit_softcapping", "attn_logit_softcapping"] {
            if get_f32(k)?.is_some_and(|v| v != 0.0) {
                return Err(input(format!("{} is not supported", key(k))));
            }
        }
        if file.tensor("rope_factors_long.weight").is_some() {
            return Err(input("long-context RoPE factors (rope_factors_long) are not supported".into()));
        }

        let rope_dim = match get_u32("rope.dimension_count")? {
            Some(d) if !gpt2 => d,
            _ => head_dim,
        };
        let rope_freqs = match file.tensor("rope_freqs.weight") {
            Some(info) => Some(file.tensor_f32(info).map_err(|e| input(e.to_string()))?),
            None => match get_str("rope.scaling.type") {
                None | Some("none") => None,
                Some("linear") => {
                    let factor = get_f32("rope.scaling.factor")?
                        .ok_or_else(|| input("linear RoPE scaling without rope.scaling.factor".into()))?;
                    (factor != 1.0).then(|| linear_divisors(rope_dim, factor))
                }
                Some(other) => {
                    return Err(input(format!(
                        "RoPE scaling '{other}' is not supported (linear, or llama3 as rope_freqs)"
                    )))
                }
            },
        };
        if rope_freqs.as_ref().is_some_and(|f| f.len() != (rope_dim / 2) as usize) {
            return Err(input(format!("rope_freqs.weight does not have rope_dim / 2 = {} values", rope_dim / 2)));
        }

        let window = get_u32("attention.sliding_window")?.unwrap_or(0);
        let swa_period = if gemma && window > 0 {
            match file.get(&key("attention.sliding_window_pattern")) {
                None => 6,
                Some(v) => match v.as_u32() {
                    Some(p) => p,
                    None => {
                        let flags: Option<Vec<bool>> =
                            v.as_array().map(|a| a.iter().filter_map(GgufValue::as_bool).collect());
                        flags
                            .filter(|f| f.len() == n_layers as usize)
                            .and_then(|f| crate::import::family::swa_period(&f))
                            .ok_or_else(|| {
                                input(format!(
                                    "{} is not a pattern gpt-fast reads",
                                    key("attention.sliding_window_pattern")
                                ))
                            })?
                    }
                },
            }
        } else {
            0
        };
        let sliding_window = match family {
            // llama.cpp's `llama` has no sliding window (its Mistral files carry none).
            Family::Gemma3 | Family::Phi3 => window,
            _ => 0,
        };
        let mut variant = Variant {
            qkv_bias: !gpt2
                && (file.tensor("blk.0.attn_q.bias").is_some() || file.tensor("blk.0.attn_qkv.bias").is_some()),
            qk_norm: file.tensor("blk.0.attn_q_norm.weight").is_some(),
            post_norms: gemma,
            gelu_gate: gemma,
            rope_freqs: rope_freqs.is_some(),
            rope_dim: if rope_dim == head_dim { 0 } else { rope_dim },
            sliding_window,
            swa_period,
            rope_theta_swa: if gemma && sliding_window > 0 {
                get_f32("rope.freq_base_swa")?.unwrap_or(10_000.0)
            } else {
                0.0
            },
            ..Variant::default()
        };
        if gemma {
            variant.embed_scale = (f64::from(dim).sqrt()) as f32;
            if n_layers == 62 {
                variant.attn_scale = (f64::from(dim / n_heads).powf(-0.5)) as f32;
            }
        }
        let hparams = HParams {
            arch: family.arch(),
            n_layers,
            dim,
            n_heads,
            n_kv_heads: get_u32("attention.head_count_kv")?.unwrap_or(n_heads),
            head_dim,
            ffn_dim: need_u32("feed_forward_length")?,
            vocab_size,
            max_seq_len: need_u32("context_length")?,
            rope_theta: if gpt2 { 0.0 } else { get_f32("rope.freq_base")?.unwrap_or(10_000.0) },
            norm_eps: if gpt2 {
                get_f32("attention.layer_norm_epsilon")?.unwrap_or(1e-5)
            } else {
                get_f32("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5)
            },
            // GPT-2 always ties; llama.cpp's GPT-2 files may still carry a copy as output.weight.
            tied_embeddings: gpt2 || file.tensor("output.weight").is_none(),
            variant: if gpt2 { Variant::default() } else { variant },
        };
        hparams.validate().map_err(input)?;
        Ok(Self { path: path.to_path_buf(), file, family, hparams, tokenizer, rope_freqs })
    }
}

/// Undoes llama.cpp's Q/K row permutation for one matrix of `n_heads` heads:
/// within a head, GGUF row `2i + s` is Hugging Face row `s * head_dim/2 + i`.
/// A row is `cols` elements: values, or the bytes of a quantized row (whose
/// blocks never straddle rows, so moving rows keeps every value).
pub fn unpermute_rows<T: Copy + Default>(data: &[T], rows: usize, cols: usize, n_heads: usize) -> Vec<T> {
    let head_dim = rows / n_heads;
    let half = head_dim / 2;
    let mut out = vec![T::default(); data.len()];
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

impl GgufSource {
    /// A tensor's entry and its `[rows, cols]` (ggml lists `cols` first).
    fn info(&self, name: &str) -> Result<(&crate::import::gguf::GgufTensorInfo, usize, usize), ConvertError> {
        let info = self
            .file
            .tensor(name)
            .ok_or_else(|| ConvertError::MissingTensor { path: self.path.clone(), name: name.into() })?;
        match info.dims.as_slice() {
            [n] => Ok((info, *n as usize, 1)),
            [cols, rows] => Ok((info, *rows as usize, *cols as usize)),
            dims => Err(ConvertError::Tensor {
                path: self.path.clone(),
                name: name.into(),
                reason: format!("has {} dimensions, expected 1 or 2", dims.len()),
            }),
        }
    }

    /// `data` (`rows` whole rows, of values or of stored bytes) in the
    /// canonical row order: only `llama` permutes (its biases too, had it any).
    fn unpermuted<T: Copy + Default>(&self, name: &str, data: Vec<T>, rows: usize) -> Vec<T> {
        let h = &self.hparams;
        let row_len = data.len().checked_div(rows).unwrap_or(0);
        let permuted = self.family == Family::Llama;
        if permuted && name.ends_with(".attn_q.weight") {
            unpermute_rows(&data, rows, row_len, h.n_heads as usize)
        } else if permuted && name.ends_with(".attn_k.weight") {
            unpermute_rows(&data, rows, row_len, h.n_kv_heads as usize)
        } else {
            data
        }
    }
}

impl Source for GgufSource {
    fn hparams(&self) -> &HParams {
        &self.hparams
    }

    fn tokenizer(&self) -> &TokenizerSpec {
        &self.tokenizer
    }

    fn has(&self, name: &str) -> bool {
        if name == "rope_freqs.weight" {
            return self.rope_freqs.is_some();
        }
        self.file.tensor(name).is_some()
    }

    fn stored(&self) -> Stored {
        let tensors = self.file.tensors();
        // Each tensor's element count was checked to fit the file at open.
        let elements = tensors.iter().map(|t| t.n_elements()).fold(0u64, u64::saturating_add);
        Stored { tensors: tensors.len() as u64, elements }
    }

    fn tensor(&self, name: &str) -> Result<SourceTensor, ConvertError> {
        if let Some(data) = self.rope_freqs.as_ref().filter(|_| name == "rope_freqs.weight") {
            return Ok(SourceTensor { rows: data.len(), cols: 1, data: data.clone() });
        }
        let (info, rows, cols) = self.info(name)?;
        let fail = |reason: String| ConvertError::Tensor { path: self.path.clone(), name: name.into(), reason };
        let data = self.file.tensor_f32(info).map_err(|e| fail(e.to_string()))?;
        let data = self.unpermuted(name, data, rows);
        Ok(SourceTensor { rows, cols, data })
    }

    fn stored_type(&self, name: &str) -> Option<GgmlType> {
        self.file.tensor(name).map(|t| t.ty)
    }

    fn raw_tensor(&self, name: &str) -> Result<RawTensor, ConvertError> {
        let (info, rows, cols) = self.info(name)?;
        let bytes = self.file.tensor_bytes(info).to_vec();
        let bytes = self.unpermuted(name, bytes, rows);
        Ok(RawTensor { rows, cols, ty: info.ty, bytes })
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
