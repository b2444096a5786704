//! Ctrl-C during `run`: the first SIGINT asks generation to stop at the next
//! token (the line is ended and the statistics printed, exit 130); a second
//! one exits at once, for a step that does not end.

use std::sync::atomic::{AtomicUsize, Ordering};

static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

/// Installs the handler (once; later calls do nothing). Until then, SIGINT
/// ends the process as usual, which is right while nothing is printed yet.
pub fn install() {
    // The handler runs on ctrlc's own thread, not in signal context.
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTS.fetch_add(1, Ordering::SeqCst) > 0 {
            std::process::exit(130);
        }
    });
}

/// Whether a SIGINT has arrived since `install`.
pub fn requested() -> bool {
    INTERRUPTS.load(Ordering::SeqCst) > 0
}
