// Shared by the targets: a per-process scratch file on tmpfs, because the
// readers under test open paths (they map files) rather than take bytes.
use std::path::PathBuf;

pub fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let path = dir.join(format!("gpt-fast-fuzz-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).expect("writing the scratch file");
    path
}
