//! Running a GGUF file or a Hugging Face folder directly: each is converted
//! once into a cache folder (`$XDG_CACHE_HOME/gpt-fast`, else
//! `~/.cache/gpt-fast`) and the model file there is used from then on.
//!
//! An entry's name is a key of the source: its size, modification time and a
//! hash of its first bytes (for a folder, of every file's name, size and
//! modification time and of its `config.json`), the `--quant` choice (a
//! weight type, or `keep`) and the format version this build writes (so an
//! entry an older build wrote, such as the q8 that every GGUF once became, is
//! not reused for `keep`). A changed source therefore gets a new entry; entries of
//! old sources stay until the folder is removed. Entries are written by
//! [`ModelWriter`](crate::format::ModelWriter), to a temporary file renamed
//! into place, so a reader never sees half an entry and two processes
//! converting the same source at once both end with a whole file.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::format::spec::VERSION;
use crate::import::detect::open_source;
use crate::import::weight_types::Quant;
use crate::import::ConvertError;

/// Bytes of a file's start that go into its key: a GGUF's header and
/// metadata (hyper-parameters, most of the vocabulary) for small models.
const KEY_PREFIX_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("no cache folder: neither XDG_CACHE_HOME nor HOME is set (set one, or convert with `gpt-fast convert`)")]
    NoCacheDir,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Convert(#[from] ConvertError),
}

/// A model file in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedModel {
    pub path: PathBuf,
    /// Whether this call converted it (false: it was already there).
    pub converted: bool,
}

/// The cache folder: `$XDG_CACHE_HOME/gpt-fast`, else `$HOME/.cache/gpt-fast`
/// (a relative XDG_CACHE_HOME is ignored, as the XDG spec asks).
pub fn dir() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").and_then(absolute) {
        return Some(xdg.join("gpt-fast"));
    }
    std::env::var_os("HOME").and_then(absolute).map(|home| home.join(".cache").join("gpt-fast"))
}

/// Where `source` converted with `quant` is (or would be) cached.
pub fn entry_path(source: &Path, quant: Quant) -> Result<PathBuf, CacheError> {
    let dir = dir().ok_or(CacheError::NoCacheDir)?;
    Ok(dir.join(entry_name(source, quant)?))
}

/// The cached model file for `source` (a GGUF file or a Hugging Face
/// folder) converted with `quant`, converting it first if it is not there.
/// `on_tensor(done, total, name)` reports a conversion's progress.
pub fn cached_model(
    source: &Path,
    quant: Quant,
    on_tensor: impl FnMut(usize, usize, &str),
) -> Result<CachedModel, CacheError> {
    let path = entry_path(source, quant)?;
    if path.is_file() {
        return Ok(CachedModel { path, converted: false });
    }
    // Opened before the folder is made, so a bad source leaves nothing behind.
    let opened = open_source(source)?;
    let dir = path.parent().expect("an entry is inside the cache folder");
    std::fs::create_dir_all(dir).map_err(|e| CacheError::Io { path: dir.to_path_buf(), source: e })?;
    crate::import::convert::convert(opened.as_ref(), source, &path, quant, on_tensor)?;
    Ok(CachedModel { path, converted: true })
}

/// `<stem>-<quant>-<16 hex digits>.bin`; the stem is the source's name made
/// safe for a file name, for people reading the folder.
fn entry_name(source: &Path, quant: Quant) -> Result<String, CacheError> {
    let io_error = |path: &Path, e: io::Error| CacheError::Io { path: path.to_path_buf(), source: e };
    let mut key = Fnv1a::new();
    key.write(&VERSION.to_le_bytes());
    key.write(quant.name().as_bytes());
    let meta = std::fs::metadata(source).map_err(|e| io_error(source, e))?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(source)
            .map_err(|e| io_error(source, e))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(|e| io_error(source, e))?;
        entries.sort();
        for path in entries.iter().filter(|p| p.is_file()) {
            key.write(path.file_name().map_or(&[][..], |n| n.as_encoded_bytes()));
            key_metadata(&mut key, &std::fs::metadata(path).map_err(|e| io_error(path, e))?);
        }
        let config = source.join("config.json");
        key_prefix(&mut key, &config).map_err(|e| io_error(&config, e))?;
    } else {
        key_metadata(&mut key, &meta);
        key_prefix(&mut key, source).map_err(|e| io_error(source, e))?;
    }
    let name = source.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let stem: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .take(64)
        .collect();
    let stem = if stem.is_empty() { "model".to_string() } else { stem };
    Ok(format!("{stem}-{}-{:016x}.bin", quant.name(), key.finish()))
}

fn key_metadata(key: &mut Fnv1a, meta: &std::fs::Metadata) {
    key.write(&meta.len().to_le_bytes());
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
    key.write(&mtime.as_nanos().to_le_bytes());
}

fn key_prefix(key: &mut Fnv1a, path: &Path) -> io::Result<()> {
    let mut bytes = Vec::new();
    File::open(path)?.take(KEY_PREFIX_BYTES).read_to_end(&mut bytes)?;
    key.write(&bytes);
    Ok(())
}

/// 64-bit FNV-1a: stable across builds and platforms (std's hasher is not
/// promised to be), which a key kept on disk needs.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        // The length first, so that ("ab", "c") and ("a", "bc") differ.
        for &b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::DType;

    #[test]
    fn the_key_changes_with_the_content_and_the_dtype() {
        let dir = std::env::temp_dir().join(format!("gpt-fast-cache-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("My Model.gguf");
        std::fs::write(&file, b"GGUF one").unwrap();
        let q8 = Quant::To(DType::Q8);
        let first = entry_name(&file, q8).unwrap();
        assert!(first.starts_with("My_Model-q8-") && first.ends_with(".bin"), "{first}");
        assert_eq!(entry_name(&file, q8).unwrap(), first);
        assert_ne!(entry_name(&file, Quant::To(DType::F16)).unwrap(), first.replace("-q8-", "-f16-"));
        let keep = entry_name(&file, Quant::Keep).unwrap();
        assert!(keep.starts_with("My_Model-keep-"), "{keep}");
        assert_ne!(keep, first.replace("-q8-", "-keep-"));
        std::fs::write(&file, b"GGUF two").unwrap();
        assert_ne!(entry_name(&file, q8).unwrap(), first);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
