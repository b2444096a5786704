//! Hugging Face model folders as a [`Source`]: `config.json`, the weights in
//! `model.safetensors` (or shards listed by `model.safetensors.index.json`),
//! `tokenizer.json` and, for what that file does not say, `tokenizer_config.json`,
//! `generation_config.json` and `chat_template.jinja`.
//!
//! Hyper-parameters: `config`; the tokenizer: `tokenizer`; the checkpoint
//! quirks are all in `checkpoint_name`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::format::HParams;
use crate::mmap::MappedFile;
use crate::tokenizer::TokenizerSpec;
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::import::family::Family;
use crate::import::source::{Source, SourceTensor, Stored};
use crate::import::ConvertError;
use config::Config;

mod config;
mod tokenizer;

/// A checkpoint's name for a canonical tensor, and how to read it.
#[derive(Debug, PartialEq, Eq)]
struct CheckpointName {
    /// Without GPT-2's optional `transformer.` prefix (tried both ways).
    name: String,
    /// Stored `[in, out]`: transpose to `[out, in]`.
    transposed: bool,
}

/// Canonical names to checkpoint names: every quirk of the layouts, here only.
/// - Llama family (`LlamaForCausalLM` and the others of [`Family::HF_NAMES`]):
///   `model.` + `embed_tokens`, `norm`, `layers.N.…` as nn.Linear `[out, in]`;
///   `lm_head.weight` outside `model.`. Qwen2 has biases on `q/k/v_proj`;
///   Qwen3 and Gemma 3 `self_attn.q_norm`/`k_norm`. Gemma 3's
///   `post_attention_layernorm` is the attention's *post*-norm and
///   `pre_feedforward_layernorm` the feed-forward's input norm (in Llama,
///   `post_attention_layernorm` is the latter). Phi-3 stores Q/K/V fused as
///   `qkv_proj` and gate/up as `gate_up_proj` (gate rows first), which are
///   gpt-fast's `attn_qkv` and `ffn_up` as they are.
/// - GPT-2 (`GPT2LMHeadModel`): names with `transformer.` (what `save_pretrained`
///   writes) or without (the hub's `gpt2`), the caller tries both. Its
///   attention and MLP are `Conv1D` layers whose weights are stored `[in, out]`,
///   the transpose of nn.Linear: marked `transposed`. `c_attn` already holds
///   Q, K and V stacked, as gpt-fast's `attn_qkv`.
/// - Q/K rows of Hugging Face checkpoints are already in the rotate-half order
///   gpt-fast uses (only GGUF's `llama` permutes them).
/// - Gemma's RMSNorm multiplies by `1 + weight`: [`HfSource::tensor`] adds the 1.
/// - The tied LM head (no `output.weight`) is decided by config.json, see [`HfSource::has`].
fn checkpoint_name(family: Family, canonical: &str) -> Option<CheckpointName> {
    const LLAMA_LAYER: &[(&str, &str)] = &[
        ("attn_norm", "input_layernorm"),
        ("attn_q", "self_attn.q_proj"),
        ("attn_k", "self_attn.k_proj"),
        ("attn_v", "self_attn.v_proj"),
        ("attn_output", "self_attn.o_proj"),
        ("ffn_norm", "post_attention_layernorm"),
        ("ffn_gate", "mlp.gate_proj"),
        ("ffn_up", "mlp.up_proj"),
        ("ffn_down", "mlp.down_proj"),
    ];
    const QK_NORM: &[(&str, &str)] = &[("attn_q_norm", "self_attn.q_norm"), ("attn_k_norm", "self_attn.k_norm")];
    const GEMMA3_LAYER: &[(&str, &str)] = &[
        ("post_attention_norm", "post_attention_layernorm"),
        ("ffn_norm", "pre_feedforward_layernorm"),
        ("post_ffw_norm", "post_feedforward_layernorm"),
    ];
    const PHI3_LAYER: &[(&str, &str)] = &[("attn_qkv", "self_attn.qkv_proj"), ("ffn_up", "mlp.gate_up_proj")];
    // (canonical, checkpoint, Conv1D)
    const GPT2_LAYER: &[(&str, &str, bool)] = &[
        ("attn_norm", "ln_1", false),
        ("attn_qkv", "attn.c_attn", true),
        ("attn_output", "attn.c_proj", true),
        ("ffn_norm", "ln_2", false),
        ("ffn_up", "mlp.c_fc", true),
        ("ffn_down", "mlp.c_proj", true),
    ];
    let (stem, kind) = canonical.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let plain = |name: String| CheckpointName { name, transposed: false };
    if let Some(rest) = stem.strip_prefix("blk.") {
        let (layer, part) = rest.split_once('.')?;
        let layer: u32 = layer.parse().ok()?;
        if family == Family::Gpt2 {
            return GPT2_LAYER.iter().find(|(c, _, _)| *c == part).map(|(_, hf, conv1d)| CheckpointName {
                name: format!("h.{layer}.{hf}.{kind}"),
                transposed: *conv1d && kind == "weight",
            });
        }
        // Family tables first: they override the Llama names they share.
        let tables: &[&[(&str, &str)]] = match family {
            Family::Gemma3 => &[GEMMA3_LAYER, QK_NORM, LLAMA_LAYER],
            Family::Qwen3 => &[QK_NORM, LLAMA_LAYER],
            Family::Phi3 => &[PHI3_LAYER, LLAMA_LAYER],
            _ => &[LLAMA_LAYER],
        };
        let bias_ok = family == Family::Qwen2 && matches!(part, "attn_q" | "attn_k" | "attn_v");
        return tables
            .iter()
            .find_map(|t| t.iter().find(|(c, _)| *c == part))
            .filter(|_| kind == "weight" || bias_ok)
            .filter(|(c, _)| family != Family::Phi3 || !matches!(*c, "attn_q" | "attn_k" | "attn_v" | "ffn_gate"))
            .map(|(_, hf)| plain(format!("model.layers.{layer}.{hf}.{kind}")));
    }
    let name = match (family, stem, kind) {
        (Family::Gpt2, "token_embd", "weight") => "wte.weight",
        (Family::Gpt2, "position_embd", "weight") => "wpe.weight",
        (Family::Gpt2, "output_norm", "weight") => "ln_f.weight",
        (Family::Gpt2, "output_norm", "bias") => "ln_f.bias",
        (Family::Gpt2, _, _) => return None,
        (_, "token_embd", "weight") => "model.embed_tokens.weight",
        (_, "output_norm", "weight") => "model.norm.weight",
        (_, "output", "weight") => "lm_head.weight",
        _ => return None,
    };
    Some(plain(name.to_string()))
}

