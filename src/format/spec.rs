//! The model file's constants, on-disk records and the tensor list that the
//! hyper-parameters imply (docs/FORMAT.md is the prose form of this file).

use bytemuck::{Pod, Zeroable};
/// The weight types and their table live in `quant`, next to their blocks.
pub use gpt_fast_quant::DType;

pub const MAGIC: [u8; 8] = *b"GPTFAST\0";
/// The newest version this build writes; it reads versions 1 to this one.
/// Version 1's header has the [`Variant`] fields still reserved (zero: plain
/// Llama or GPT-2); version 2 gives them; version 3 lets each matmul tensor
/// have its own dtype (a GGUF's types kept as they are) and has the 4- and
/// 5-bit dtypes, which older builds do not know; version 4 stores q5_0/q5_1's
/// fifth bits in a new order ([`Q5_FIFTH_BITS_BY_TILE`]).
pub const VERSION: u32 = 4;
/// The first version whose matmul tensors may each have their own dtype.
pub const PER_TENSOR_DTYPES: u32 = 3;
/// The first version whose q5_0/q5_1 tensors keep their fifth bits arranged
/// per tile (`gpt_fast_quant::q4q5::fifth_bit_at`) rather than per row as
/// GGUF's `qh`: such a tensor in an older file would read as other values,
/// so readers refuse it, and only files with such tensors are written as
/// this version.
pub const Q5_FIFTH_BITS_BY_TILE: u32 = 4;
pub const MIN_VERSION: u32 = 1;
pub const HEADER_BYTES: u64 = 256;
pub const DIR_ENTRY_BYTES: u64 = 128;
/// Tensor data starts at a multiple of this (a page).
pub const DATA_ALIGN: u64 = 4096;
/// Every tensor starts at a multiple of this (a cache line, a full AVX-512 load).
pub const TENSOR_ALIGN: u64 = 64;
/// The header CRC covers bytes from here to `data_offset`.
pub const HEADER_CRC_START: usize = 16;
pub const MAX_NAME_BYTES: usize = 64;

/// Header flag: no `output.weight`; the LM head reads `token_embd.weight`.
pub const FLAG_TIED_EMBEDDINGS: u32 = 1;
/// Header flag ([`Variant::qkv_bias`]): `blk.N.attn_qkv.bias` on a Llama-family model.
pub const FLAG_QKV_BIAS: u32 = 1 << 1;
/// Header flag ([`Variant::qk_norm`]): `blk.N.attn_q_norm` and `attn_k_norm`.
pub const FLAG_QK_NORM: u32 = 1 << 2;
/// Header flag ([`Variant::post_norms`]): `blk.N.post_attention_norm` and `post_ffw_norm`.
pub const FLAG_POST_NORMS: u32 = 1 << 3;
/// Header flag ([`Variant::gelu_gate`]): the gated feed-forward's gate is tanh-GELU (GeGLU).
pub const FLAG_GELU_GATE: u32 = 1 << 4;
/// Header flag ([`Variant::rope_freqs`]): `rope_freqs.weight` is present.
pub const FLAG_ROPE_FREQS: u32 = 1 << 5;
/// Every flag this build knows.
pub const KNOWN_FLAGS: u32 =
    FLAG_TIED_EMBEDDINGS | FLAG_QKV_BIAS | FLAG_QK_NORM | FLAG_POST_NORMS | FLAG_GELU_GATE | FLAG_ROPE_FREQS;

/// The 256-byte header, byte for byte as on disk (little-endian).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct RawHeader {
    pub magic: [u8; 8],
    pub version: u32,
    pub header_crc32: u32,
    pub file_len: u64,
    pub data_offset: u64,
    pub dir_offset: u64,
    pub n_tensors: u64,
    pub tok_offset: u64,
    pub tok_len: u64,
    pub arch: u32,
    pub n_layers: u32,
    pub dim: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub ffn_dim: u32,
    pub vocab_size: u32,
    pub max_seq_len: u32,
    pub rope_theta: f32,
    pub norm_eps: f32,
    pub flags: u32,
    pub weight_dtype: u32,
    /// Version 2 from here on (zero in version 1): [`Variant`]'s numbers.
    pub rope_dim: u32,
    pub sliding_window: u32,
    pub swa_period: u32,
    pub rope_theta_swa: f32,
    pub attn_scale: f32,
    pub embed_scale: f32,
    pub reserved: [u8; 116],
}

