//! Opens a model file: maps it and validates everything before any tensor is
//! read, so that later code can trust every offset, length and shape.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::spec::{
    expected_tensor_count, expected_tensors, Arch, DType, HParams, RawHeader, RawTensorEntry, TensorRole, Variant,
    DATA_ALIGN, DIR_ENTRY_BYTES, FLAG_GELU_GATE, FLAG_POST_NORMS, FLAG_QKV_BIAS, FLAG_QK_NORM, FLAG_ROPE_FREQS,
    FLAG_TIED_EMBEDDINGS, HEADER_BYTES, HEADER_CRC_START, KNOWN_FLAGS, MAGIC, MAX_NAME_BYTES, MIN_VERSION,
    PER_TENSOR_DTYPES, Q5_FIFTH_BITS_BY_TILE, TENSOR_ALIGN, VERSION,
};
use super::tokenizer_section;
use crate::mmap::MappedFile;
use crate::tokenizer::TokenizerSpec;

/// Why a model file was refused. Displayed as one line naming the file.
#[derive(Debug)]
pub struct LoadError {
    pub path: PathBuf,
    pub kind: LoadErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadErrorKind {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a gpt-fast model file (bad magic {0:02x?})")]
    BadMagic([u8; 8]),
    #[error("file is {actual} bytes, too short for a gpt-fast header")]
    TooShort { actual: u64 },
    #[error("unsupported format version {0} (this build reads versions {MIN_VERSION} to {VERSION})")]
    Version(u32),
    #[error("truncated or extended: the header says {expected} bytes, the file has {actual}")]
    Length { expected: u64, actual: u64 },
    #[error("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is corrupt")]
    HeaderChecksum { stored: u32, computed: u32 },
    #[error("bad header: {0}")]
    Header(String),
    #[error("bad hyper-parameters: {0}")]
    HParams(String),
    #[error("tensor {index} ('{}'): {reason}", crate::escape::untrusted(name))]
    Tensor { index: usize, name: String, reason: String },
    #[error("tensor '{0}' is missing")]
    MissingTensor(String),
    #[error("bad tokenizer: {0}")]
    Tokenizer(String),
    #[error(
        "tensor '{}' checksum mismatch (stored {stored:#010x}, computed {computed:#010x})",
        crate::escape::untrusted(name)
    )]
    TensorChecksum { name: String, stored: u32, computed: u32 },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.kind)
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.kind)
    }
}

/// A validated tensor directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub ndim: u32,
    pub rows: u64,
    pub cols: u64,
    pub offset: u64,
    pub n_bytes: u64,
    pub crc32: u32,
}

/// A mapped, validated model file.
pub struct ModelFile {
    path: PathBuf,
    map: MappedFile,
    hparams: HParams,
    weight_dtype: DType,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    tokenizer: TokenizerSpec,
    header_crc32: u32,
}

impl ModelFile {
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        let fail = |kind| LoadError { path: path.to_path_buf(), kind };
        let map = MappedFile::open(path).map_err(|e| fail(LoadErrorKind::Io(e)))?;
        let parsed = parse(&map).map_err(fail)?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            hparams: parsed.hparams,
            weight_dtype: parsed.weight_dtype,
            by_name: parsed.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect(),
            tensors: parsed.tensors,
            tokenizer: parsed.tokenizer,
            header_crc32: parsed.header_crc32,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn hparams(&self) -> &HParams {
        &self.hparams
    }

    /// The dtype of the matmul weights: the file's own type.
    pub fn weight_dtype(&self) -> DType {
        self.weight_dtype
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor's bytes, in place in the mapping (validated at open).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.map[info.offset as usize..(info.offset + info.n_bytes) as usize]
    }

    pub fn tokenizer(&self) -> &TokenizerSpec {
        &self.tokenizer
    }

