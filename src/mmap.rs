//! Memory maps: model files (read-only, in place) and large zeroed buffers.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::ops::Deref;
use std::path::Path;

use memmap2::Mmap;

#[cfg(target_os = "linux")]
mod sigbus;
#[cfg(target_os = "linux")]
pub use sigbus::SIGBUS_EXIT_CODE;

/// A file mapped read-only into memory.
///
/// The bytes are read in place; nothing is copied. A file truncated by
/// another process while it is mapped makes reads of the vanished pages raise
/// SIGBUS: on Linux the SIGBUS guard (`sigbus.rs`) turns that into one line on
/// stderr and exit status [`SIGBUS_EXIT_CODE`] while the mapping is live.
/// Files already short when opened are caught by validating them against the
/// length their own header records.
pub struct MappedFile {
    /// Declared before `map`: unwatched before the mapping goes away.
    #[cfg(target_os = "linux")]
    _watch: Option<sigbus::Watch>,
    map: Option<Mmap>,
}

/// Opens `path` for reading only if it is a regular file (after symlinks).
/// The open itself does not block (`O_NONBLOCK`: a FIFO without a writer
/// would wait for ever), and the check is on the opened file, so it cannot be
/// swapped for another between check and open. Directories, FIFOs, sockets
/// and devices (`/dev/zero` would be read for ever) are refused.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    let what = if kind.is_dir() { "a directory" } else { "a FIFO, socket or device" };
    Err(io::Error::new(io::ErrorKind::InvalidInput, format!("is {what}, not a regular file")))
}

/// A regular file's text, refused above `max_bytes` (JSON side files).
pub fn read_regular_to_string(path: &Path, max_bytes: u64) -> io::Result<String> {
    use std::io::Read;
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    if len > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is {len} bytes, over the limit of {max_bytes}"),
        ));
    }
    let mut text = String::new();
    file.take(max_bytes).read_to_string(&mut text)?;
    Ok(text)
}

impl MappedFile {
    /// Maps a regular file ([`open_regular`]).
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = open_regular(path)?;
        let len = file.metadata()?.len();
        if len == 0 {
            // Mapping an empty file fails on some platforms; an empty slice serves.
            return Ok(Self {
                #[cfg(target_os = "linux")]
                _watch: None,
                map: None,
            });
        }
        // SAFETY: the map is read-only and private to this process; the file is
        // opened read-only, so this process never writes through it. Another
        // process changing the file while mapped is the residual risk of every
        // mmap-based loader: reads of truncated pages fault (SIGBUS, which the
        // guard turns into a clean exit on Linux), rewritten pages show the new
        // bytes (numbers change, every index into them was bounds-checked).
        let map = unsafe { Mmap::map(&file)? };
        Ok(Self {
            #[cfg(target_os = "linux")]
            _watch: sigbus::watch(map.as_ptr(), map.len()),
            map: Some(map),
        })
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
    use super::*;

    #[cfg(unix)]
    #[test]
    fn special_files_are_refused_without_blocking() {
        let tmp = std::env::temp_dir();
        let dir = tmp.as_path();
        let fifo = dir.join(format!("mmap-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&fifo);
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // Was: open blocked for ever waiting for a writer.
        for path in [fifo.as_path(), Path::new("/dev/zero"), dir] {
            let err = MappedFile::open(path).err().expect("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{}: {err}", path.display());
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
        std::fs::remove_file(&fifo).unwrap();
        let json = dir.join(format!("mmap-json-{}", std::process::id()));
        std::fs::write(&json, "{}").unwrap();
        assert_eq!(read_regular_to_string(&json, 2).unwrap(), "{}");
        assert!(read_regular_to_string(&json, 1).is_err());
    }

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