/// One 128-byte tensor directory entry, as on disk.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct RawTensorEntry {
    pub name: [u8; MAX_NAME_BYTES],
    pub dtype: u32,
    pub ndim: u32,
    pub rows: u64,
    pub cols: u64,
    pub offset: u64,
    pub n_bytes: u64,
    pub crc32: u32,
    pub reserved: [u8; 20],
}

const _: () = assert!(std::mem::size_of::<RawHeader>() as u64 == HEADER_BYTES);
const _: () = assert!(std::mem::size_of::<RawTensorEntry>() as u64 == DIR_ENTRY_BYTES);
#[cfg(not(target_endian = "little"))]
compile_error!("gpt-fast reads little-endian model files in place: little-endian targets only");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama = 1,
    Gpt2 = 2,
}

impl Arch {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Llama),
            2 => Some(Self::Gpt2),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Gpt2 => "gpt2",
        }
    }

    /// GPT-2 has biases on its linear layers and norms; Llama has none.
    pub fn has_biases(self) -> bool {
        self == Self::Gpt2
    }

    /// Llama's feed-forward is gated (SwiGLU): `ffn_up` holds gate and up rows.
    pub fn gated_ffn(self) -> bool {
        self == Self::Llama
    }

    pub fn learned_positions(self) -> bool {
        self == Self::Gpt2
    }
}

/// What a Llama-family model changes in the shared decoder (Qwen2/3, Llama 3,
/// Mistral, Gemma 3, Phi-3): data, not code. `Variant::default()` is plain
/// Llama (and what GPT-2 must have); a zero number means "the usual value",
/// given by the accessors on [`HParams`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Variant {
    /// Biases on the Q, K and V projections (Qwen2): `blk.N.attn_qkv.bias`.
    pub qkv_bias: bool,
    /// RMSNorm of every query and key head before RoPE, one `(head_dim)`
    /// weight shared by the heads (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// RMSNorm of each sub-block's output before the residual add (Gemma 3).
    pub post_norms: bool,
    /// The gated feed-forward's gate is tanh-GELU (GeGLU, Gemma) instead of SiLU.
    pub gelu_gate: bool,
    /// `rope_freqs.weight` holds a divisor per RoPE frequency of the global
    /// (non-sliding) layers: Llama 3's and linear RoPE scaling.
    pub rope_freqs: bool,
    /// Leading dimensions of each head that RoPE rotates (partial rotary,
    /// Phi-3.5/4); 0: all of `head_dim`.
    pub rope_dim: u32,
    /// Positions a sliding-window layer attends to, its own included
    /// (Mistral, Gemma 3's local layers); 0: no sliding window.
    pub sliding_window: u32,
    /// Which layers slide, llama.cpp's rule: 0 every layer; `P` layer `i`
    /// iff `i % P < P - 1` (Gemma 3: 6, five local layers then a global one).
    pub swa_period: u32,
    /// RoPE base of the sliding layers; 0: `rope_theta`.
    pub rope_theta_swa: f32,
    /// Multiplier of `q·k` before the softmax; 0: `1/sqrt(head_dim)`
    /// (Gemma: `query_pre_attn_scalar^-1/2`).
    pub attn_scale: f32,
    /// Multiplier of the token embeddings; 0: 1 (Gemma: `sqrt(dim)`).
    pub embed_scale: f32,
}

/// Everything about the network's shape that the forward pass needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HParams {
    pub arch: Arch,
    pub n_layers: u32,
    pub dim: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub ffn_dim: u32,
    pub vocab_size: u32,
    pub max_seq_len: u32,
    pub rope_theta: f32,
    pub norm_eps: f32,
    pub tied_embeddings: bool,
    pub variant: Variant,
}

