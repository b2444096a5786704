//! A session's saved state: its tokens and their keys and values, in a file
//! checked on load as model files are (magic, version, which model, length,
//! checksum), so a stale or damaged file is refused with what is wrong.
//!
//! Layout, little-endian:
//! ```text
//! magic "GPTFSESS" | version u32 | model header CRC-32 u32 | run dtype u8 |
//! kv type u8 | sinks u8 | reserved u8 | layers u32 | kv heads u32 |
//! head dim u32 | tokens u64 | tokens (u32 each) |
//! KvCache::save_positions bytes | CRC-32 of everything before u32
//! ```

use crate::model::kv_cache::KvType;
use crate::model::{KvCache, Model};

const MAGIC: &[u8; 8] = b"GPTFSESS";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 4 + 4 + 4 * 3 + 8;

/// What is wrong with a session state file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The file could not be read.
    #[error("reading the session state: {0}")]
    Read(String),
    /// The file could not be written.
    #[error("writing the session state: {0}")]
    Write(String),
    /// The file is not a session state.
    #[error("not a gpt-fast session state (bad magic)")]
    BadMagic,
    /// A version this build does not read.
    #[error("session state version {found}; this build reads version {VERSION}")]
    Version {
        /// The file's version.
        found: u32,
    },
    /// The state belongs to another model file, or the same file run at
    /// another precision.
    #[error("saved from another model ({saved}), not this one ({this})")]
    WrongModel {
        /// The saved model's identity.
        saved: String,
        /// This session's model's identity.
        this: String,
    },
    /// The cache's element type or attention sinks differ.
    #[error("saved with a {saved} KV cache, this session's is {this}")]
    WrongCache {
        /// What the state was saved with.
        saved: String,
        /// What this session has.
        this: String,
    },
    /// More tokens than the session's context holds.
    #[error("holds {tokens} tokens, more than this session's context of {context}")]
    TooLong {
        /// Tokens in the file.
        tokens: u64,
        /// This session's context.
        context: usize,
    },
    /// The file is shorter or longer than its header says.
    #[error("{actual} bytes, but its header describes {expected} (truncated or damaged)")]
    Length {
        /// Bytes the header implies.
        expected: u64,
        /// Bytes in the file.
        actual: u64,
    },
    /// The contents do not match their checksum.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is damaged")]
    Checksum {
        /// The stored CRC-32.
        stored: u32,
        /// The CRC-32 of the contents.
        computed: u32,
    },
    /// A token id outside the model's vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    BadToken {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// A session whose context has shifted lost its first tokens: there is
    /// no conversation from the start to save.
    #[error("the context has shifted (its first tokens are gone): nothing consistent to save")]
    Shifted,
}

/// What identifies the model a state belongs to: the file's header CRC (it
/// covers every tensor's CRC) and the precision the weights run at, which
/// changes every key and value.
struct Identity {
    header_crc32: u32,
    dtype: u8,
    n_layers: u32,
    n_kv_heads: u32,
    head_dim: u32,
}

impl Identity {
    fn of(model: &Model) -> Self {
        let h = model.hparams();
        Self {
            header_crc32: model.file().header_crc32(),
            dtype: model.dtype() as u8,
            n_layers: h.n_layers,
            n_kv_heads: h.n_kv_heads,
            head_dim: h.head_dim,
        }
    }

    fn describe(&self) -> String {
        format!(
            "model CRC {:#010x}, weights type {}, {} layers × {} KV heads × {}",
            self.header_crc32, self.dtype, self.n_layers, self.n_kv_heads, self.head_dim
        )
    }

    fn same(&self, other: &Self) -> bool {
        (self.header_crc32, self.dtype, self.n_layers, self.n_kv_heads, self.head_dim)
            == (other.header_crc32, other.dtype, other.n_layers, other.n_kv_heads, other.head_dim)
    }
}

fn kv_code(kv_type: KvType) -> u8 {
    match kv_type {
        KvType::F16 => 0,
        KvType::F32 => 1,
    }
}

fn describe_cache(kv: u8, sinks: u8) -> String {
    let name = match kv {
        0 => "f16",
        1 => "f32",
        _ => "unknown-type",
    };
    format!("{name} ({sinks} attention sinks)")
}

/// The whole file for `tokens` (whose keys and values are the cache's
/// positions `0..tokens.len()`).
pub(super) fn encode(model: &Model, cache: &KvCache, tokens: &[u32]) -> Vec<u8> {
    let id = Identity::of(model);
    let n = tokens.len();
    let mut out = Vec::with_capacity(HEADER_BYTES + 4 * n + cache.positions_bytes(n) + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&id.header_crc32.to_le_bytes());
    out.extend_from_slice(&[id.dtype, kv_code(cache.kv_type()), cache.sinks() as u8, 0]);
    for v in [id.n_layers, id.n_kv_heads, id.head_dim] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(n as u64).to_le_bytes());
    tokens.iter().for_each(|t| out.extend_from_slice(&t.to_le_bytes()));
    cache.save_positions(n, &mut out);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A checked state, borrowing the file's bytes.
pub(super) struct Saved<'a> {
    pub tokens: Vec<u32>,
    /// [`KvCache::load_positions`]'s input for `tokens.len()` positions.
    pub kv: &'a [u8],
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Checks `bytes` against the session it is to be loaded into.
pub(super) fn decode<'a>(model: &Model, cache: &KvCache, bytes: &'a [u8]) -> Result<Saved<'a>, StateError> {
    let actual = bytes.len() as u64;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(StateError::BadMagic);
    }
    if bytes.len() < HEADER_BYTES {
        return Err(StateError::Length { expected: HEADER_BYTES as u64, actual });
    }
    let version = u32_at(bytes, 8);
    if version != VERSION {
        return Err(StateError::Version { found: version });
    }
    let saved = Identity {
        header_crc32: u32_at(bytes, 12),
        dtype: bytes[16],
        n_layers: u32_at(bytes, 20),
        n_kv_heads: u32_at(bytes, 24),
        head_dim: u32_at(bytes, 28),
    };
    let this = Identity::of(model);
    if !saved.same(&this) {
        return Err(StateError::WrongModel { saved: saved.describe(), this: this.describe() });
    }
    let (kv, sinks) = (bytes[17], bytes[18]);
    if (kv, sinks as usize) != (kv_code(cache.kv_type()), cache.sinks()) {
        return Err(StateError::WrongCache {
            saved: describe_cache(kv, sinks),
            this: describe_cache(kv_code(cache.kv_type()), cache.sinks() as u8),
        });
    }
    let n_tokens = u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes"));
    if n_tokens > cache.capacity() as u64 {
        return Err(StateError::TooLong { tokens: n_tokens, context: cache.capacity() });
    }
    let n = n_tokens as usize;
    let kv_start = HEADER_BYTES + 4 * n;
    let expected = kv_start + cache.positions_bytes(n) + 4;
    if bytes.len() != expected {
        return Err(StateError::Length { expected: expected as u64, actual });
    }
    let stored = u32_at(bytes, expected - 4);
    let computed = crc32fast::hash(&bytes[..expected - 4]);
    if stored != computed {
        return Err(StateError::Checksum { stored, computed });
    }
    let vocab = model.hparams().vocab_size as usize;
    let tokens: Vec<u32> = (0..n).map(|i| u32_at(bytes, HEADER_BYTES + 4 * i)).collect();
    if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
        return Err(StateError::BadToken { id, vocab });
    }
    Ok(Saved { tokens, kv: &bytes[kv_start..expected - 4] })
}
