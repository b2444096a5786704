//! config.json to [`HParams`], with transformers' meaning and defaults
//! (`LlamaConfig`, `GPT2Config`).

use std::path::Path;

use crate::format::{Arch, HParams};
use serde_json::Value;

use super::input_error;
use crate::import::ConvertError;

/// Typed access to config.json; `null` counts as absent, as in transformers.
pub(super) struct Config<'a> {
    pub(super) path: &'a Path,
    pub(super) json: &'a Value,
}

impl Config<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    fn u32_or(&self, key: &str, default: u32) -> Result<u32, ConvertError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| input_error(self.path, format!("{key} = {v} is not a u32"))),
        }
    }

    fn f32_or(&self, key: &str, default: f32) -> Result<f32, ConvertError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| input_error(self.path, format!("{key} = {v} is not a number"))),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConvertError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| input_error(self.path, format!("{key} = {v} is not a boolean"))),
        }
    }

    fn str_or<'v>(&'v self, key: &str, default: &'v str) -> Result<&'v str, ConvertError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| input_error(self.path, format!("{key} = {v} is not a string"))),
        }
    }

    /// The architecture from `architectures` (or `model_type` when absent).
    pub(super) fn arch(&self) -> Result<Arch, ConvertError> {
        let names: Vec<&str> = match self.get("architectures") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(v) => return Err(input_error(self.path, format!("architectures = {v} is not a list"))),
            None => vec![],
        };
        for name in &names {
            match *name {
                "LlamaForCausalLM" => return Ok(Arch::Llama),
                "GPT2LMHeadModel" => return Ok(Arch::Gpt2),
                _ => {}
            }
        }
        if names.is_empty() {
            match self.str_or("model_type", "")? {
                "llama" => return Ok(Arch::Llama),
                "gpt2" => return Ok(Arch::Gpt2),
                _ => {}
            }
        }
        let found = if names.is_empty() {
            format!("model_type '{}'", self.str_or("model_type", "")?)
        } else {
            format!("architectures {names:?}")
        };
        Err(input_error(
            self.path,
            format!("unsupported {found} (gpt-fast reads LlamaForCausalLM and GPT2LMHeadModel)"),
        ))
    }

    /// `LlamaConfig`'s keys and defaults.
    pub(super) fn llama(&self) -> Result<HParams, ConvertError> {
        let act = self.str_or("hidden_act", "silu")?;
        if act != "silu" {
            return Err(input_error(self.path, format!("hidden_act '{act}' is not supported (Llama uses silu)")));
        }
        for key in ["attention_bias", "mlp_bias"] {
            if self.bool_or(key, false)? {
                return Err(input_error(self.path, format!("{key} = true is not supported")));
            }
        }
        // transformers 4 writes `rope_theta` and `rope_scaling`; 5 writes
        // `rope_parameters` ({rope_type, rope_theta}). Only plain RoPE is supported.
        let mut rope_theta = self.f32_or("rope_theta", 10_000.0)?;
        for key in ["rope_scaling", "rope_parameters"] {
            let Some(rope) = self.get(key) else { continue };
            let kind = rope.get("rope_type").or_else(|| rope.get("type")).and_then(Value::as_str).unwrap_or("default");
            if kind != "default" {
                return Err(input_error(
                    self.path,
                    format!("{key} of type '{kind}' is not supported (only plain RoPE)"),
                ));
            }
            if let Some(theta) = rope.get("rope_theta").and_then(Value::as_f64) {
                rope_theta = theta as f32;
            }
        }
        let dim = self.u32_or("hidden_size", 4096)?;
        let n_heads = self.u32_or("num_attention_heads", 32)?;
        let head_dim = match self.get("head_dim") {
            Some(_) => self.u32_or("head_dim", 0)?,
            None if n_heads != 0 && dim % n_heads == 0 => dim / n_heads,
            None => {
                return Err(input_error(
                    self.path,
                    format!("hidden_size {dim} is not a multiple of num_attention_heads {n_heads}"),
                ))
            }
        };
        Ok(HParams {
            arch: Arch::Llama,
            n_layers: self.u32_or("num_hidden_layers", 32)?,
            dim,
            n_heads,
            n_kv_heads: self.u32_or("num_key_value_heads", n_heads)?,
            head_dim,
            ffn_dim: self.u32_or("intermediate_size", 11008)?,
            vocab_size: self.u32_or("vocab_size", 32000)?,
            max_seq_len: self.u32_or("max_position_embeddings", 2048)?,
            rope_theta,
            norm_eps: self.f32_or("rms_norm_eps", 1e-6)?,
            tied_embeddings: self.bool_or("tie_word_embeddings", false)?,
        })
    }

    /// `GPT2Config`'s keys and defaults.
    pub(super) fn gpt2(&self) -> Result<HParams, ConvertError> {
        let act = self.str_or("activation_function", "gelu_new")?;
        // Both are GELU's tanh approximation, the one gpt-fast computes.
        if act != "gelu_new" && act != "gelu_pytorch_tanh" {
            return Err(input_error(
                self.path,
                format!("activation_function '{act}' is not supported (gelu_new or gelu_pytorch_tanh)"),
            ));
        }
        if self.bool_or("scale_attn_by_inverse_layer_idx", false)? || !self.bool_or("scale_attn_weights", true)? {
            return Err(input_error(self.path, "only attention scaled by 1/sqrt(head_dim) is supported"));
        }
        if !self.bool_or("tie_word_embeddings", true)? {
            return Err(input_error(self.path, "GPT-2 with an untied lm_head is not supported"));
        }
        let dim = self.u32_or("n_embd", 768)?;
        let n_heads = self.u32_or("n_head", 12)?;
        if n_heads == 0 || dim % n_heads != 0 {
            return Err(input_error(self.path, format!("n_embd {dim} is not a multiple of n_head {n_heads}")));
        }
        let ffn_dim = match self.get("n_inner") {
            Some(_) => self.u32_or("n_inner", 0)?,
            None => dim.checked_mul(4).ok_or_else(|| input_error(self.path, "n_embd too large"))?,
        };
        Ok(HParams {
            arch: Arch::Gpt2,
            n_layers: self.u32_or("n_layer", 12)?,
            dim,
            n_heads,
            n_kv_heads: n_heads,
            head_dim: dim / n_heads,
            ffn_dim,
            vocab_size: self.u32_or("vocab_size", 50257)?,
            max_seq_len: self.u32_or("n_positions", 1024)?,
            rope_theta: 0.0,
            norm_eps: self.f32_or("layer_norm_epsilon", 1e-5)?,
            tied_embeddings: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_rope() {
        let path = Path::new("config.json");
        let parse = |text: &str| -> Result<HParams, ConvertError> {
            let json: Value = serde_json::from_str(text).unwrap();
            let c = Config { path, json: &json };
            match c.arch()? {
                Arch::Llama => c.llama(),
                Arch::Gpt2 => c.gpt2(),
            }
        };
        let h = parse(r#"{"architectures": ["GPT2LMHeadModel"], "n_inner": null}"#).unwrap();
        assert_eq!((h.dim, h.ffn_dim, h.n_layers, h.vocab_size, h.max_seq_len), (768, 3072, 12, 50257, 1024));
        let h = parse(r#"{"model_type": "llama", "rope_scaling": null, "hidden_size": 64, "num_attention_heads": 4}"#)
            .unwrap();
        assert_eq!(
            (h.head_dim, h.n_kv_heads, h.rope_theta, h.norm_eps, h.tied_embeddings),
            (16, 4, 10000.0, 1e-6, false)
        );
        let h = parse(r#"{"architectures": ["LlamaForCausalLM"], "rope_parameters": {"rope_type": "default", "rope_theta": 5e5}}"#).unwrap();
        assert_eq!(h.rope_theta, 5e5);
        let e =
            parse(r#"{"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}"#);
        assert!(e.unwrap_err().to_string().contains("'llama3'"));
        let e = parse(r#"{"architectures": ["MistralForCausalLM"]}"#);
        assert!(e.unwrap_err().to_string().contains("MistralForCausalLM"));
        let e = parse(r#"{"architectures": ["GPT2LMHeadModel"], "activation_function": "gelu"}"#);
        assert!(e.unwrap_err().to_string().contains("'gelu'"));
    }
}