/// Upper bound on any single dimension: far above any real model, low enough
/// that products of a few dimensions cannot overflow u64.
pub const MAX_DIM: u32 = 1 << 24;

impl HParams {
    /// Checks the values are usable; the error says which one is not.
    pub fn validate(&self) -> Result<(), String> {
        let named = [
            ("n_layers", self.n_layers),
            ("dim", self.dim),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("ffn_dim", self.ffn_dim),
            ("vocab_size", self.vocab_size),
            ("max_seq_len", self.max_seq_len),
        ];
        for (name, v) in named {
            if v == 0 || v > MAX_DIM {
                return Err(format!("{name} = {v} is outside 1..={MAX_DIM}"));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(format!("n_heads = {} is not a multiple of n_kv_heads = {}", self.n_heads, self.n_kv_heads));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("head_dim = {} is odd", self.head_dim));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return Err(format!("norm_eps = {} is not a finite non-negative number", self.norm_eps));
        }
        if self.arch == Arch::Llama && !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!("rope_theta = {} must be positive", self.rope_theta));
        }
        if self.arch == Arch::Gpt2 && !self.tied_embeddings {
            return Err("GPT-2 models tie their embeddings".into());
        }
        let v = &self.variant;
        if self.arch == Arch::Gpt2 && *v != Variant::default() {
            return Err("GPT-2 models have none of the Llama-family variations".into());
        }
        if v.rope_dim > self.head_dim || !v.rope_dim.is_multiple_of(2) {
            return Err(format!("rope_dim = {} is odd or more than head_dim = {}", v.rope_dim, self.head_dim));
        }
        if v.sliding_window > MAX_DIM || v.swa_period > self.n_layers {
            return Err(format!("sliding_window = {} / swa_period = {} out of range", v.sliding_window, v.swa_period));
        }
        for (name, x) in
            [("rope_theta_swa", v.rope_theta_swa), ("attn_scale", v.attn_scale), ("embed_scale", v.embed_scale)]
        {
            if !(x.is_finite() && x >= 0.0) {
                return Err(format!("{name} = {x} is not a finite non-negative number"));
            }
        }
        Ok(())
    }

    /// Dimensions of a head that RoPE rotates.
    pub fn rope_dim(&self) -> u32 {
        match self.variant.rope_dim {
            0 => self.head_dim,
            d => d,
        }
    }

    /// Whether layer `layer` attends through a sliding window.
    pub fn is_sliding(&self, layer: usize) -> bool {
        let v = &self.variant;
        v.sliding_window > 0 && (v.swa_period == 0 || layer % v.swa_period as usize + 1 < v.swa_period as usize)
    }

    /// Whether any layer slides.
    pub fn has_sliding(&self) -> bool {
        (0..self.n_layers as usize).any(|l| self.is_sliding(l))
    }

    /// RoPE base of a layer.
    pub fn rope_theta_of(&self, sliding: bool) -> f32 {
        match self.variant.rope_theta_swa {
            t if sliding && t > 0.0 => t,
            _ => self.rope_theta,
        }
    }

    /// Multiplier of `q·k` before the softmax.
    pub fn attn_scale(&self) -> f32 {
        match self.variant.attn_scale {
            0.0 => 1.0 / (self.head_dim as f32).sqrt(),
            s => s,
        }
    }

    /// Multiplier of the token embeddings.
    pub fn embed_scale(&self) -> f32 {
        match self.variant.embed_scale {
            0.0 => 1.0,
            s => s,
        }
    }

    /// Header flags for this model's features.
    pub fn flags(&self) -> u32 {
        let v = &self.variant;
        [
            (self.tied_embeddings, FLAG_TIED_EMBEDDINGS),
            (v.qkv_bias, FLAG_QKV_BIAS),
            (v.qk_norm, FLAG_QK_NORM),
            (v.post_norms, FLAG_POST_NORMS),
            (v.gelu_gate, FLAG_GELU_GATE),
            (v.rope_freqs, FLAG_ROPE_FREQS),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |f, (_, bit)| f | bit)
    }

    pub fn q_dim(&self) -> u64 {
        u64::from(self.n_heads) * u64::from(self.head_dim)
    }

    pub fn kv_dim(&self) -> u64 {
        u64::from(self.n_kv_heads) * u64::from(self.head_dim)
    }
}

