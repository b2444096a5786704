//! Writes a model file: to a temporary file beside the target, renamed into
//! place only once every byte is written, so a failed conversion leaves nothing
//! half-written at the destination.

use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::spec::{
    expected_tensors, DType, HParams, RawHeader, RawTensorEntry, TensorRole, TensorSpec, Variant, DATA_ALIGN,
    DIR_ENTRY_BYTES, HEADER_BYTES, HEADER_CRC_START, MAGIC, PER_TENSOR_DTYPES, Q5_FIFTH_BITS_BY_TILE, TENSOR_ALIGN,
};
use super::temp_files;
use super::tokenizer_section;
use crate::tokenizer::TokenizerSpec;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("invalid model: {0}")]
    Invalid(String),
    #[error("tensor '{name}': {reason}")]
    Tensor { name: String, reason: String },
    #[error("{path}: {reason}; not replaced")]
    Target { path: PathBuf, reason: String },
}

/// Opens a just-written file with every check `Model::open --verify` makes.
fn verify_written(path: &Path) -> Result<(), WriteError> {
    let failed = |e: String| WriteError::Invalid(format!("the written file fails its own checks: {e}"));
    let file = super::ModelFile::open(path).map_err(|e| failed(e.kind.to_string()))?;
    file.verify().map_err(|e| failed(e.kind.to_string()))?;
    crate::tokenizer::Tokenizer::new(file.tokenizer().clone()).map_err(|e| failed(e.to_string()))?;
    Ok(())
}

/// The output must be absent or a regular file: renaming over a device node,
/// a directory, a FIFO or a symlink would replace that, not write a model.
fn check_target(path: &Path) -> Result<(), WriteError> {
    let kind = match fs::symlink_metadata(path) {
        Ok(meta) => meta.file_type(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(WriteError::Io { path: path.to_path_buf(), source }),
    };
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_symlink() {
        "is a symbolic link"
    } else if kind.is_dir() {
        "is a directory"
    } else {
        "is a device, FIFO or socket, not a regular file"
    };
    Err(WriteError::Target { path: path.to_path_buf(), reason: what.into() })
}

/// The temporary file's name: `NAME.tmp<pid>-<serial>` beside the target.
fn temp_name(file_name: &std::ffi::OsStr, pid: u32, serial: u64) -> std::ffi::OsString {
    let mut name = file_name.to_os_string();
    name.push(format!(".tmp{pid}-{serial}"));
    name
}

/// Removes temporary files of earlier writers of the same target whose
/// process is gone (killed with SIGKILL, or aborted, before their `Drop` ran).
/// A process is gone when Linux has no /proc entry for its pid; elsewhere
/// nothing is removed. Best effort: errors are ignored.
fn remove_stale_temps(path: &Path, file_name: &std::ffi::OsStr) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mut prefix = file_name.to_os_string();
    prefix.push(".tmp");
    let prefix = prefix.as_encoded_bytes();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.as_encoded_bytes().strip_prefix(prefix) else { continue };
        let Some((pid, serial)) = std::str::from_utf8(rest).ok().and_then(|r| r.split_once('-')) else { continue };
        let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), serial.parse::<u64>()) else { continue };
        let is_regular = entry.file_type().is_ok_and(|t| t.is_file());
        if is_regular && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// A path beside `path` that no other writer (in this process or another)
/// uses at the same time, after removing dead writers' leftovers.
fn unique_temp_path(path: &Path) -> Result<PathBuf, WriteError> {
    let file_name =
        path.file_name().ok_or_else(|| WriteError::Invalid(format!("{}: not a file path", path.display())))?;
    check_target(path)?;
    remove_stale_temps(path, file_name);
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(path.with_file_name(temp_name(file_name, std::process::id(), serial)))
}

/// Writes `bytes` to `path` as the model writer writes: to a temporary file
/// beside it, synced, then renamed over it, so a failure leaves the old file
/// (or none), never a half-written one.
pub fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let tmp_path = unique_temp_path(path)?;
    let io_err = |source| WriteError::Io { path: tmp_path.clone(), source };
    let written = File::create(&tmp_path).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let renamed = written.map_err(io_err).and_then(|()| {
        check_target(path)?;
        fs::rename(&tmp_path, path).map_err(|source| WriteError::Io { path: path.to_path_buf(), source })
    });
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    renamed
}

/// Streams a model file to disk, tensor by tensor, in the order of
/// [`ModelWriter::tensors`].
pub struct ModelWriter {
    final_path: PathBuf,
    tmp_path: PathBuf,
    /// `None` only once `finish` has taken it.
    out: Option<BufWriter<File>>,
    tensors: Vec<TensorSpec>,
    entries: Vec<RawTensorEntry>,
    header: RawHeader,
    /// Bytes `[0, data_offset)`: header, directory, tokenizer, padding.
    meta: Vec<u8>,
    next: usize,
    pos: u64,
    finished: bool,
}