/// One safetensors file, mapped.
struct Shard {
    path: PathBuf,
    map: MappedFile,
}

pub struct HfSource {
    dir: PathBuf,
    family: Family,
    hparams: HParams,
    /// `rope_freqs.weight`, computed from config.json's RoPE scaling.
    rope_freqs: Option<Vec<f32>>,
    tokenizer: TokenizerSpec,
    shards: Vec<Shard>,
    /// Checkpoint tensor name to the shard holding it.
    shard_of: HashMap<String, usize>,
    stored: Stored,
}

fn input_error(path: &Path, reason: impl Into<String>) -> ConvertError {
    ConvertError::Input { path: path.to_path_buf(), reason: reason.into() }
}

/// Largest JSON side file read (tokenizer.json of a 256k vocabulary is ~35 MB).
pub(crate) const MAX_JSON_BYTES: u64 = 256 << 20;

/// Reads a JSON file; `Ok(None)` if it does not exist.
fn read_json(path: &Path) -> Result<Option<Value>, ConvertError> {
    let text = match crate::mmap::read_regular_to_string(path, MAX_JSON_BYTES) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(input_error(path, e.to_string())),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| input_error(path, format!("invalid JSON: {e}")))
}

fn require_json(path: &Path) -> Result<Value, ConvertError> {
    read_json(path)?.ok_or_else(|| input_error(path, "not found"))
}

