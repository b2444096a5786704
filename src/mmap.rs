//! Read-only memory maps of model files: the one place gpt-fast maps a file.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::ops::Deref;
use std::path::Path;

use memmap2::Mmap;

/// A file mapped read-only into memory.
///
/// The bytes are read in place; nothing is copied. A mapped file must not be
/// truncated by another process while it is mapped (touching pages past the new
/// end raises SIGBUS); gpt-fast only ever maps files it then validates against
/// the length recorded in their own header, which catches files that were
/// already short when opened.
pub struct MappedFile {
    map: Option<Mmap>,
}

impl MappedFile {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len == 0 {
            // Mapping an empty file fails on some platforms; an empty slice serves.
            return Ok(Self { map: None });
        }
        // SAFETY: the map is read-only and private to this process; the file is
        // opened read-only, so this process never writes through it. Another
        // process truncating the file while mapped is the documented residual
        // risk of every mmap-based loader (see the type's doc comment).
        let map = unsafe { Mmap::map(&file)? };
        Ok(Self { map: Some(map) })
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

impl Deref for MappedFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes()
    }
}