    /// The CRC-32 of the header and tensor directory (which holds every
    /// tensor's own CRC-32): an identity of the file's contents, for state
    /// saved against it (a session's KV cache).
    pub fn header_crc32(&self) -> u32 {
        self.header_crc32
    }

    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Checks every tensor's CRC-32 (reads the whole file).
    pub fn verify(&self) -> Result<(), LoadError> {
        for t in &self.tensors {
            let computed = crc32fast::hash(self.tensor_bytes(t));
            if computed != t.crc32 {
                return Err(LoadError {
                    path: self.path.clone(),
                    kind: LoadErrorKind::TensorChecksum { name: t.name.clone(), stored: t.crc32, computed },
                });
            }
        }
        Ok(())
    }
}

struct Parsed {
    hparams: HParams,
    weight_dtype: DType,
    tensors: Vec<TensorInfo>,
    tokenizer: TokenizerSpec,
    header_crc32: u32,
}

/// `[offset, offset + len)` if it lies inside a buffer of `total` bytes.
fn range_in(offset: u64, len: u64, total: u64) -> Option<std::ops::Range<usize>> {
    let end = offset.checked_add(len)?;
    (end <= total).then_some(offset as usize..end as usize)
}

fn parse(bytes: &[u8]) -> Result<Parsed, LoadErrorKind> {
    let total = bytes.len() as u64;
    if total < HEADER_BYTES {
        // Check the magic on what there is, so a foreign short file says so.
        if bytes.len() >= 8 && bytes[..8] != MAGIC {
            return Err(LoadErrorKind::BadMagic(bytes[..8].try_into().expect("8 bytes")));
        }
        return Err(LoadErrorKind::TooShort { actual: total });
    }
    let header: RawHeader = bytemuck::pod_read_unaligned(&bytes[..HEADER_BYTES as usize]);
    if header.magic != MAGIC {
        return Err(LoadErrorKind::BadMagic(header.magic));
    }
    if !(MIN_VERSION..=VERSION).contains(&header.version) {
        return Err(LoadErrorKind::Version(header.version));
    }
    if header.file_len != total {
        return Err(LoadErrorKind::Length { expected: header.file_len, actual: total });
    }
    let bad = |s: String| LoadErrorKind::Header(s);
    if !header.data_offset.is_multiple_of(DATA_ALIGN) || header.data_offset < HEADER_BYTES {
        return Err(bad(format!("data offset {} is not a multiple of {DATA_ALIGN}", header.data_offset)));
    }
    if header.data_offset > total {
        return Err(bad(format!("data offset {} is past the end of the file", header.data_offset)));
    }
    let meta = &bytes[..header.data_offset as usize];
    let computed = crc32fast::hash(&meta[HEADER_CRC_START..]);
    if computed != header.header_crc32 {
        return Err(LoadErrorKind::HeaderChecksum { stored: header.header_crc32, computed });
    }
    // Version 1 reserved the bytes that version 2 gives the variant's numbers.
    let v1_reserved = &bytemuck::bytes_of(&header)[116..];
    let reserved: &[u8] = if header.version == 1 { v1_reserved } else { &header.reserved };
    if reserved.iter().any(|&b| b != 0) {
        return Err(bad("reserved header bytes are not zero".into()));
    }
    let meta_len = header.data_offset;
    let dir_len = header
        .n_tensors
        .checked_mul(DIR_ENTRY_BYTES)
        .ok_or_else(|| bad(format!("{} tensors overflow the directory size", header.n_tensors)))?;
    let dir_range = range_in(header.dir_offset, dir_len, meta_len)
        .filter(|r| r.start >= HEADER_BYTES as usize)
        .ok_or_else(|| {
            bad(format!(
                "directory of {} tensors at {} lies outside the header region",
                header.n_tensors, header.dir_offset
            ))
        })?;
    let tok_range = range_in(header.tok_offset, header.tok_len, meta_len)
        .filter(|r| r.start >= HEADER_BYTES as usize && r.start % 4 == 0)
        .ok_or_else(|| {
            bad(format!(
                "tokenizer section at {} (+{}) lies outside the header region",
                header.tok_offset, header.tok_len
            ))
        })?;
    if dir_range.start < tok_range.end && tok_range.start < dir_range.end {
        return Err(bad("the directory and the tokenizer section overlap".into()));
    }

    let arch = Arch::from_u32(header.arch)
        .ok_or_else(|| LoadErrorKind::HParams(format!("unknown architecture {}", header.arch)))?;
    let weight_dtype = DType::from_u32(header.weight_dtype)
        .ok_or_else(|| LoadErrorKind::HParams(format!("unknown weight dtype {}", header.weight_dtype)))?;
    let known = if header.version == 1 { FLAG_TIED_EMBEDDINGS } else { KNOWN_FLAGS };
    if header.flags & !known != 0 {
        return Err(bad(format!("unknown flags {:#x}", header.flags)));
    }
    let hparams = HParams {
        arch,
        n_layers: header.n_layers,
        dim: header.dim,
        n_heads: header.n_heads,
        n_kv_heads: header.n_kv_heads,
        head_dim: header.head_dim,
        ffn_dim: header.ffn_dim,
        vocab_size: header.vocab_size,
        max_seq_len: header.max_seq_len,
        rope_theta: header.rope_theta,
        norm_eps: header.norm_eps,
        tied_embeddings: header.flags & FLAG_TIED_EMBEDDINGS != 0,
        variant: Variant {
            qkv_bias: header.flags & FLAG_QKV_BIAS != 0,
            qk_norm: header.flags & FLAG_QK_NORM != 0,
            post_norms: header.flags & FLAG_POST_NORMS != 0,
            gelu_gate: header.flags & FLAG_GELU_GATE != 0,
            rope_freqs: header.flags & FLAG_ROPE_FREQS != 0,
            rope_dim: header.rope_dim,
            sliding_window: header.sliding_window,
            swa_period: header.swa_period,
            rope_theta_swa: header.rope_theta_swa,
            attn_scale: header.attn_scale,
            embed_scale: header.embed_scale,
        },
    };
    hparams.validate().map_err(LoadErrorKind::HParams)?;

    let tensors = parse_directory(&bytes[dir_range], &header, total)?;
    check_against_hparams(&tensors, &hparams, weight_dtype, header.version)?;

    let tokenizer = tokenizer_section::decode(&bytes[tok_range]).map_err(LoadErrorKind::Tokenizer)?;
    if tokenizer.tokens.len() != hparams.vocab_size as usize {
        return Err(LoadErrorKind::Tokenizer(format!(
            "{} tokens but vocab_size is {}",
            tokenizer.tokens.len(),
            hparams.vocab_size
        )));
    }
    Ok(Parsed { hparams, weight_dtype, tensors, tokenizer, header_crc32: header.header_crc32 })
}

