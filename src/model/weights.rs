//! Typed views of a model's tensors: every field names its role and shape, so
//! the forward pass never does offset arithmetic.

use gpt_fast_kernels::{Kernels, Matrix, Role};

use super::parallel::Parallel;
use crate::format::{DType, HParams};

/// A linear layer `y = W x (+ b)`.
#[derive(Clone, Copy, Debug)]
pub struct Linear<'a> {
    pub w: Matrix<'a>,
    /// `(w.rows)`: GPT-2's layers, Qwen2's `attn_qkv`.
    pub bias: Option<&'a [f32]>,
}

impl Linear<'_> {
    /// `out[t] = W x[t] (+ b)` for `n` rows of `x`, tokens of `role`; the
    /// activations are prepared for `W`'s dtype on the way (see
    /// [`Parallel::matmul`]).
    pub fn forward(&self, par: &mut Parallel, k: &Kernels, role: Role, x: &[f32], n: usize, out: &mut [f32]) {
        let rows = self.w.rows;
        par.matmul(k, role, &self.w, x, n, out);
        if let Some(b) = self.bias {
            for t in 0..n {
                (k.add)(&mut out[t * rows..][..rows], b);
            }
        }
    }
}

/// RMSNorm (weight) or LayerNorm (weight and bias).
#[derive(Clone, Copy, Debug)]
pub struct Norm<'a> {
    /// `(dim)`
    pub weight: &'a [f32],
    /// `(dim)`, LayerNorm only.
    pub bias: Option<&'a [f32]>,
}

#[derive(Clone, Copy, Debug)]
pub struct LayerWeights<'a> {
    pub attn_norm: Norm<'a>,
    /// `((n_heads + 2 n_kv_heads) head_dim, dim)`: Q rows, K rows, V rows.
    pub attn_qkv: Linear<'a>,
    /// `(head_dim)` each: RMSNorm weights of every query / key head (QK-norm).
    pub attn_q_norm: Option<&'a [f32]>,
    pub attn_k_norm: Option<&'a [f32]>,
    /// `(dim, n_heads head_dim)`
    pub attn_output: Linear<'a>,
    /// RMSNorm of the attention output before the residual add (Gemma 3).
    pub attn_post_norm: Option<Norm<'a>>,
    pub ffn_norm: Norm<'a>,
    /// Llama `(2 ffn_dim, dim)`: gate rows then up rows; GPT-2 `(ffn_dim, dim)`.
    pub ffn_up: Linear<'a>,
    /// `(dim, ffn_dim)`
    pub ffn_down: Linear<'a>,
    /// RMSNorm of the feed-forward output before the residual add (Gemma 3).
    pub ffn_post_norm: Option<Norm<'a>>,
}

#[derive(Clone, Debug)]
pub struct Weights<'a> {
    /// `(vocab_size, dim)`
    pub token_embd: Matrix<'a>,
    /// `(max_seq_len, dim)`, GPT-2 only.
    pub position_embd: Option<&'a [f32]>,
    /// `(rope_dim / 2)`: divisors of the global layers' RoPE frequencies (scaling).
    pub rope_freqs: Option<&'a [f32]>,
    pub layers: Vec<LayerWeights<'a>>,
    pub output_norm: Norm<'a>,
    /// `(vocab_size, dim)`: `output.weight`, or `token_embd` when tied.
    pub lm_head: Matrix<'a>,
}

impl Weights<'_> {
    /// Whether `k` sums some matrix of the layers in another order for each
    /// [`Role`] (float weights on a SIMD table): a token's keys and values
    /// then depend on whether it was evaluated as a prompt token or as a
    /// generated one.
    pub fn role_changes_kv(&self, k: &Kernels) -> bool {
        let matrices = self.layers.iter().flat_map(|l| [l.attn_qkv.w, l.attn_output.w, l.ffn_up.w, l.ffn_down.w]);
        matrices.into_iter().any(|m| k.role_changes_order(m.dtype))
    }
}

/// Builds [`Weights`] from a lookup of tensors by name (`(dtype, rows, cols, bytes)`).
pub fn build<'a>(h: &HParams, get: impl Fn(&str) -> (DType, usize, usize, &'a [u8])) -> Weights<'a> {
    let mat = |name: &str| {
        let (dtype, rows, cols, data) = get(name);
        Matrix { rows, cols, dtype, data }
    };
    let f32s = |name: &str| -> &'a [f32] { bytemuck::cast_slice(get(name).3) };
    let bias = |name: String| h.arch.has_biases().then(|| f32s(&name));
    let norm = |p: &str| Norm { weight: f32s(&format!("{p}.weight")), bias: bias(format!("{p}.bias")) };
    let linear = |p: &str| Linear { w: mat(&format!("{p}.weight")), bias: bias(format!("{p}.bias")) };
    let v = &h.variant;
    let when = |on: bool, name: String| on.then(|| f32s(&name));
    let rms = |on: bool, name: String| on.then(|| Norm { weight: f32s(&name), bias: None });
    let layers = (0..h.n_layers)
        .map(|i| {
            let mut attn_qkv = linear(&format!("blk.{i}.attn_qkv"));
            if v.qkv_bias {
                attn_qkv.bias = Some(f32s(&format!("blk.{i}.attn_qkv.bias")));
            }
            LayerWeights {
                attn_norm: norm(&format!("blk.{i}.attn_norm")),
                attn_qkv,
                attn_q_norm: when(v.qk_norm, format!("blk.{i}.attn_q_norm.weight")),
                attn_k_norm: when(v.qk_norm, format!("blk.{i}.attn_k_norm.weight")),
                attn_output: linear(&format!("blk.{i}.attn_output")),
                attn_post_norm: rms(v.post_norms, format!("blk.{i}.post_attention_norm.weight")),
                ffn_norm: norm(&format!("blk.{i}.ffn_norm")),
                ffn_up: linear(&format!("blk.{i}.ffn_up")),
                ffn_down: linear(&format!("blk.{i}.ffn_down")),
                ffn_post_norm: rms(v.post_norms, format!("blk.{i}.post_ffw_norm.weight")),
            }
        })
        .collect();
    let token_embd = mat("token_embd.weight");
    Weights {
        token_embd,
        position_embd: h.arch.learned_positions().then(|| f32s("position_embd.weight")),
        rope_freqs: when(v.rope_freqs, "rope_freqs.weight".into()),
        layers,
        output_norm: norm("output_norm"),
        lm_head: if h.tied_embeddings { token_embd } else { mat("output.weight") },
    }
}