/// The safetensors files of the folder: `model.safetensors`, or the shards that
/// `model.safetensors.index.json` lists.
fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>, ConvertError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_path = dir.join("model.safetensors.index.json");
    let Some(index) = read_json(&index_path)? else {
        return Err(input_error(dir, "no model.safetensors or model.safetensors.index.json"));
    };
    let map = index
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| input_error(&index_path, "no weight_map object"))?;
    let mut files: Vec<&str> = Vec::new();
    for file in map.values() {
        let file = file
            .as_str()
            .ok_or_else(|| input_error(&index_path, format!("weight_map value {file} is not a file name")))?;
        // Shards sit beside the index: refuse paths that would leave the folder.
        if file.contains(['/', '\\']) || file == ".." || file.is_empty() {
            return Err(input_error(&index_path, format!("shard '{file}' is not a plain file name")));
        }
        if !files.contains(&file) {
            files.push(file);
        }
    }
    files.sort_unstable();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

impl HfSource {
    pub fn open(dir: &Path) -> Result<Self, ConvertError> {
        if !dir.is_dir() {
            return Err(input_error(dir, "not a directory"));
        }
        let config_path = dir.join("config.json");
        let config_json = require_json(&config_path)?;
        let config = Config { path: &config_path, json: &config_json };
        let family = config.family()?;
        let (hparams, rope_freqs) = match family {
            Family::Gpt2 => (config.gpt2()?, None),
            family => config.llama_family(family)?,
        };

        let tokenizer = tokenizer::read_tokenizer(dir, &config_json)?;
        if tokenizer.tokens.len() != hparams.vocab_size as usize {
            return Err(input_error(
                dir,
                format!(
                    "config.json has vocab_size {} but tokenizer.json has {} tokens",
                    hparams.vocab_size,
                    tokenizer.tokens.len()
                ),
            ));
        }
        hparams.validate().map_err(|e| input_error(&config_path, e))?;

        let mut shards = Vec::new();
        let mut shard_of = HashMap::new();
        let mut stored = Stored { tensors: 0, elements: 0 };
        for path in shard_paths(dir)? {
            let map = MappedFile::open(&path).map_err(|e| input_error(&path, e.to_string()))?;
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| input_error(&path, format!("not a valid safetensors file: {e}")))?;
            for (name, view) in st.tensors() {
                if shard_of.insert(name.clone(), shards.len()).is_some() {
                    return Err(input_error(&path, format!("tensor '{name}' is in two shards")));
                }
                // safetensors checked that the data fits the file.
                let elements = view.shape().iter().fold(1u64, |n, &d| n.saturating_mul(d as u64));
                stored.tensors += 1;
                stored.elements = stored.elements.saturating_add(elements);
            }
            drop(st);
            shards.push(Shard { path, map });
        }
        Ok(Self { dir: dir.to_path_buf(), family, hparams, rope_freqs, tokenizer, shards, shard_of, stored })
    }

    /// The checkpoint's name for `canonical` as present in the shards.
    fn locate(&self, canonical: &str) -> Option<(CheckpointName, usize)> {
        let mut found = checkpoint_name(self.family, canonical)?;
        if let Some(&shard) = self.shard_of.get(&found.name) {
            return Some((found, shard));
        }
        if self.family == Family::Gpt2 {
            found.name = format!("transformer.{}", found.name);
            if let Some(&shard) = self.shard_of.get(&found.name) {
                return Some((found, shard));
            }
        }
        None
    }
}

/// Decodes little-endian F32, F16 or BF16 data to f32.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>, String> {
    Ok(match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => {
            bytes.chunks_exact(2).map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()).collect()
        }
        Dtype::BF16 => {
            bytes.chunks_exact(2).map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()).collect()
        }
        other => return Err(format!("has dtype {other:?} (supported: F32, F16, BF16)")),
    })
}

fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

impl Source for HfSource {
    fn hparams(&self) -> &HParams {
        &self.hparams
    }

    fn tokenizer(&self) -> &TokenizerSpec {
        &self.tokenizer
    }