fn parse_directory(dir: &[u8], header: &RawHeader, total: u64) -> Result<Vec<TensorInfo>, LoadErrorKind> {
    let mut tensors = Vec::with_capacity(dir.len() / DIR_ENTRY_BYTES as usize);
    let mut prev_end = header.data_offset;
    for (index, raw) in dir.chunks_exact(DIR_ENTRY_BYTES as usize).enumerate() {
        let e: RawTensorEntry = bytemuck::pod_read_unaligned(raw);
        let name_len = e.name.iter().position(|&b| b == 0).unwrap_or(MAX_NAME_BYTES);
        let name = std::str::from_utf8(&e.name[..name_len]).map_err(|_| LoadErrorKind::Tensor {
            index,
            name: String::from_utf8_lossy(&e.name[..name_len]).into_owned(),
            reason: "name is not UTF-8".into(),
        })?;
        let fail = |reason: String| LoadErrorKind::Tensor { index, name: name.to_string(), reason };
        if name.is_empty() || e.name[name_len..].iter().any(|&b| b != 0) {
            return Err(fail("name is empty or not zero-padded".into()));
        }
        if e.reserved.iter().any(|&b| b != 0) {
            return Err(fail("reserved bytes are not zero".into()));
        }
        let dtype = DType::from_u32(e.dtype).ok_or_else(|| fail(format!("unknown dtype {}", e.dtype)))?;
        if !(e.ndim == 1 && e.cols == 1 || e.ndim == 2) {
            return Err(fail(format!("bad shape: ndim {} with [{}, {}]", e.ndim, e.rows, e.cols)));
        }
        let expected_bytes = dtype.n_bytes(e.rows, e.cols).ok_or_else(|| {
            fail(format!("shape [{}, {}] overflows or does not fit {}", e.rows, e.cols, dtype.name()))
        })?;
        if e.n_bytes != expected_bytes {
            return Err(fail(format!("{} bytes recorded, {expected_bytes} expected for its shape", e.n_bytes)));
        }
        if !e.offset.is_multiple_of(TENSOR_ALIGN) {
            return Err(fail(format!("offset {} is not {TENSOR_ALIGN}-byte aligned", e.offset)));
        }
        if e.offset < prev_end {
            return Err(fail(format!(
                "offset {} overlaps the previous tensor or the header (ends at {prev_end})",
                e.offset
            )));
        }
        let end = range_in(e.offset, e.n_bytes, total)
            .ok_or_else(|| {
                fail(format!("data [{}, +{}) runs past the end of the file ({total} bytes)", e.offset, e.n_bytes))
            })?
            .end as u64;
        prev_end = end;
        tensors.push(TensorInfo {
            name: name.to_string(),
            dtype,
            ndim: e.ndim,
            rows: e.rows,
            cols: e.cols,
            offset: e.offset,
            n_bytes: e.n_bytes,
            crc32: e.crc32,
        });
    }
    Ok(tensors)
}