/// What kind of tensor an entry is, which fixes its dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorRole {
    /// A matmul weight (or the embedding): stored in the file's weight dtype.
    Matmul,
    /// Norm weights, biases, learned positions: always f32.
    Small,
}

/// One tensor the hyper-parameters call for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub role: TensorRole,
    pub ndim: u32,
    pub rows: u64,
    pub cols: u64,
}

impl TensorSpec {
    fn matrix(name: String, rows: u64, cols: u64) -> Self {
        Self { name, role: TensorRole::Matmul, ndim: 2, rows, cols }
    }

    fn vector(name: String, len: u64) -> Self {
        Self { name, role: TensorRole::Small, ndim: 1, rows: len, cols: 1 }
    }

    pub fn dtype(&self, weight_dtype: DType) -> DType {
        match self.role {
            TensorRole::Matmul => weight_dtype,
            TensorRole::Small => DType::F32,
        }
    }

    pub fn n_elements(&self) -> u64 {
        self.rows * self.cols
    }
}

/// How many tensors [`expected_tensors`] lists, computed without building the
/// list: readers compare it with what a file holds before building a list
/// whose length a hostile header could make huge.
pub fn expected_tensor_count(h: &HParams) -> u64 {
    let bias = u64::from(h.arch.has_biases());
    // norm (+bias) x2, four linears (+bias each).
    let v = &h.variant;
    let per_layer = 2 * (1 + bias)
        + 4 * (1 + bias)
        + u64::from(v.qkv_bias)
        + 2 * u64::from(v.qk_norm)
        + 2 * u64::from(v.post_norms);
    let fixed = 1
        + u64::from(v.rope_freqs)
        + u64::from(h.arch.learned_positions())
        + (1 + bias)
        + u64::from(!h.tied_embeddings);
    u64::from(h.n_layers) * per_layer + fixed
}

/// Elements (f32 values before encoding) of all of [`expected_tensors`],
/// with checked arithmetic; `None` on overflow.
pub fn expected_elements(h: &HParams) -> Option<u64> {
    let dim = u64::from(h.dim);
    let ffn = u64::from(h.ffn_dim);
    let vocab = u64::from(h.vocab_size);
    let qkv_rows = h.q_dim().checked_add(h.kv_dim().checked_mul(2)?)?;
    let up_rows = if h.arch.gated_ffn() { ffn.checked_mul(2)? } else { ffn };
    let bias = h.arch.has_biases();
    let mut per_layer = qkv_rows.checked_mul(dim)?;
    per_layer = per_layer.checked_add(dim.checked_mul(h.q_dim())?)?;
    per_layer = per_layer.checked_add(up_rows.checked_mul(dim)?)?;
    per_layer = per_layer.checked_add(dim.checked_mul(ffn)?)?;
    per_layer = per_layer.checked_add(dim.checked_mul(if bias { 4 } else { 2 })?)?;
    if bias {
        per_layer = per_layer.checked_add(qkv_rows + dim + ffn + dim)?;
    }
    let v = &h.variant;
    if v.qkv_bias {
        per_layer = per_layer.checked_add(qkv_rows)?;
    }
    if v.qk_norm {
        per_layer = per_layer.checked_add(2 * u64::from(h.head_dim))?;
    }
    if v.post_norms {
        per_layer = per_layer.checked_add(2 * dim)?;
    }
    let mut total = u64::from(h.n_layers).checked_mul(per_layer)?;
    let embeddings = if h.tied_embeddings { 1 } else { 2 };
    total = total.checked_add(vocab.checked_mul(dim)?.checked_mul(embeddings)?)?;
    total = total.checked_add(dim * if bias { 2 } else { 1 })?;
    if h.arch.learned_positions() {
        total = total.checked_add(u64::from(h.max_seq_len).checked_mul(dim)?)?;
    }
    if v.rope_freqs {
        total = total.checked_add(u64::from(h.rope_dim() / 2))?;
    }
    Some(total)
}

