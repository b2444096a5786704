//! What a path given as a model holds, told from its metadata and first
//! bytes (a folder by its `config.json`), so that every command can say what
//! it was given instead of failing on the first wrong byte.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::format::spec::MAGIC;
use crate::import::from_gguf::GgufSource;
use crate::import::from_hf::HfSource;
use crate::import::source::Source;
use crate::import::ConvertError;

/// The kinds of input a user may hand to a command that wants a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// A gpt-fast model file (starts with the format's magic).
    GptFast,
    /// A GGUF file (llama.cpp's format): convertible.
    Gguf,
    /// A folder with a `config.json`: a Hugging Face checkpoint, convertible.
    HfFolder,
    /// A single `.safetensors` file: weights without config or tokenizer.
    Safetensors,
    /// A folder without `config.json`.
    Folder,
    /// Not a regular file or folder (a device, a FIFO, a socket): never read,
    /// since reading could block or never end.
    NotRegular,
    /// A regular file of none of the kinds above.
    Unknown,
}

impl InputKind {
    /// Whether `gpt_fast::import` can convert it to a model file.
    pub fn convertible(self) -> bool {
        matches!(self, Self::Gguf | Self::HfFolder)
    }

    /// A short noun phrase for messages: "a GGUF file".
    pub fn describe(self) -> &'static str {
        match self {
            Self::GptFast => "a gpt-fast model file",
            Self::Gguf => "a GGUF file",
            Self::HfFolder => "a Hugging Face model folder",
            Self::Safetensors => "a safetensors file",
            Self::Folder => "a folder without config.json",
            Self::NotRegular => "not a regular file",
            Self::Unknown => "not a model file of a known kind",
        }
    }
}

/// Looks at `path` (follows symlinks). Only a missing or unreadable path is an error.
pub fn detect(path: &Path) -> io::Result<InputKind> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Ok(if path.join("config.json").is_file() { InputKind::HfFolder } else { InputKind::Folder });
    }
    if !meta.is_file() {
        return Ok(InputKind::NotRegular);
    }
    let mut head = [0u8; 9];
    let mut file = File::open(path)?;
    let mut len = 0;
    while len < head.len() {
        match file.read(&mut head[len..])? {
            0 => break,
            n => len += n,
        }
    }
    let head = &head[..len];
    if head.starts_with(&MAGIC) {
        return Ok(InputKind::GptFast);
    }
    if head.starts_with(b"GGUF") {
        return Ok(InputKind::Gguf);
    }
    // safetensors: a little-endian u64 header length, then the JSON header.
    let named = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if named || (len == 9 && head[8] == b'{' && u64::from_le_bytes(head[..8].try_into().unwrap()) < meta.len()) {
        return Ok(InputKind::Safetensors);
    }
    Ok(InputKind::Unknown)
}

/// Opens a convertible input: a folder as a Hugging Face checkpoint (whose
/// reader names what is missing), a GGUF file; anything else is refused with
/// what it is.
pub fn open_source(path: &Path) -> Result<Box<dyn Source>, ConvertError> {
    let refuse = |reason: String| ConvertError::Input { path: path.to_path_buf(), reason };
    match detect(path).map_err(|e| refuse(e.to_string()))? {
        InputKind::Gguf => Ok(Box::new(GgufSource::open(path)?)),
        InputKind::HfFolder | InputKind::Folder => Ok(Box::new(HfSource::open(path)?)),
        InputKind::GptFast => Err(refuse("already a gpt-fast model file".into())),
        InputKind::Safetensors => Err(refuse(
            "a safetensors file holds weights only: give the Hugging Face folder that holds it \
             (with config.json and tokenizer.json)"
                .into(),
        )),
        kind @ (InputKind::NotRegular | InputKind::Unknown) => {
            Err(refuse(format!("{}: neither a Hugging Face model folder nor a GGUF file", kind.describe())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_the_kinds_apart() {
        let dir = std::env::temp_dir().join(format!("gpt-fast-detect-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("hf")).unwrap();
        std::fs::write(dir.join("hf/config.json"), "{}").unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            detect(&path).unwrap()
        };
        assert_eq!(write("a.gguf", b"GGUF\x03\0\0\0"), InputKind::Gguf);
        assert_eq!(write("a.bin", b"GPTFAST\0rest"), InputKind::GptFast);
        assert_eq!(write("w", b"\x02\0\0\0\0\0\0\0{}"), InputKind::Safetensors);
        assert_eq!(write("x.safetensors", b""), InputKind::Safetensors);
        assert_eq!(write("short", b"GG"), InputKind::Unknown);
        assert_eq!(write("zip", b"PK\x03\x04 not a model"), InputKind::Unknown);
        assert_eq!(detect(&dir.join("hf")).unwrap(), InputKind::HfFolder);
        assert_eq!(detect(&dir).unwrap(), InputKind::Folder);
        #[cfg(unix)]
        assert_eq!(detect(Path::new("/dev/null")).unwrap(), InputKind::NotRegular);
        assert!(detect(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