impl ModelWriter {
    /// A file whose matmul weights are all `weight_dtype`.
    pub fn create(
        path: &Path,
        hparams: &HParams,
        weight_dtype: DType,
        tokenizer: &TokenizerSpec,
    ) -> Result<Self, WriteError> {
        Self::create_typed(path, hparams, weight_dtype, |_| weight_dtype, tokenizer)
    }

    /// A file whose matmul tensors each have the dtype `matmul_dtype` gives
    /// them; `weight_dtype` is the header's (the type of most of them, the
    /// model's name for its weights). Vectors are f32 whatever it says.
    pub fn create_typed(
        path: &Path,
        hparams: &HParams,
        weight_dtype: DType,
        matmul_dtype: impl Fn(&TensorSpec) -> DType,
        tokenizer: &TokenizerSpec,
    ) -> Result<Self, WriteError> {
        hparams.validate().map_err(WriteError::Invalid)?;
        if tokenizer.tokens.len() != hparams.vocab_size as usize {
            return Err(WriteError::Invalid(format!(
                "the tokenizer has {} tokens but vocab_size is {}",
                tokenizer.tokens.len(),
                hparams.vocab_size
            )));
        }
        let tok = tokenizer_section::encode(tokenizer).map_err(WriteError::Invalid)?;
        let tensors = expected_tensors(hparams);

        let dir_offset = HEADER_BYTES;
        let tok_offset = dir_offset + DIR_ENTRY_BYTES * tensors.len() as u64;
        let data_offset = (tok_offset + tok.len() as u64).next_multiple_of(DATA_ALIGN);
        let mut offset = data_offset;
        let mut entries = Vec::with_capacity(tensors.len());
        // Files older builds read stay in their versions (see `version` below).
        let mut needs_v3 = !matches!(weight_dtype, DType::F32 | DType::F16 | DType::Q8);
        let mut has_q5 = false;
        for t in &tensors {
            let dtype = if t.role == TensorRole::Matmul { matmul_dtype(t) } else { t.dtype(weight_dtype) };
            needs_v3 |= dtype != t.dtype(weight_dtype);
            has_q5 |= matches!(dtype, DType::Q5_0 | DType::Q5_1);
            let n_bytes = dtype.n_bytes(t.rows, t.cols).ok_or_else(|| WriteError::Tensor {
                name: t.name.clone(),
                reason: format!(
                    "shape [{}, {}] cannot be stored as {} (it needs a multiple of {} columns)",
                    t.rows,
                    t.cols,
                    dtype.name(),
                    dtype.traits().block_cols
                ),
            })?;
            let mut name = [0u8; 64];
            name[..t.name.len()].copy_from_slice(t.name.as_bytes());
            entries.push(RawTensorEntry {
                name,
                dtype: dtype.id(),
                ndim: t.ndim,
                rows: t.rows,
                cols: t.cols,
                offset,
                n_bytes,
                crc32: 0,
                reserved: [0; 20],
            });
            offset = (offset + n_bytes).next_multiple_of(TENSOR_ALIGN);
        }
        let file_len = entries.last().map_or(data_offset, |e| e.offset + e.n_bytes);

        let header = RawHeader {
            magic: MAGIC,
            // Plain Llama and GPT-2 with one f32/f16/q8 type stay version 1,
            // and other single-type files version 2, which older builds read.
            // Only q5_0/q5_1 need version 4's order of fifth bits.
            version: if has_q5 {
                Q5_FIFTH_BITS_BY_TILE
            } else if needs_v3 {
                PER_TENSOR_DTYPES
            } else if hparams.variant == Variant::default() {
                1
            } else {
                2
            },
            header_crc32: 0,
            file_len,
            data_offset,
            dir_offset,
            n_tensors: tensors.len() as u64,
            tok_offset,
            tok_len: tok.len() as u64,
            arch: hparams.arch as u32,
            n_layers: hparams.n_layers,
            dim: hparams.dim,
            n_heads: hparams.n_heads,
            n_kv_heads: hparams.n_kv_heads,
            head_dim: hparams.head_dim,
            ffn_dim: hparams.ffn_dim,
            vocab_size: hparams.vocab_size,
            max_seq_len: hparams.max_seq_len,
            rope_theta: hparams.rope_theta,
            norm_eps: hparams.norm_eps,
            flags: hparams.flags(),
            weight_dtype: weight_dtype.id(),
            rope_dim: hparams.variant.rope_dim,
            sliding_window: hparams.variant.sliding_window,
            swa_period: hparams.variant.swa_period,
            rope_theta_swa: hparams.variant.rope_theta_swa,
            attn_scale: hparams.variant.attn_scale,
            embed_scale: hparams.variant.embed_scale,
            reserved: [0; 116],
        };
        let mut meta = vec![0u8; data_offset as usize];
        meta[tok_offset as usize..][..tok.len()].copy_from_slice(&tok);

        let tmp_path = unique_temp_path(path)?;
        let io_err = |source| WriteError::Io { path: tmp_path.clone(), source };
        // Registered before it exists, so a signal handler never misses it.
        temp_files::register(&tmp_path);
        let file = File::create(&tmp_path).map_err(|e| {
            temp_files::unregister(&tmp_path);
            io_err(e)
        })?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        // The metadata is written last, once the tensor checksums are known.
        out.seek(SeekFrom::Start(data_offset)).map_err(io_err)?;
        Ok(Self {
            final_path: path.to_path_buf(),
            tmp_path,
            out: Some(out),
            tensors,
            entries,
            header,
            meta,
            next: 0,
            pos: data_offset,
            finished: false,
        })
    }

