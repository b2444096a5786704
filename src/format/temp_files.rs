//! The model writer's temporary files in progress, listed while they exist
//! so that a SIGINT/SIGTERM handler can remove them before the process exits
//! (a dead process's leftovers, after SIGKILL, are removed by the next writer
//! of the same target: see `remove_stale_temps` in the writer).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Temporary files of writers in progress in this process.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A writer that panicked holding the lock left a valid list behind.
    LIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) fn register(path: &Path) {
    live().push(path.to_path_buf());
}

pub(super) fn unregister(path: &Path) {
    live().retain(|p| p != path);
}

/// Removes the temporary files of every writer still in progress in this
/// process, for a signal handler about to exit (their `Drop` will not run).
/// Returns how many there were.
pub fn remove_live() -> usize {
    let mut live = live();
    for path in live.iter() {
        let _ = fs::remove_file(path);
    }
    let n = live.len();
    live.clear();
    n
}
