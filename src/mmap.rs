//! Memory maps: model files (read-only, in place) and large zeroed buffers.
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

/// Zeroed memory for large, long-lived buffers (the KV cache): an anonymous
/// mapping that asks the kernel for transparent huge pages and is touched
/// once here, so its pages are in place before the first token.
///
/// With 4 KiB pages the first touch of a 90 MiB cache (SmolLM2, 4096
/// positions, f16) takes ~23,000 page faults: ~40 ms of start-up on a VM.
/// Huge pages make that ~45 faults (the kernel still zeroes every byte) and
/// spare attention's long scans most TLB misses. Where huge pages are off or
/// unsupported the advice is a no-op and this is plain zeroed memory.
pub struct ZeroedBuffer<T> {
    map: Option<memmap2::MmapMut>,
    _elements: std::marker::PhantomData<T>,
}

impl<T: bytemuck::Pod> ZeroedBuffer<T> {
    /// `len` elements, all bits zero.
    pub fn new(len: usize) -> io::Result<Self> {
        let bytes = len * std::mem::size_of::<T>();
        if bytes == 0 {
            return Ok(Self { map: None, _elements: std::marker::PhantomData });
        }
        let mut map = memmap2::MmapMut::map_anon(bytes)?;
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage); // advice: failure only means small pages
        const PAGE: usize = 4096;
        for at in (0..bytes).step_by(PAGE) {
            map[at] = 0; // fault the page in now (it is already zero)
        }
        Ok(Self { map: Some(map), _elements: std::marker::PhantomData })
    }
}

impl<T: bytemuck::Pod> Deref for ZeroedBuffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // A page-aligned mapping of whole elements: the cast cannot fail.
        self.map.as_deref().map_or(&[], bytemuck::cast_slice)
    }
}

impl<T: bytemuck::Pod> std::ops::DerefMut for ZeroedBuffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.map.as_deref_mut().map_or(&mut [], bytemuck::cast_slice_mut)
    }
}

#[cfg(test)]
mod tests {
    use super::ZeroedBuffer;

    #[test]
    fn zeroed_buffers_are_zero_writable_and_sized() {
        // Over 2 MiB, so a huge page may back it.
        let mut b = ZeroedBuffer::<u32>::new(1 << 20).unwrap();
        assert_eq!(b.len(), 1 << 20);
        assert!(b.iter().all(|&v| v == 0));
        b[12345] = 7;
        assert_eq!(b.iter().map(|&v| u64::from(v)).sum::<u64>(), 7);
        assert!(ZeroedBuffer::<half::f16>::new(0).unwrap().is_empty());
    }
}