    /// The tensors to write, in the order [`Self::write_tensor`] expects them.
    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// The dtype and exact byte size the next tensors must have.
    pub fn entry_dtype(&self, index: usize) -> DType {
        DType::from_u32(self.entries[index].dtype).expect("writer-made dtype")
    }

    pub fn entry_bytes(&self, index: usize) -> u64 {
        self.entries[index].n_bytes
    }

    /// Writes the data of the next tensor; `name` must be the next one in order.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
        let Some(spec) = self.tensors.get(self.next) else {
            return Err(WriteError::Tensor { name: name.into(), reason: "all tensors are already written".into() });
        };
        if spec.name != name {
            return Err(WriteError::Tensor { name: name.into(), reason: format!("expected '{}' next", spec.name) });
        }
        let entry = &mut self.entries[self.next];
        if bytes.len() as u64 != entry.n_bytes {
            return Err(WriteError::Tensor {
                name: name.into(),
                reason: format!("{} bytes given, {} expected", bytes.len(), entry.n_bytes),
            });
        }
        let io_err = |source| WriteError::Io { path: self.tmp_path.clone(), source };
        let pad = entry.offset - self.pos;
        let out = self.out.as_mut().expect("writer is live until finish");
        out.write_all(&[0u8; TENSOR_ALIGN as usize][..pad as usize]).map_err(io_err)?;
        out.write_all(bytes).map_err(io_err)?;
        entry.crc32 = crc32fast::hash(bytes);
        self.pos = entry.offset + entry.n_bytes;
        self.next += 1;
        Ok(())
    }

    /// Writes the header and directory and renames the file into place.
    pub fn finish(mut self) -> Result<(), WriteError> {
        if self.next != self.tensors.len() {
            return Err(WriteError::Invalid(format!(
                "only {} of {} tensors were written",
                self.next,
                self.tensors.len()
            )));
        }
        let dir_offset = self.header.dir_offset as usize;
        let dir: &[u8] = bytemuck::cast_slice(&self.entries);
        self.meta[dir_offset..dir_offset + dir.len()].copy_from_slice(dir);
        self.meta[..HEADER_BYTES as usize].copy_from_slice(bytemuck::bytes_of(&self.header));
        let crc = crc32fast::hash(&self.meta[HEADER_CRC_START..]);
        self.meta[12..16].copy_from_slice(&crc.to_le_bytes());

        let tmp = self.tmp_path.clone();
        let io_err = |source| WriteError::Io { path: tmp.clone(), source };
        let mut out = self.out.take().expect("writer is live until finish");
        out.seek(SeekFrom::Start(0)).map_err(io_err)?;
        out.write_all(&self.meta).map_err(io_err)?;
        let file = out.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(io_err)?;
        drop(file);
        // Read back as a loader will (header, directory, every checksum, the
        // tokenizer's consistency) before it can replace anything.
        verify_written(&self.tmp_path)?;
        // Checked again: the target may have changed while tensors were written.
        check_target(&self.final_path)?;
        fs::rename(&self.tmp_path, &self.final_path)
            .map_err(|source| WriteError::Io { path: self.final_path.clone(), source })?;
        temp_files::unregister(&self.tmp_path);
        self.finished = true;
        Ok(())
    }
}

impl Drop for ModelWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.tmp_path);
            temp_files::unregister(&self.tmp_path);
        }
    }
}