fn check_against_hparams(
    tensors: &[TensorInfo],
    h: &HParams,
    weight_dtype: DType,
    version: u32,
) -> Result<(), LoadErrorKind> {
    // Counted first: the directory fits in the file, so this bounds n_layers
    // by the file's size before the expected list is built from it. A small
    // difference is left to the checks below, which name the tensor.
    let expected_count = expected_tensor_count(h);
    if expected_count > 2 * tensors.len() as u64 + 64 {
        return Err(LoadErrorKind::HParams(format!(
            "{} layers call for {expected_count} tensors, the directory has {}",
            h.n_layers,
            tensors.len()
        )));
    }
    let mut by_name: HashMap<&str, (usize, &TensorInfo)> = HashMap::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        if by_name.insert(&t.name, (i, t)).is_some() {
            return Err(LoadErrorKind::Tensor { index: i, name: t.name.clone(), reason: "duplicate name".into() });
        }
    }
    let expected = expected_tensors(h);
    for spec in &expected {
        let (index, t) =
            by_name.get(spec.name.as_str()).ok_or_else(|| LoadErrorKind::MissingTensor(spec.name.clone()))?;
        let fail = |reason: String| LoadErrorKind::Tensor { index: *index, name: t.name.clone(), reason };
        if (t.ndim, t.rows, t.cols) != (spec.ndim, spec.rows, spec.cols) {
            return Err(fail(format!(
                "shape [{}, {}] (ndim {}), the hyper-parameters give [{}, {}] (ndim {})",
                t.rows, t.cols, t.ndim, spec.rows, spec.cols, spec.ndim
            )));
        }
        let dtype = spec.dtype(weight_dtype);
        // From version 3 a matmul tensor's own entry says its type (its size
        // was checked against that type above); vectors are f32 in every version.
        let own_type = version >= PER_TENSOR_DTYPES && spec.role == TensorRole::Matmul;
        if t.dtype != dtype && !own_type {
            return Err(fail(format!("dtype {}, expected {}", t.dtype.name(), dtype.name())));
        }
        if matches!(t.dtype, DType::Q5_0 | DType::Q5_1) && version < Q5_FIFTH_BITS_BY_TILE {
            return Err(fail(format!(
                "{} in a version {version} file has its fifth bits in the old order (convert the model again)",
                t.dtype.name()
            )));
        }
    }
    if tensors.len() != expected.len() {
        let known: std::collections::HashSet<&str> = expected.iter().map(|s| s.name.as_str()).collect();
        let (index, extra) =
            tensors.iter().enumerate().find(|(_, t)| !known.contains(t.name.as_str())).expect("an unknown tensor");
        return Err(LoadErrorKind::Tensor {
            index,
            name: extra.name.clone(),
            reason: "not a tensor of this architecture".into(),
        });
    }
    Ok(())
}