    fn has(&self, name: &str) -> bool {
        if name == "output.weight" && self.hparams.tied_embeddings {
            return false;
        }
        if name == "rope_freqs.weight" {
            return self.rope_freqs.is_some();
        }
        self.locate(name).is_some()
    }

    fn stored(&self) -> Stored {
        self.stored
    }

    fn tensor(&self, name: &str) -> Result<SourceTensor, ConvertError> {
        // Named as the checkpoint spells it, which is what a user can look for.
        let missing = || ConvertError::MissingTensor {
            path: self.dir.clone(),
            name: checkpoint_name(self.family, name).map_or_else(|| name.to_string(), |c| c.name),
        };
        if name == "rope_freqs.weight" {
            let data = self.rope_freqs.clone().ok_or_else(missing)?;
            return Ok(SourceTensor { rows: data.len(), cols: 1, data });
        }
        if name == "output.weight" && self.hparams.tied_embeddings {
            return Err(missing());
        }
        let (found, shard) = self.locate(name).ok_or_else(missing)?;
        let shard = &self.shards[shard];
        let fail = |reason: String| ConvertError::Tensor { path: shard.path.clone(), name: found.name.clone(), reason };
        let st = SafeTensors::deserialize(&shard.map).map_err(|e| fail(e.to_string()))?;
        let view = st.tensor(&found.name).map_err(|e| fail(e.to_string()))?;
        let mut data = to_f32(view.dtype(), view.data()).map_err(fail)?;
        // Gemma3RMSNorm scales by (1 + weight): stored with the 1 added, as
        // llama.cpp's converter does, so the runtime's RMSNorm is the usual one.
        if self.family == Family::Gemma3 && name.ends_with("norm.weight") {
            data.iter_mut().for_each(|w| *w += 1.0);
        }
        let (rows, cols) = match *view.shape() {
            [n] => (n, 1),
            [rows, cols] => (rows, cols),
            ref shape => return Err(fail(format!("has shape {shape:?}, expected 1 or 2 dimensions"))),
        };
        if found.transposed {
            Ok(SourceTensor { rows: cols, cols: rows, data: transpose(&data, rows, cols) })
        } else {
            Ok(SourceTensor { rows, cols, data })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(family: Family, canonical: &str) -> Option<(String, bool)> {
        checkpoint_name(family, canonical).map(|c| (c.name, c.transposed))
    }

    #[test]
    fn llama_names() {
        let l = Family::Llama;
        let s = |n: &str| Some((n.to_string(), false));
        assert_eq!(name(l, "token_embd.weight"), s("model.embed_tokens.weight"));
        assert_eq!(name(l, "output.weight"), s("lm_head.weight"));
        assert_eq!(name(l, "output_norm.weight"), s("model.norm.weight"));
        assert_eq!(name(l, "blk.3.attn_q.weight"), s("model.layers.3.self_attn.q_proj.weight"));
        assert_eq!(name(l, "blk.0.attn_output.weight"), s("model.layers.0.self_attn.o_proj.weight"));
        assert_eq!(name(l, "blk.1.ffn_gate.weight"), s("model.layers.1.mlp.gate_proj.weight"));
        assert_eq!(name(l, "blk.1.ffn_norm.weight"), s("model.layers.1.post_attention_layernorm.weight"));
        assert_eq!(name(l, "blk.1.attn_norm.weight"), s("model.layers.1.input_layernorm.weight"));
        assert_eq!(name(l, "blk.1.attn_q.bias"), None);
        assert_eq!(name(l, "blk.1.attn_qkv.weight"), None);
        assert_eq!(name(l, "position_embd.weight"), None);
        assert_eq!(name(l, "blk.x.attn_q.weight"), None);
        assert_eq!(name(l, "blk.0.attn_q_norm.weight"), None);
    }

    #[test]
    fn family_names() {
        let s = |n: &str| Some((n.to_string(), false));
        assert_eq!(name(Family::Qwen2, "blk.2.attn_k.bias"), s("model.layers.2.self_attn.k_proj.bias"));
        assert_eq!(name(Family::Qwen2, "blk.2.attn_output.bias"), None);
        assert_eq!(name(Family::Qwen3, "blk.0.attn_q_norm.weight"), s("model.layers.0.self_attn.q_norm.weight"));
        assert_eq!(name(Family::Qwen3, "blk.0.attn_q.bias"), None);
        let g = Family::Gemma3;
        assert_eq!(name(g, "blk.1.post_attention_norm.weight"), s("model.layers.1.post_attention_layernorm.weight"));
        assert_eq!(name(g, "blk.1.ffn_norm.weight"), s("model.layers.1.pre_feedforward_layernorm.weight"));
        assert_eq!(name(g, "blk.1.post_ffw_norm.weight"), s("model.layers.1.post_feedforward_layernorm.weight"));
        assert_eq!(name(g, "blk.1.attn_k_norm.weight"), s("model.layers.1.self_attn.k_norm.weight"));
        assert_eq!(name(g, "blk.1.attn_norm.weight"), s("model.layers.1.input_layernorm.weight"));
        let p = Family::Phi3;
        assert_eq!(name(p, "blk.0.attn_qkv.weight"), s("model.layers.0.self_attn.qkv_proj.weight"));
        assert_eq!(name(p, "blk.0.ffn_up.weight"), s("model.layers.0.mlp.gate_up_proj.weight"));
        assert_eq!(name(p, "blk.0.ffn_gate.weight"), None);
        assert_eq!(name(p, "blk.0.attn_q.weight"), None);
        assert_eq!(name(p, "blk.0.ffn_norm.weight"), s("model.layers.0.post_attention_layernorm.weight"));
    }

    #[test]
    fn gpt2_names_and_conv1d_transposes() {
        let g = Family::Gpt2;
        let n = |s: &str, t: bool| Some((s.to_string(), t));
        assert_eq!(name(g, "token_embd.weight"), n("wte.weight", false));
        assert_eq!(name(g, "position_embd.weight"), n("wpe.weight", false));
        assert_eq!(name(g, "output_norm.bias"), n("ln_f.bias", false));
        assert_eq!(name(g, "blk.2.attn_qkv.weight"), n("h.2.attn.c_attn.weight", true));
        assert_eq!(name(g, "blk.2.attn_qkv.bias"), n("h.2.attn.c_attn.bias", false));
        assert_eq!(name(g, "blk.0.attn_output.weight"), n("h.0.attn.c_proj.weight", true));
        assert_eq!(name(g, "blk.0.ffn_up.weight"), n("h.0.mlp.c_fc.weight", true));
        assert_eq!(name(g, "blk.0.ffn_down.weight"), n("h.0.mlp.c_proj.weight", true));
        assert_eq!(name(g, "blk.0.ffn_norm.bias"), n("h.0.ln_2.bias", false));
        assert_eq!(name(g, "blk.0.attn_q.weight"), None);
        assert_eq!(name(g, "output.weight"), None);
    }

    #[test]
    fn transpose_swaps_axes() {
        // [[1, 2, 3], [4, 5, 6]] -> [[1, 4], [2, 5], [3, 6]]
        assert_eq!(transpose(&[1., 2., 3., 4., 5., 6.], 2, 3), vec![1., 4., 2., 5., 3., 6.]);
    }

    #[test]
    fn half_types_decode() {
        let one_f16 = f16::from_f32(1.5).to_bits().to_le_bytes();
        let one_bf16 = bf16::from_f32(-2.0).to_bits().to_le_bytes();
        assert_eq!(to_f32(Dtype::F16, &one_f16).unwrap(), vec![1.5]);
        assert_eq!(to_f32(Dtype::BF16, &one_bf16).unwrap(), vec![-2.0]);
        assert_eq!(to_f32(Dtype::F32, &0.25f32.to_le_bytes()).unwrap(), vec![0.25]);
        assert!(to_f32(Dtype::I32, &[0; 4]).unwrap_err().contains("I32"));
    }
}
