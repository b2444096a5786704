//! The SIGBUS guard: a model file truncated or replaced in place while it is
//! mapped makes the next read of a vanished page raise SIGBUS, which kills the
//! process with no word of why. While any [`super::MappedFile`] is live, a
//! handler is installed that, for a fault inside one of those mappings only,
//! writes one line ("model file changed or truncated while in use") to stderr
//! and exits with [`SIGBUS_EXIT_CODE`]. Any other SIGBUS goes to the handler
//! that was there before (or the default action: the usual crash), so the
//! guard changes nothing for faults that are not ours. docs/DESIGN.md
//! ("SIGBUS guard") gives the trade-offs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

/// The exit status after a mapped model file changed under the process
/// (sysexits' EX_IOERR): distinct from errors (1) and from a signal death.
pub const SIGBUS_EXIT_CODE: i32 = 74;

/// Mappings watched at once; more are simply not guarded.
const SLOTS: usize = 64;

/// `(start, len)` of each guarded mapping; `start == 0` marks a free slot.
/// Read from the handler, so plain atomics only (async-signal-safe).
static STARTS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static LENS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];

static INSTALL: Once = Once::new();
/// The action that was installed before ours, for faults that are not ours.
static mut PREVIOUS: std::mem::MaybeUninit<libc::sigaction> = std::mem::MaybeUninit::zeroed();

/// Watches `[start, start + len)` until the returned guard is dropped.
pub(super) fn watch(start: *const u8, len: usize) -> Option<Watch> {
    INSTALL.call_once(install);
    let start = start as usize;
    for (slot, s) in STARTS.iter().enumerate() {
        if s.load(Ordering::Relaxed) == 0 {
            LENS[slot].store(len, Ordering::Relaxed);
            if s.compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                return Some(Watch { slot });
            }
        }
    }
    None
}

/// A watched mapping; unwatched on drop (before the mapping is unmapped).
pub(super) struct Watch {
    slot: usize,
}

impl Drop for Watch {
    fn drop(&mut self) {
        STARTS[self.slot].store(0, Ordering::Release);
    }
}

fn install() {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the
    // handler has the SA_SIGINFO signature; PREVIOUS is written here once,
    // inside the `Once`, before the handler that reads it can run.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        let previous = (&raw mut PREVIOUS).cast::<libc::sigaction>();
        libc::sigaction(libc::SIGBUS, &action, previous);
    }
}

fn ours(addr: usize) -> bool {
    STARTS.iter().zip(&LENS).any(|(s, l)| {
        let start = s.load(Ordering::Acquire);
        start != 0 && addr >= start && addr - start < l.load(Ordering::Relaxed)
    })
}

extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    if ours(addr) {
        const MESSAGE: &[u8] =
            b"gpt-fast: error: model file changed or truncated while in use (SIGBUS reading its mapping)\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe; MESSAGE is static.
        unsafe {
            libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
            libc::_exit(SIGBUS_EXIT_CODE);
        }
    }
    // Not ours: hand it on as if we were not here.
    // SAFETY: PREVIOUS was filled by sigaction before this handler was
    // installed; calling a handler with the arguments it was registered for,
    // or restoring the default action and returning so that the faulting
    // access runs again (and the default action kills), is what the kernel
    // would have done without us. sigaction is async-signal-safe.
    unsafe {
        let previous = &*(&raw const PREVIOUS).cast::<libc::sigaction>();
        let handler = previous.sa_sigaction;
        if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
            if (*info).si_code <= 0 {
                // Sent by kill/raise, not a fault: returning would not repeat it.
                libc::raise(signal);
            }
        } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = std::mem::transmute(handler);
            f(signal, info, context);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
            f(signal);
        }
    }
}
