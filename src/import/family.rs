//! The model families the importers read, and what each one's checkpoints
//! look like. The runtime knows only [`Arch`] and [`Variant`](crate::format::Variant); a family is the
//! importers' name for a set of checkpoint conventions that map onto them.

use crate::format::Arch;

/// A checkpoint family, named as Hugging Face and GGUF name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Gpt2,
    /// Llama 2 and 3.x, SmolLM, TinyLlama.
    Llama,
    /// Llama with a sliding window (when its config has one).
    Mistral,
    /// QKV biases.
    Qwen2,
    /// QK-norm.
    Qwen3,
    /// QK-norm, post-norms, GeGLU, (1 + w) norms, √dim embeddings,
    /// interleaved local (sliding, own RoPE base) and global layers.
    Gemma3,
    /// Fused QKV and gate/up projections, partial rotary.
    Phi3,
}

impl Family {
    /// `config.json`'s `architectures` entries.
    pub const HF_NAMES: &'static [(&'static str, Family)] = &[
        ("GPT2LMHeadModel", Family::Gpt2),
        ("LlamaForCausalLM", Family::Llama),
        ("MistralForCausalLM", Family::Mistral),
        ("Qwen2ForCausalLM", Family::Qwen2),
        ("Qwen3ForCausalLM", Family::Qwen3),
        ("Gemma3ForCausalLM", Family::Gemma3),
        ("Phi3ForCausalLM", Family::Phi3),
    ];

    /// `config.json`'s `model_type`, for configs without `architectures`.
    pub const HF_MODEL_TYPES: &'static [(&'static str, Family)] = &[
        ("gpt2", Family::Gpt2),
        ("llama", Family::Llama),
        ("mistral", Family::Mistral),
        ("qwen2", Family::Qwen2),
        ("qwen3", Family::Qwen3),
        ("gemma3_text", Family::Gemma3),
        ("phi3", Family::Phi3),
    ];

    /// GGUF's `general.architecture` (llama.cpp writes Mistral as `llama`).
    pub const GGUF_NAMES: &'static [(&'static str, Family)] = &[
        ("gpt2", Family::Gpt2),
        ("llama", Family::Llama),
        ("qwen2", Family::Qwen2),
        ("qwen3", Family::Qwen3),
        ("gemma3", Family::Gemma3),
        ("phi3", Family::Phi3),
    ];

    pub fn arch(self) -> Arch {
        match self {
            Family::Gpt2 => Arch::Gpt2,
            _ => Arch::Llama,
        }
    }

    /// The names of a table, for "supported: …" in errors.
    pub fn list(table: &[(&str, Family)]) -> String {
        table.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
    }
}

/// RoPE frequency divisors (`rope_freqs.weight`) of Llama 3's scaling
/// (transformers' `_compute_llama3_parameters`, llama.cpp's `rope_freqs`):
/// frequencies whose wavelength exceeds `original_context / low_freq_factor`
/// are divided by `factor`, those below `original_context / high_freq_factor`
/// kept, and those between interpolated smoothly.
pub fn llama3_divisors(rope_dim: u32, theta: f32, factor: f64, low: f64, high: f64, original_context: f64) -> Vec<f32> {
    let (low_wavelen, high_wavelen) = (original_context / low, original_context / high);
    (0..rope_dim / 2)
        .map(|i| {
            let freq = f64::from(theta).powf(-f64::from(2 * i) / f64::from(rope_dim));
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let divisor = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original_context / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            divisor as f32
        })
        .collect()
}

/// Linear RoPE scaling (positions divided by `factor`) as frequency divisors.
pub fn linear_divisors(rope_dim: u32, factor: f32) -> Vec<f32> {
    vec![factor; (rope_dim / 2) as usize]
}

/// The sliding-window layer rule ([`crate::format::Variant::swa_period`]) that
/// gives exactly `sliding` (one flag per layer), if there is one.
pub fn swa_period(sliding: &[bool]) -> Option<u32> {
    let rule = |p: usize| (0..sliding.len()).all(|i| sliding[i] == (p == 0 || i % p + 1 < p));
    (0..=sliding.len()).find(|&p| rule(p)).map(|p| p as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_divisors_span_the_three_bands() {
        // Llama 3.1's values: factor 8, low 1, high 4, original context 8192, theta 5e5, head_dim 128.
        let d = llama3_divisors(128, 500_000.0, 8.0, 1.0, 4.0, 8192.0);
        assert_eq!(d.len(), 64);
        assert_eq!(d[0], 1.0);
        assert_eq!(d[63], 8.0);
        assert!(d.windows(2).all(|w| w[0] <= w[1]), "{d:?}");
        assert!(d.iter().any(|&x| x > 1.0 && x < 8.0));
    }

    #[test]
    fn periods_of_layer_patterns() {
        let gemma: Vec<bool> = (0..12).map(|i| (i + 1) % 6 != 0).collect();
        assert_eq!(swa_period(&gemma), Some(6));
        assert_eq!(swa_period(&[true; 4]), Some(0));
        assert_eq!(swa_period(&[false; 4]), Some(1));
        assert_eq!(swa_period(&[false, true, false, true]), None);
    }
}
