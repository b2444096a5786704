//! The model file's constants, on-disk records and the tensor list that the
//! hyper-parameters imply (docs/FORMAT.md is the prose form of this file).

use bytemuck::{Pod, Zeroable};

pub const MAGIC: [u8; 8] = *b"GPTFAST\0";
pub const VERSION: u32 = 1;
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
    pub reserved: [u8; 140],
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32 = 0,
    F16 = 1,
    Q8 = 2,
}

impl DType {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::F32),
            1 => Some(Self::F16),
            2 => Some(Self::Q8),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8 => "q8",
        }
    }

    /// Bytes of a `[rows, cols]` tensor of this type; `None` on overflow or
    /// when q8's `cols` is not a whole number of blocks.
    pub fn n_bytes(self, rows: u64, cols: u64) -> Option<u64> {
        let n = rows.checked_mul(cols)?;
        match self {
            Self::F32 => n.checked_mul(4),
            Self::F16 => n.checked_mul(2),
            Self::Q8 => {
                let layout =
                    gpt_fast_quant::q8::PackedQ8Layout::new(usize::try_from(rows).ok()?, usize::try_from(cols).ok()?)?;
                u64::try_from(layout.n_bytes()).ok()
            }
        }
    }

    /// Precision rank, for refusing to run a file at a higher precision than it holds.
    pub fn precision(self) -> u32 {
        match self {
            Self::Q8 => 8,
            Self::F16 => 16,
            Self::F32 => 32,
        }
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8" => Ok(Self::Q8),
            other => Err(format!("unknown weight type '{other}' (expected q8, f16 or f32)")),
        }
    }
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
        Ok(())
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
    let per_layer = 2 * (1 + bias) + 4 * (1 + bias);
    let fixed = 1 + u64::from(h.arch.learned_positions()) + (1 + bias) + u64::from(!h.tied_embeddings);
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
    let mut total = u64::from(h.n_layers).checked_mul(per_layer)?;
    let embeddings = if h.tied_embeddings { 1 } else { 2 };
    total = total.checked_add(vocab.checked_mul(dim)?.checked_mul(embeddings)?)?;
    total = total.checked_add(dim * if bias { 2 } else { 1 })?;
    if h.arch.learned_positions() {
        total = total.checked_add(u64::from(h.max_seq_len).checked_mul(dim)?)?;
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

    let mut out = vec![TensorSpec::matrix("token_embd.weight".into(), vocab, dim)];
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
        linear(&mut out, &format!("{p}.attn_output"), dim, h.q_dim(), dim);
        norm(&mut out, &format!("{p}.ffn_norm"));
        linear(&mut out, &format!("{p}.ffn_up"), up_rows, dim, ffn);
        linear(&mut out, &format!("{p}.ffn_down"), dim, ffn, dim);
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
                let list = expected_tensors(&h);
                assert_eq!(expected_tensor_count(&h), list.len() as u64, "{name} tied={tied}");
                let elements: u64 = list.iter().map(TensorSpec::n_elements).sum();
                assert_eq!(expected_elements(&h), Some(elements), "{name} tied={tied}");
            }
        }
    }
}
