//! Models with random weights and the real shapes of named configurations, for
//! measuring speed and scaling without downloading weights, and tiny ones for
//! tests. Their text output is meaningless.

use crate::format::{Arch, DType, HParams, ModelWriter, WriteError};
use crate::tokenizer::{PreTokenizer, TokenType, TokenizerModel, TokenizerSpec};

/// Named configurations: `(name, hyper-parameters)`.
pub fn configs() -> Vec<(&'static str, HParams)> {
    let llama = |n_layers, dim, n_heads, n_kv_heads, ffn_dim, vocab_size, max_seq_len, rope_theta, tied| HParams {
        arch: Arch::Llama,
        n_layers,
        dim,
        n_heads,
        n_kv_heads,
        head_dim: dim / n_heads,
        ffn_dim,
        vocab_size,
        max_seq_len,
        rope_theta,
        norm_eps: 1e-5,
        tied_embeddings: tied,
        variant: Default::default(),
    };
    let gpt2 = |n_layers, dim, n_heads, vocab_size| HParams {
        arch: Arch::Gpt2,
        n_layers,
        dim,
        n_heads,
        n_kv_heads: n_heads,
        head_dim: dim / n_heads,
        ffn_dim: 4 * dim,
        vocab_size,
        max_seq_len: 1024,
        rope_theta: 0.0,
        norm_eps: 1e-5,
        tied_embeddings: true,
        variant: Default::default(),
    };
    vec![
        ("smollm2-135m", llama(30, 576, 9, 3, 1536, 49152, 8192, 100_000.0, true)),
        ("tinyllama-1.1b", llama(22, 2048, 32, 4, 5632, 32000, 2048, 10_000.0, false)),
        ("llama2-7b", llama(32, 4096, 32, 32, 11008, 32000, 4096, 10_000.0, false)),
        ("gpt2-124m", gpt2(12, 768, 12, 50257)),
        ("gpt2-xl", gpt2(48, 1600, 25, 50257)),
        // Small enough for unit tests: every feature of the real ones
        // (grouped-query attention, a partial last q8 tile, untied head).
        ("test-llama", llama(2, 64, 4, 2, 96, 300, 128, 10_000.0, false)),
        ("test-gpt2", gpt2(2, 64, 4, 300)),
    ]
}

pub fn config(name: &str) -> Option<HParams> {
    configs().into_iter().find(|(n, _)| *n == name).map(|(_, h)| h)
}

/// A byte-level BPE vocabulary of exactly `vocab_size` tokens: the 256 bytes,
/// three ChatML-style control tokens, then merges of lowercase letters
/// ("aa", "ab", …, "aaa", …) until the vocabulary is full.
pub fn tokenizer(vocab_size: u32) -> TokenizerSpec {
    let vocab_size = vocab_size as usize;
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut token_types = vec![TokenType::Normal; 256];
    for special in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] {
        tokens.push(special.as_bytes().to_vec());
        token_types.push(TokenType::Control);
    }
    let eos = 256;
    let mut merges = Vec::new();
    // Each generation of merges appends one letter to every token of the previous one.
    let mut prev: Vec<u32> = (b'a'..=b'z').map(u32::from).collect();
    'fill: while tokens.len() < vocab_size {
        let mut next = Vec::new();
        for &left in &prev {
            for letter in b'a'..=b'z' {
                if tokens.len() >= vocab_size {
                    break 'fill;
                }
                let id = tokens.len() as u32;
                let mut bytes = tokens[left as usize].clone();
                bytes.push(letter);
                tokens.push(bytes);
                token_types.push(TokenType::Normal);
                merges.push([left, u32::from(letter), id]);
                next.push(id);
            }
        }
        prev = next;
    }
    tokens.truncate(vocab_size);
    token_types.truncate(vocab_size);
    TokenizerSpec {
        model: TokenizerModel::ByteLevelBpe,
        pre: PreTokenizer::Gpt2,
        tokens,
        token_types,
        merges,
        scores: Vec::new(),
        bos_id: None,
        eos_id: Some(eos),
        unk_id: None,
        pad_id: None,
        add_bos: false,
        add_eos: false,
        add_space_prefix: false,
        ignore_merges: false,
        chat_template: String::new(),
    }
}

/// xorshift64*: a fixed, fast generator so a seed always gives the same model.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (v >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Fills a tensor with deterministic values shaped like a trained model's:
/// norm weights near 1, biases near 0, matrices uniform with std ≈ 0.02 × `scale`.
pub fn fill_tensor(name: &str, seed: u64, out: &mut [f32]) {
    let mut h = seed ^ 0x9E37_79B9_7F4A_7C15;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
    }
    let mut rng = Rng(h | 1);
    let is_norm = name.contains("norm.weight");
    let is_bias = name.ends_with(".bias");
    // Uniform in [-a, a] has std a/sqrt(3).
    let amp = if is_bias { 0.01 } else { 0.02 * 3f32.sqrt() };
    for v in out.iter_mut() {
        let u = rng.next_f32() * 2.0 - 1.0;
        *v = if is_norm { 1.0 + 0.1 * u } else { amp * u };
    }
}

/// Writes a synthetic model to `path`; `on_tensor` is told after each tensor
/// (for a progress bar).
pub fn write(
    path: &std::path::Path,
    hparams: &HParams,
    dtype: DType,
    seed: u64,
    on_tensor: impl FnMut(usize, usize),
) -> Result<(), WriteError> {
    write_typed(path, hparams, dtype, |_| dtype, seed, on_tensor)
}

/// As [`write`], each matmul tensor as `matmul_dtype` gives it (`--quant
/// q4`'s mix); `weight_dtype` is the header's.
pub fn write_typed(
    path: &std::path::Path,
    hparams: &HParams,
    weight_dtype: DType,
    matmul_dtype: impl Fn(&crate::format::TensorSpec) -> DType,
    seed: u64,
    mut on_tensor: impl FnMut(usize, usize),
) -> Result<(), WriteError> {
    let tokenizer = tokenizer(hparams.vocab_size);
    let mut writer = ModelWriter::create_typed(path, hparams, weight_dtype, matmul_dtype, &tokenizer)?;
    let specs = writer.tensors().to_vec();
    let mut values = Vec::new();
    let mut bytes = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        values.resize(spec.n_elements() as usize, 0.0);
        fill_tensor(&spec.name, seed, &mut values);
        writer.entry_dtype(i).encode(spec.rows as usize, spec.cols as usize, &values, &mut bytes);
        writer.write_tensor(&spec.name, &bytes)?;
        on_tensor(i + 1, specs.len());
    }
    writer.finish()
}