/// The complete, ordered list of tensors a model with these hyper-parameters
/// has. The single source of truth for the writer, the loader and the converter.
pub fn expected_tensors(h: &HParams) -> Vec<TensorSpec> {
    let dim = u64::from(h.dim);
    let ffn = u64::from(h.ffn_dim);
    let vocab = u64::from(h.vocab_size);
    let qkv_rows = h.q_dim() + 2 * h.kv_dim();
    let up_rows = if h.arch.gated_ffn() { 2 * ffn } else { ffn };
    let bias = h.arch.has_biases();
    let v = &h.variant;
    let head_dim = u64::from(h.head_dim);

    let mut out = vec![TensorSpec::matrix("token_embd.weight".into(), vocab, dim)];
    if v.rope_freqs {
        out.push(TensorSpec::vector("rope_freqs.weight".into(), u64::from(h.rope_dim() / 2)));
    }
    if h.arch.learned_positions() {
        let mut pos = TensorSpec::matrix("position_embd.weight".into(), u64::from(h.max_seq_len), dim);
        pos.role = TensorRole::Small;
        out.push(pos);
    }
    let norm = |out: &mut Vec<TensorSpec>, prefix: &str| {
        out.push(TensorSpec::vector(format!("{prefix}.weight"), dim));
        if bias {
            out.push(TensorSpec::vector(format!("{prefix}.bias"), dim));
        }
    };
    let linear = |out: &mut Vec<TensorSpec>, prefix: &str, rows: u64, cols: u64, bias_len: u64| {
        out.push(TensorSpec::matrix(format!("{prefix}.weight"), rows, cols));
        if bias {
            out.push(TensorSpec::vector(format!("{prefix}.bias"), bias_len));
        }
    };
    for layer in 0..h.n_layers {
        let p = format!("blk.{layer}");
        norm(&mut out, &format!("{p}.attn_norm"));
        linear(&mut out, &format!("{p}.attn_qkv"), qkv_rows, dim, qkv_rows);
        if v.qkv_bias {
            out.push(TensorSpec::vector(format!("{p}.attn_qkv.bias"), qkv_rows));
        }
        if v.qk_norm {
            out.push(TensorSpec::vector(format!("{p}.attn_q_norm.weight"), head_dim));
            out.push(TensorSpec::vector(format!("{p}.attn_k_norm.weight"), head_dim));
        }
        linear(&mut out, &format!("{p}.attn_output"), dim, h.q_dim(), dim);
        if v.post_norms {
            out.push(TensorSpec::vector(format!("{p}.post_attention_norm.weight"), dim));
        }
        norm(&mut out, &format!("{p}.ffn_norm"));
        linear(&mut out, &format!("{p}.ffn_up"), up_rows, dim, ffn);
        linear(&mut out, &format!("{p}.ffn_down"), dim, ffn, dim);
        if v.post_norms {
            out.push(TensorSpec::vector(format!("{p}.post_ffw_norm.weight"), dim));
        }
    }
    norm(&mut out, "output_norm");
    if !h.tied_embeddings {
        out.push(TensorSpec::matrix("output.weight".into(), vocab, dim));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_the_tensor_list() {
        for name in ["test-llama", "test-gpt2", "smollm2-135m", "gpt2-124m"] {
            let mut h = crate::synthetic::config(name).unwrap();
            for tied in [true, false] {
                if h.arch == Arch::Gpt2 && !tied {
                    continue;
                }
                h.tied_embeddings = tied;
                for variant in 0..16u32 {
                    h.variant.qkv_bias = variant & 1 != 0;
                    h.variant.qk_norm = variant & 2 != 0;
                    h.variant.post_norms = variant & 4 != 0;
                    h.variant.rope_freqs = variant & 8 != 0;
                    let list = expected_tensors(&h);
                    let what = format!("{name} tied={tied} variant={variant:#b}");
                    assert_eq!(expected_tensor_count(&h), list.len() as u64, "{what}");
                    let elements: u64 = list.iter().map(TensorSpec::n_elements).sum();
                    assert_eq!(expected_elements(&h), Some(elements), "{what}");
                }
            }
        }
    }
}
