//! SIGINT, SIGTERM and SIGHUP (ctrlc's `termination` set). Any of them first
//! removes the temporary files of conversions in progress (`convert`, or a
//! GGUF converted into the cache), whose `Drop` would not run. Then, once
//! `run` has started printing, `serve` is up or `chat` has greeted
//! ([`stop_gracefully`]), the first one asks generation to stop at the next
//! token (`run` ends the line, prints the statistics and exits 130; `chat`
//! goes back to its prompt) and a second exits at once, for a step that
//! does not end; before that, or in any other command, the process exits at
//! once with 130, as it would without a handler.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);
static GRACEFUL: AtomicBool = AtomicBool::new(false);

/// The exit code after an interrupt: 128 + SIGINT, as a shell reports it.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Installs the handler (at start-up, once; later calls do nothing).
pub fn install() {
    // The handler runs on ctrlc's own thread, not in signal context.
    let _ = ctrlc::set_handler(|| {
        gpt_fast::format::temp_files::remove_live();
        let earlier = INTERRUPTS.fetch_add(1, Ordering::SeqCst);
        if earlier > 0 || !GRACEFUL.load(Ordering::SeqCst) {
            std::process::exit(EXIT_INTERRUPTED);
        }
    });
}

/// From now on the first interrupt only sets [`requested`].
pub fn stop_gracefully() {
    GRACEFUL.store(true, Ordering::SeqCst);
}

/// Forgets the interrupts so far: `chat` calls it once a reply has
/// stopped, so the next reply's first Ctrl-C stops that reply too rather
/// than exiting.
pub fn clear() {
    INTERRUPTS.store(0, Ordering::SeqCst);
}

/// Whether an interrupt has arrived since [`stop_gracefully`].
pub fn requested() -> bool {
    INTERRUPTS.load(Ordering::SeqCst) > 0
}
