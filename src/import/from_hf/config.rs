//! config.json to [`HParams`], with transformers' meaning and defaults
//! (`GPT2Config` and the Llama family's configs).

use std::path::Path;

use crate::format::{Arch, HParams, Variant};
use serde_json::Value;

use super::input_error;
use crate::import::family::{linear_divisors, llama3_divisors, swa_period, Family};
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

    /// The family from `architectures` (or `model_type` when absent).
    pub(super) fn family(&self) -> Result<Family, ConvertError> {
        let names: Vec<&str> = match self.get("architectures") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(v) => return Err(input_error(self.path, format!("architectures = {v} is not a list"))),
            None => vec![],
        };
        for name in &names {
            if let Some((_, family)) = Family::HF_NAMES.iter().find(|(n, _)| n == name) {
                return Ok(*family);
            }
        }
        let model_type = self.str_or("model_type", "")?;
        if names.is_empty() {
            if let Some((_, family)) = Family::HF_MODEL_TYPES.iter().find(|(n, _)| *n == model_type) {
                return Ok(*family);
            }
        }
        let found =
            if names.is_empty() { format!("model_type '{model_type}'") } else { format!("architectures {names:?}") };
        Err(input_error(self.path, format!("unsupported {found} (gpt-fast reads {})", Family::list(Family::HF_NAMES))))
    }

    /// The hyper-parameters of a Llama-family model, with transformers' keys
    /// and defaults (`LlamaConfig`, `MistralConfig`, `Qwen2Config`,
    /// `Qwen3Config`, `Gemma3TextConfig`, `Phi3Config`), and the RoPE
    /// frequency divisors when the config scales RoPE.
    pub(super) fn llama_family(&self, family: Family) -> Result<(HParams, Option<Vec<f32>>), ConvertError> {
        let gemma = family == Family::Gemma3;
        let (act_key, act_want) =
            if gemma { ("hidden_activation", "gelu_pytorch_tanh") } else { ("hidden_act", "silu") };
        let act = self.str_or(act_key, act_want)?;
        if act != act_want {
            return Err(input_error(
                self.path,
                format!("{act_key} '{act}' is not supported ({family:?} uses {act_want})"),
            ));
        }
        // Llama's, Qwen3's and Phi-3's attention_bias also puts a bias on the
        // output projection, which gpt-fast has not; Qwen2 always has Q/K/V biases only.
        for key in ["attention_bias", "mlp_bias"] {
            if self.bool_or(key, false)? {
                return Err(input_error(self.path, format!("{key} = true is not supported")));
            }
        }
        for key in ["final_logit_softcapping", "attn_logit_softcapping"] {
            if self.get(key).is_some() {
                return Err(input_error(self.path, format!("{key} is not supported")));
            }
        }
        if self.bool_or("use_bidirectional_attention", false)? {
            return Err(input_error(self.path, "use_bidirectional_attention = true is not supported"));
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
        let n_layers = self.u32_or("num_hidden_layers", 32)?;

        // RoPE: transformers 4 writes `rope_theta` and `rope_scaling` (Gemma 3
        // also `rope_local_base_freq`); 5 writes `rope_parameters`, per layer
        // type for Gemma 3 ({"full_attention": {…}, "sliding_attention": {…}}).
        let params = self.get("rope_parameters");
        let (global, local) = match params.and_then(|p| p.get("full_attention")) {
            Some(full) => (Some(full), params.and_then(|p| p.get("sliding_attention"))),
            None => (params.or_else(|| self.get("rope_scaling")), None),
        };
        let default_theta = if gemma { 1_000_000.0 } else { 10_000.0 };
        let theta_of = |p: Option<&Value>, key: &str, default: f32| -> Result<f32, ConvertError> {
            match p.and_then(|p| p.get("rope_theta")).and_then(Value::as_f64) {
                Some(t) => Ok(t as f32),
                None => self.f32_or(key, default),
            }
        };
        let rope_theta = theta_of(global, "rope_theta", default_theta)?;
        let rope_theta_swa = if gemma { theta_of(local, "rope_local_base_freq", 10_000.0)? } else { 0.0 };
        let partial = match global.and_then(|p| p.get("partial_rotary_factor")).and_then(Value::as_f64) {
            Some(f) => f,
            None => f64::from(self.f32_or("partial_rotary_factor", 1.0)?),
        };
        if !(partial > 0.0 && partial <= 1.0) {
            return Err(input_error(self.path, format!("partial_rotary_factor = {partial} is outside (0, 1]")));
        }
        // transformers: int(head_dim * partial_rotary_factor).
        let rope_dim = (f64::from(head_dim) * partial) as u32;
        let max_seq_len = self.u32_or("max_position_embeddings", 2048)?;
        let rope_freqs = match global {
            Some(p) => self.rope_divisors(p, rope_dim, rope_theta, max_seq_len)?,
            None => None,
        };
        if let Some(kind) = local.and_then(|p| p.get("rope_type")).and_then(Value::as_str) {
            if kind != "default" {
                return Err(input_error(self.path, format!("sliding layers' rope_type '{kind}' is not supported")));
            }
        }

        // Sliding windows: every layer (Mistral, Phi-3), or the local layers of
        // Gemma 3's `layer_types`. Qwen2/3 name one but use it only with
        // `use_sliding_window`, which is not supported.
        let window = match self.get("sliding_window") {
            Some(_) => self.u32_or("sliding_window", 0)?,
            None => 0,
        };
        let (sliding_window, swa_period) = match family {
            Family::Mistral | Family::Phi3 => (window, 0),
            Family::Qwen2 | Family::Qwen3 => {
                if self.bool_or("use_sliding_window", false)? {
                    return Err(input_error(self.path, "use_sliding_window = true is not supported"));
                }
                (0, 0)
            }
            Family::Gemma3 => {
                let sliding: Vec<bool> = match self.get("layer_types") {
                    Some(Value::Array(types)) => {
                        types.iter().map(|t| t.as_str() == Some("sliding_attention")).collect()
                    }
                    Some(v) => return Err(input_error(self.path, format!("layer_types = {v} is not a list"))),
                    // Gemma3TextConfig's default: five local layers, then a global one.
                    None => {
                        let period = self.u32_or("sliding_window_pattern", 6)? as usize;
                        (0..n_layers as usize).map(|i| period == 0 || (i + 1) % period != 0).collect()
                    }
                };
                if sliding.len() != n_layers as usize {
                    return Err(input_error(
                        self.path,
                        format!("layer_types has {} entries for {n_layers} layers", sliding.len()),
                    ));
                }
                let period = swa_period(&sliding).ok_or_else(|| {
                    input_error(
                        self.path,
                        "layer_types is not a repeating pattern of local layers then one global layer",
                    )
                })?;
                if window == 0 {
                    (0, 0)
                } else {
                    (window, period)
                }
            }
            Family::Llama | Family::Gpt2 => (0, 0),
        };
        let mut variant = Variant {
            qkv_bias: family == Family::Qwen2,
            qk_norm: matches!(family, Family::Qwen3 | Family::Gemma3),
            post_norms: gemma,
            gelu_gate: gemma,
            rope_freqs: rope_freqs.is_some(),
            rope_dim: if rope_dim == head_dim { 0 } else { rope_dim },
            sliding_window,
            swa_period,
            rope_theta_swa: if sliding_window > 0 { rope_theta_swa } else { 0.0 },
            ..Variant::default()
        };
        if gemma {
            // Gemma's embeddings are scaled by sqrt(hidden_size), its queries by
            // query_pre_attn_scalar^-1/2 (rounded to f32 as transformers does).
            variant.embed_scale = (f64::from(dim).sqrt()) as f32;
            let scalar = self.f32_or("query_pre_attn_scalar", 256.0)?;
            if !(scalar.is_finite() && scalar > 0.0) {
                return Err(input_error(self.path, format!("query_pre_attn_scalar = {scalar} must be positive")));
            }
            // The usual 1/sqrt(head_dim) stays "the default" (0), as a GGUF gives it.
            if scalar != head_dim as f32 {
                variant.attn_scale = (f64::from(scalar).powf(-0.5)) as f32;
            }
        }
        let hparams = HParams {
            arch: Arch::Llama,
            n_layers,
            dim,
            n_heads,
            n_kv_heads: self.u32_or("num_key_value_heads", n_heads)?,
            head_dim,
            ffn_dim: self.u32_or("intermediate_size", 11008)?,
            vocab_size: self.u32_or("vocab_size", 32000)?,
            max_seq_len,
            rope_theta,
            norm_eps: self.f32_or("rms_norm_eps", 1e-6)?,
            tied_embeddings: self.bool_or("tie_word_embeddings", gemma)?,
            variant,
        };
        Ok((hparams, rope_freqs))
    }

    /// Frequency divisors of a RoPE parameter dict (`rope_type` or `type`):
    /// none for plain RoPE, Llama 3's bands, or a constant for linear scaling.
    fn rope_divisors(
        &self,
        p: &Value,
        rope_dim: u32,
        theta: f32,
        max_seq_len: u32,
    ) -> Result<Option<Vec<f32>>, ConvertError> {
        let kind = p.get("rope_type").or_else(|| p.get("type")).and_then(Value::as_str).unwrap_or("default");
        let num = |key: &str| -> Result<f64, ConvertError> {
            p.get(key)
                .and_then(Value::as_f64)
                .ok_or_else(|| input_error(self.path, format!("rope scaling '{kind}' without a numeric {key}")))
        };
        match kind {
            "default" => Ok(None),
            "linear" => Ok(Some(linear_divisors(rope_dim, num("factor")? as f32))),
            "llama3" => {
                let original = match p.get("original_max_position_embeddings") {
                    Some(_) => num("original_max_position_embeddings")?,
                    None => f64::from(max_seq_len),
                };
                let (factor, low, high) = (num("factor")?, num("low_freq_factor")?, num("high_freq_factor")?);
                if !(factor > 0.0 && low > 0.0 && high > low && original > 0.0) {
                    return Err(input_error(
                        self.path,
                        "llama3 rope scaling needs factor > 0 and high_freq_factor > low_freq_factor > 0",
                    ));
                }
                Ok(Some(llama3_divisors(rope_dim, theta, factor, low, high, original)))
            }
            other => Err(input_error(
                self.path,
                format!("rope scaling of type '{other}' is not supported (default, linear, llama3)"),
            )),
        }
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
            variant: Variant::default(),
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
            match c.family()? {
                Family::Gpt2 => c.gpt2(),
                family => c.llama_family(family).map(|(h, _)| h),
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
        assert_eq!(h.variant, Variant::default());
        let h = parse(r#"{"architectures": ["LlamaForCausalLM"], "rope_parameters": {"rope_type": "default", "rope_theta": 5e5}}"#).unwrap();
        assert_eq!(h.rope_theta, 5e5);
        let h = parse(r#"{"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#).unwrap();
        assert!(h.variant.rope_freqs);
        let e =
            parse(r#"{"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "yarn", "factor": 8.0}}"#);
        assert!(e.unwrap_err().to_string().contains("'yarn'"));
        let e =
            parse(r#"{"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}"#);
        assert!(e.unwrap_err().to_string().contains("low_freq_factor"));
        let h = parse(r#"{"architectures": ["MistralForCausalLM"], "sliding_window": 4096}"#).unwrap();
        assert_eq!((h.variant.sliding_window, h.variant.swa_period), (4096, 0));
        let h = parse(r#"{"architectures": ["Qwen2ForCausalLM"], "sliding_window": 4096}"#).unwrap();
        assert!(h.variant.qkv_bias && h.variant.sliding_window == 0);
        let h = parse(r#"{"architectures": ["Gemma3ForCausalLM"], "num_hidden_layers": 12, "hidden_size": 640, "query_pre_attn_scalar": 64, "sliding_window": 512}"#).unwrap();
        let v = h.variant;
        assert!(v.qk_norm && v.post_norms && v.gelu_gate && h.tied_embeddings);
        assert_eq!((v.sliding_window, v.swa_period, v.rope_theta_swa, h.rope_theta), (512, 6, 10_000.0, 1e6));
        assert_eq!((v.attn_scale, v.embed_scale), (0.125, 640f32.sqrt()));
        let h = parse(r#"{"architectures": ["Phi3ForCausalLM"], "hidden_size": 64, "num_attention_heads": 4, "partial_rotary_factor": 0.75}"#).unwrap();
        assert_eq!(h.rope_dim(), 12);
        let e = parse(r#"{"architectures": ["Qwen3ForCausalLM"], "attention_bias": true}"#);
        assert!(e.unwrap_err().to_string().contains("attention_bias"));
        let e = parse(r#"{"architectures": ["FalconForCausalLM"]}"#);
        let e = e.unwrap_err().to_string();
        assert!(e.contains("FalconForCausalLM") && e.contains("Gemma3ForCausalLM"), "{e}");
        let e = parse(r#"{"architectures": ["GPT2LMHeadModel"], "activation_function": "gelu"}"#);
        assert!(e.unwrap_err().to_string().contains("'gelu'"));
    }
}
