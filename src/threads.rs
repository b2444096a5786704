//! A persistent thread pool for the forward pass, one per process and thread
//! count ([`shared_pool`]), lent to every session that asks for that many
//! threads: two sessions with pools of their own would have twice the
//! spinning workers fight for the same cores.
//!
//! A decode step of a small model takes a few milliseconds and runs a few
//! hundred parallel operations, so per-operation fork/join cost matters: the
//! workers are started once, wait for work on a spin barrier that spins
//! briefly and then parks (an idle session burns no CPU), and a dispatch
//! neither allocates nor boxes a closure. Work inside an operation is handed
//! out in chunks by an atomic counter; each chunk is computed by one thread in
//! a fixed order, so results do not depend on the thread count.
//!
//! A panicking job is caught in every thread: [`ThreadPool::run`] always
//! waits for every worker that joined (their borrows of the job's data end
//! before `run` returns or unwinds), then re-raises the panic in the caller
//! (the caller's own first, else the first worker's). The pool stays usable.
//!
//! Any thread may call [`ThreadPool::run`]; jobs run one at a time (callers
//! queue on a lock). A job that calls `run` on its own pool would wait for
//! itself: that panics instead.
//!
//! This module and `mmap` are the only `unsafe` outside the SIMD kernels: a
//! borrowed job must be shared with threads that outlive the borrow (as in
//! rayon's and crossbeam's scopes), and threads must write disjoint parts of
//! one output buffer.
#![allow(unsafe_code)]

use std::any::Any;
use std::cell::Cell;
use std::marker::PhantomData;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;

/// A waiting thread first spins this many times, pausing: the gap between
/// two operations of a decode step is a few microseconds.
const SPIN_PAUSES: u32 = 2_000;

/// Then it goes on spinning but yields the CPU each time: a wait that long
/// is likely one for a thread that is not running (preempted by the HTTP
/// runtime, a client, another process), and on a machine with no core to
/// spare, pausing would keep that thread off a core. After these, a worker
/// parks (about a millisecond in all: an idle pool sleeps almost at once).
const SPIN_YIELDS: u32 = 1_000;
const SPIN_ITERATIONS: u32 = SPIN_PAUSES + SPIN_YIELDS;

/// Set in `joined` when a job takes no more workers.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// The default thread count: one per physical core this process may run on.
/// Decode is memory-bound and prefill fills the FMA units of a core from one
/// thread, so a second hyper-thread per core only adds contention. Falls back
/// to the CPUs available to the process where the topology is not readable
/// (non-Linux, restricted /sys).
pub fn default_count() -> usize {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    physical_cores().map_or(available, |cores| cores.clamp(1, available))
}

/// Distinct (package, core) pairs among the CPUs in this process's affinity
/// mask, from Linux's /proc and /sys.
fn physical_cores() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?.trim();
    let read = |cpu: usize, what: &str| -> Option<String> {
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/{what}");
        Some(std::fs::read_to_string(path).ok()?.trim().to_owned())
    };
    let mut cores = std::collections::HashSet::new();
    for range in list.split(',') {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        for cpu in first.trim().parse::<usize>().ok()?..=last.trim().parse::<usize>().ok()? {
            cores.insert((read(cpu, "physical_package_id")?, read(cpu, "core_id")?));
        }
    }
    Some(cores.len())
}

#[repr(align(128))]
struct CachePadded<T>(T);

/// The job being run, type-erased: a pointer to the caller's
/// `&dyn Fn(usize) + Sync` (a thin pointer to the fat one, so it fits in one
/// atomic word), valid while [`ThreadPool::run`] waits for the workers.
type Job<'a> = &'a (dyn Fn(usize) + Sync + 'a);

struct Shared {
    /// Bumped once per job; workers wait for it to change.
    epoch: CachePadded<AtomicU64>,
    /// Workers that joined the current job, and [`CLOSED`] once the caller
    /// has finished its own share: a worker that comes later skips the job,
    /// so a descheduled worker never holds the caller up.
    joined: CachePadded<AtomicUsize>,
    /// Workers that finished the current job.
    done: CachePadded<AtomicUsize>,
    /// The current job (a `*const Job`) and its epoch, published before
    /// `joined` is reset for it: a worker whose increment of `joined` counted
    /// it in reads them after, and so sees this job's (see `worker`).
    job: AtomicPtr<()>,
    job_epoch: AtomicU64,
    /// Workers park here after spinning.
    wake: Condvar,
    /// The epoch after whose job workers park at once instead of spinning
    /// ([`ThreadPool::rest`]); `u64::MAX`: none.
    rest_after: AtomicU64,
    sleepers: Mutex<usize>,
    stop: AtomicBool,
    /// Workers that have started running (`new` waits for all of them).
    started: AtomicUsize,
    /// The first panic a worker caught in the current job, re-raised by `run`.
    /// `panicked` lets the happy path skip the lock.
    panicked: AtomicBool,
    worker_panic: Mutex<Option<Box<dyn Any + Send>>>,
}

/// Locks a mutex whose data stays consistent whatever a panicking holder did
/// (a counter, an optional payload): poisoning carries no information here.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Worker threads that run one job at a time on every thread at once
/// (see the module's documentation).
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held for the whole of a `run`: it publishes its job in the shared slot,
    /// so two at once would hand workers the wrong job.
    one_job: Mutex<()>,
}

thread_local! {
    /// The pool (its `Shared`'s address) whose job this thread is running, or
    /// 0: a job that calls `run` on that same pool would wait for itself.
    static IN_JOB: Cell<usize> = const { Cell::new(0) };
}

/// Marks the thread as running one of `shared`'s jobs while it lives
/// (unwinding too), restoring the mark of an outer job of another pool.
struct InJob {
    outer: usize,
}

impl InJob {
    fn enter(shared: &Shared) -> Self {
        let this = std::ptr::from_ref(shared) as usize;
        let outer = IN_JOB.replace(this);
        assert!(outer != this, "ThreadPool::run called from inside one of its own jobs: it would wait for itself");
        InJob { outer }
    }
}

impl Drop for InJob {
    fn drop(&mut self) {
        IN_JOB.set(self.outer);
    }
}

/// The process's pool of `n_threads` (at least 1), started on first use and
/// lent to every caller that asks for as many; it stops when the last
/// holder drops it.
pub fn shared_pool(n_threads: usize) -> Arc<ThreadPool> {
    static POOLS: Mutex<Vec<Weak<ThreadPool>>> = Mutex::new(Vec::new());
    let n_threads = n_threads.max(1);
    let mut pools = lock(&POOLS);
    pools.retain(|p| p.strong_count() > 0);
    if let Some(pool) = pools.iter().filter_map(Weak::upgrade).find(|p| p.n_threads() == n_threads) {
        return pool;
    }
    let pool = Arc::new(ThreadPool::new(n_threads));
    pools.push(Arc::downgrade(&pool));
    pool
}

impl ThreadPool {
    /// A pool of `n_threads` (the caller's thread counts as one).
    pub fn new(n_threads: usize) -> Self {
        let shared = Arc::new(Shared {
            epoch: CachePadded(AtomicU64::new(0)),
            joined: CachePadded(AtomicUsize::new(0)),
            done: CachePadded(AtomicUsize::new(0)),
            job: AtomicPtr::new(std::ptr::null_mut()),
            job_epoch: AtomicU64::new(0),
            wake: Condvar::new(),
            rest_after: AtomicU64::new(u64::MAX),
            sleepers: Mutex::new(0),
            stop: AtomicBool::new(false),
            started: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            worker_panic: Mutex::new(None),
        });
        let workers = (1..n_threads.max(1))
            .map(|index| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("gpt-fast-{index}"))
                    .spawn(move || worker(&shared, index))
                    .expect("spawning a worker thread")
            })
            .collect::<Vec<_>>();
        // Wait until every worker runs: a thread's start-up allocates (its name,
        // its stack guard), and that must happen here, not during a later job.
        while shared.started.load(Ordering::Acquire) < workers.len() {
            std::thread::yield_now();
        }
        Self { shared, workers, one_job: Mutex::new(()) }
    }

    /// Threads that run a job, the caller's included.
    pub fn n_threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `job(thread_index)` on the caller's thread (index 0) and on every
    /// worker that joins before the caller's own call returns; returns when
    /// all of those have finished. A worker that is late (descheduled, say)
    /// skips the job rather than hold the caller up, so a job must hand out
    /// its work dynamically (a [`ChunkCounter`]) rather than by thread index.
    ///
    /// If `job` panics on any thread, `run` still waits for every worker that
    /// joined, then panics with the caller's payload, or else with the first
    /// worker's.
    pub fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        let _in_job = InJob::enter(&self.shared);
        if self.workers.is_empty() {
            job(0);
            return;
        }
        let _one_job = lock(&self.one_job);
        // The pointer is published to the workers below, and this function does
        // not return before every worker that joined has counted itself done,
        // so no use of it outlives `job`.
        let job_ref: Job<'_> = job;
        let epoch = self.shared.job_epoch.load(Ordering::Relaxed) + 1;
        self.shared.job.store(&job_ref as *const Job<'_> as *mut (), Ordering::Relaxed);
        self.shared.job_epoch.store(epoch, Ordering::Relaxed);
        self.shared.done.0.store(0, Ordering::Relaxed);
        // Release: orders the stores above before any worker's join.
        self.shared.joined.0.store(0, Ordering::Release);
        #[cfg(test)]
        race::caller_before_bump(&self.shared);
        self.shared.epoch.0.store(epoch, Ordering::Release);
        if *lock(&self.shared.sleepers) > 0 {
            self.shared.wake.notify_all();
        }
        // Unwinding out of here before the workers are done would free the data
        // they are using: catch, wait, then re-raise. (`AssertUnwindSafe`: the
        // panic reaches the caller, who sees the job's data as a panic left it,
        // as with any panic.)
        let caller_panic = catch_unwind(AssertUnwindSafe(|| job(0))).err();
        // Work is handed out by the job itself (atomic chunk counters), so the
        // workers that have not joined by now have nothing left to do.
        let joined = self.shared.joined.0.fetch_or(CLOSED, Ordering::AcqRel) & !CLOSED;
        let mut spins = 0u32;
        while self.shared.done.0.load(Ordering::Acquire) < joined {
            spins += 1;
            if spins < SPIN_PAUSES {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        if let Some(payload) = caller_panic {
            self.take_worker_panic(); // the caller's panic wins; drop theirs
            resume_unwind(payload);
        }
        if let Some(payload) = self.take_worker_panic() {
            resume_unwind(payload);
        }
    }

    /// Tells the workers that no job follows soon: they park now rather
    /// than spin for the next one. A caller that is about to do a long stretch
    /// of serial work (the server sampling and sending a step's tokens) thus
    /// leaves the other cores to the threads that need them then (the HTTP
    /// runtime, the clients); the next [`ThreadPool::run`] wakes the workers
    /// as it does after any idle spell.
    pub fn rest(&self) {
        let _one_job = lock(&self.one_job);
        let last = self.shared.epoch.0.load(Ordering::Relaxed);
        self.shared.rest_after.store(last, Ordering::Relaxed);
    }

    /// The payload a worker caught in the job that just finished, if any.
    fn take_worker_panic(&self) -> Option<Box<dyn Any + Send>> {
        if !self.shared.panicked.swap(false, Ordering::Acquire) {
            return None;
        }
        lock(&self.shared.worker_panic).take()
    }
}

fn worker(shared: &Shared, index: usize) {
    shared.started.fetch_add(1, Ordering::Release);
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        // `seen` may be ahead of `epoch`: a worker can join a job through
        // `joined` (reset before the epoch is bumped) and finish it before
        // `run` bumps the epoch, so only a later epoch means a new job.
        let epoch = loop {
            let epoch = shared.epoch.0.load(Ordering::Acquire);
            if epoch > seen || shared.stop.load(Ordering::Relaxed) {
                break epoch;
            }
            spins += 1;
            if spins < SPIN_ITERATIONS && shared.rest_after.load(Ordering::Relaxed) != seen {
                if spins < SPIN_PAUSES {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            let mut sleepers = lock(&shared.sleepers);
            *sleepers += 1;
            // Re-check under the lock: `run` bumps the epoch before it looks
            // for sleepers under this lock, so either we see the new epoch here
            // or it sees us and notifies.
            while shared.epoch.0.load(Ordering::Acquire) <= seen && !shared.stop.load(Ordering::Relaxed) {
                sleepers = shared.wake.wait(sleepers).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            *sleepers -= 1;
            spins = 0;
        };
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        seen = epoch;
        #[cfg(test)]
        race::worker_before_join(shared);
        if shared.joined.0.fetch_add(1, Ordering::AcqRel) & CLOSED != 0 {
            continue; // the caller already finished this job without us
        }
        // Joining counted us in whichever job last reset `joined` (a newer one
        // than `epoch` if we were slow); our acquiring increment sees that
        // job's pointer and epoch, and no later job can be published before
        // we count ourselves done, so these loads read exactly that job.
        seen = shared.job_epoch.load(Ordering::Relaxed);
        let job = shared.job.load(Ordering::Relaxed) as *const Job<'_>;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let _in_job = InJob::enter(shared);
            // SAFETY: `run` stored a pointer to its live `Job` and, having counted
            // us in `joined`, waits for our `done` increment below before that
            // borrow ends. A panic is caught so that the increment still happens
            // (and the thread lives on); `run` re-raises it.
            unsafe { (*job)(index) }
        }));
        if let Err(payload) = result {
            let mut slot = lock(&shared.worker_panic);
            if slot.is_none() {
                *slot = Some(payload);
            }
            shared.panicked.store(true, Ordering::Release);
        }
        shared.done.0.fetch_add(1, Ordering::Release);
        #[cfg(test)]
        race::worker_done(shared);
    }
}

/// Pauses that force one interleaving of `run` and a worker (unit tests
/// only): a worker that has seen job E's epoch stops before joining; the
/// caller finishes E alone, publishes E+1 and, before bumping the epoch, lets
/// the worker go and waits until it has finished a job (which can only be
/// E+1, joined through `joined`), then gives it time to misread the old epoch
/// as a new job.
#[cfg(test)]
mod race {
    use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::Shared;

    /// 0 off; 1 armed; 2 a worker waits before joining; 3 it may join;
    /// 4 it has finished a job.
    pub static STAGE: AtomicU8 = AtomicU8::new(0);
    /// The pool (its `Shared`'s address) the pauses apply to: the other
    /// tests' pools run beside it.
    pub static POOL: AtomicUsize = AtomicUsize::new(0);

    fn step(shared: &Shared, from: u8, to: u8) -> bool {
        POOL.load(Ordering::SeqCst) == std::ptr::from_ref(shared) as usize
            && STAGE.compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    fn wait_for(stage: u8) {
        let start = Instant::now();
        while STAGE.load(Ordering::SeqCst) < stage {
            assert!(start.elapsed() < Duration::from_secs(30), "the forced interleaving stalled at {stage}");
            std::thread::yield_now();
        }
    }

    pub fn worker_before_join(shared: &Shared) {
        if step(shared, 1, 2) {
            wait_for(3);
        }
    }

    pub fn caller_before_bump(shared: &Shared) {
        if step(shared, 2, 3) {
            wait_for(4);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn worker_done(shared: &Shared) {
        step(shared, 3, 4);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        {
            let _guard = lock(&self.shared.sleepers);
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Hands out chunk indices `0..n_chunks` to whichever thread asks first.
pub struct ChunkCounter {
    next: AtomicUsize,
    n_chunks: usize,
}

impl ChunkCounter {
    /// A counter over `0..n_chunks`.
    pub fn new(n_chunks: usize) -> Self {
        Self { next: AtomicUsize::new(0), n_chunks }
    }

    /// The next chunk nobody has taken, if any.
    pub fn next(&self) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.n_chunks).then_some(i)
    }
}

/// A mutable slice split into fixed-size chunks that threads claim by index:
/// each index is handed out once (by a [`ChunkCounter`]), so the chunks that
/// threads hold never overlap.
pub struct DisjointChunks<'a, T> {
    ptr: *mut T,
    len: usize,
    chunk: usize,
    claimed: &'a [AtomicBool],
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: the type hands each chunk to one thread only (checked by `claimed`),
// so sharing it is like sharing disjoint `&mut [T]`, which needs `T: Send`.
unsafe impl<T: Send> Sync for DisjointChunks<'_, T> {}

impl<'a, T> DisjointChunks<'a, T> {
    /// `claimed` is scratch of at least `ceil(len / chunk)` flags (reset here).
    pub fn new(slice: &'a mut [T], chunk: usize, claimed: &'a [AtomicBool]) -> Self {
        let n_chunks = slice.len().div_ceil(chunk.max(1));
        assert!(chunk > 0 && claimed.len() >= n_chunks, "{n_chunks} chunks, {} claim flags", claimed.len());
        for flag in &claimed[..n_chunks] {
            flag.store(false, Ordering::Relaxed);
        }
        Self { ptr: slice.as_mut_ptr(), len: slice.len(), chunk, claimed, _borrow: PhantomData }
    }

    /// Chunk `index`, once; a second claim of the same index panics.
    #[allow(clippy::mut_from_ref)]
    pub fn claim(&self, index: usize) -> &'a mut [T] {
        let start = index * self.chunk;
        assert!(start < self.len, "chunk {index} out of range");
        assert!(!self.claimed[index].swap(true, Ordering::AcqRel), "chunk {index} claimed twice");
        let len = self.chunk.min(self.len - start);
        // SAFETY: `start + len <= self.len` (checked above), the slice is
        // borrowed mutably for 'a, and `claimed` guarantees no other reference
        // to this chunk exists: chunks do not overlap and each is handed out once.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_count_is_between_one_and_the_available_cpus() {
        let available = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!((1..=available).contains(&default_count()));
        #[cfg(target_os = "linux")]
        assert!(physical_cores().is_some_and(|n| n >= 1), "Linux exposes the topology");
    }

    /// Repetitions of a job: fewer under Miri, whose interpreter (checking
    /// every access for data races and the job pointer's lifetime) runs the
    /// spinning pool about a thousand times slower.
    fn rounds(native: u64) -> u64 {
        if cfg!(miri) {
            2
        } else {
            native
        }
    }

    #[test]
    fn every_chunk_is_done_once_whoever_joins() {
        for n in [1, 2, 3] {
            let pool = ThreadPool::new(n);
            for round in 0..rounds(500) {
                let counter = ChunkCounter::new(37);
                let sum = AtomicU64::new(0);
                let seen = AtomicU64::new(0);
                pool.run(&|thread| {
                    assert!(thread < n);
                    seen.fetch_or(1 << thread, Ordering::Relaxed);
                    while let Some(c) = counter.next() {
                        sum.fetch_add(c as u64 + 1, Ordering::Relaxed);
                    }
                });
                assert_eq!(sum.load(Ordering::Relaxed), 37 * 38 / 2, "round {round}");
                assert!(seen.load(Ordering::Relaxed) & 1 == 1, "the caller always runs the job");
            }
        }
    }

    #[test]
    fn disjoint_chunks_fill_a_buffer_and_parked_workers_wake() {
        let pool = ThreadPool::new(3);
        let mut out = vec![0u32; 1000];
        let flags: Vec<AtomicBool> = (0..100).map(|_| AtomicBool::new(false)).collect();
        {
            let chunks = DisjointChunks::new(&mut out, 10, &flags);
            let counter = ChunkCounter::new(100);
            pool.run(&|_| {
                while let Some(c) = counter.next() {
                    for (k, v) in chunks.claim(c).iter_mut().enumerate() {
                        *v = (c * 10 + k) as u32;
                    }
                }
            });
        }
        assert!(out.iter().enumerate().all(|(i, &v)| v == i as u32));
        // Let the workers park; a job that waits for a worker to join proves
        // that run() wakes them.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let joined = AtomicUsize::new(0);
        pool.run(&|_| {
            joined.fetch_add(1, Ordering::Relaxed);
            while joined.load(Ordering::Relaxed) < 2 {
                std::hint::spin_loop();
            }
        });
        assert!(joined.load(Ordering::Relaxed) >= 2);
    }

    #[test]
    fn resting_workers_park_and_the_next_job_wakes_them() {
        let pool = ThreadPool::new(3);
        for _ in 0..rounds(20) {
            still_usable(&pool);
            pool.rest();
            // Parked without waiting out their spins (bounded: a stuck pool fails, not hangs).
            let start = std::time::Instant::now();
            while *lock(&pool.shared.sleepers) < 2 {
                assert!(start.elapsed().as_secs() < 30, "the workers never parked");
                std::thread::yield_now();
            }
            let joined = AtomicUsize::new(0);
            pool.run(&|_| {
                joined.fetch_add(1, Ordering::SeqCst);
                while joined.load(Ordering::SeqCst) < 3 {
                    std::hint::spin_loop();
                }
            });
        }
    }

    /// Runs a job that spins until a worker has joined, so both the caller's
    /// and a worker's share run.
    fn wait_for_a_worker(joined: &AtomicUsize) {
        joined.fetch_add(1, Ordering::SeqCst);
        while joined.load(Ordering::SeqCst) < 2 {
            std::hint::spin_loop();
        }
    }

    fn panic_message(payload: Box<dyn Any + Send>) -> String {
        payload.downcast_ref::<&str>().map(|s| s.to_string()).unwrap_or_default()
    }

    fn panic_message_string(payload: Box<dyn Any + Send>) -> String {
        payload.downcast_ref::<String>().cloned().unwrap_or_else(|| panic_message(payload))
    }

    fn still_usable(pool: &ThreadPool) {
        let counter = ChunkCounter::new(100);
        let sum = AtomicU64::new(0);
        pool.run(&|_| {
            while let Some(c) = counter.next() {
                sum.fetch_add(c as u64, Ordering::Relaxed);
            }
        });
        assert_eq!(sum.load(Ordering::Relaxed), 99 * 100 / 2);
    }

    /// The interleaving behind a worker that ran one job twice (claiming
    /// its scratch twice, "chunk 1 claimed twice", seen in CI): the worker
    /// joins job E+1 through `joined` before `run` bumps the epoch, finishes
    /// it, and must not take the still-old epoch for a new job.
    #[test]
    fn a_worker_that_joins_before_the_epoch_bump_runs_the_job_once() {
        if cfg!(miri) {
            return; // a 20 ms sleep and spins: minutes under Miri
        }
        let pool = ThreadPool::new(2);
        race::POOL.store(Arc::as_ptr(&pool.shared) as usize, Ordering::SeqCst);
        race::STAGE.store(1, Ordering::SeqCst);
        // Job E: the caller runs it alone while the worker waits before joining.
        let start = std::time::Instant::now();
        pool.run(&|thread| {
            if thread == 0 {
                while race::STAGE.load(Ordering::SeqCst) < 2 {
                    assert!(start.elapsed().as_secs() < 30, "the worker never saw the job");
                    std::thread::yield_now();
                }
            }
        });
        let runs = [AtomicUsize::new(0), AtomicUsize::new(0)];
        pool.run(&|thread| {
            runs[thread].fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(race::STAGE.swap(0, Ordering::SeqCst), 4, "the interleaving happened");
        assert_eq!(runs[1].load(Ordering::SeqCst), 1, "the worker ran job E+1 once");
        still_usable(&pool);
    }

    /// The forward pass's pattern, run hard: a job whose threads claim
    /// output chunks by counter, then one where each thread also claims its
    /// own scratch by thread index, on the same claim flags, over and over,
    /// with busy threads beside the pool so that its workers get preempted at
    /// every point of the protocol. A worker that ran a job twice, or a
    /// straggler still in the previous job, claims a chunk twice and panics.
    /// `GPT_FAST_POOL_STRESS_MS` runs it longer (default 300 ms).
    #[test]
    fn alternating_jobs_on_shared_claim_flags_under_preemption() {
        let millis = std::env::var("GPT_FAST_POOL_STRESS_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(300u64);
        let deadline =
            std::time::Instant::now() + std::time::Duration::from_millis(if cfg!(miri) { 0 } else { millis });
        let stop = AtomicBool::new(false);
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        std::thread::scope(|scope| {
            let _stop_hogs = StopOnDrop(&stop);
            for _ in 0..if cfg!(miri) { 0 } else { 2 } {
                scope.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                });
            }
            for n in [2, 3] {
                let pool = ThreadPool::new(n);
                let flags: [Vec<AtomicBool>; 2] =
                    std::array::from_fn(|_| (0..16).map(|_| AtomicBool::new(false)).collect());
                let mut out = vec![0u32; 12 * 8];
                let mut scratch = vec![0u32; n * 8];
                let mut round = 0u64;
                while round < rounds(2) || std::time::Instant::now() < deadline {
                    round += 1;
                    {
                        let chunks = DisjointChunks::new(&mut out, 8, &flags[0]);
                        let counter = ChunkCounter::new(12);
                        pool.run(&|_| {
                            while let Some(c) = counter.next() {
                                chunks.claim(c).fill(round as u32);
                            }
                        });
                    }
                    assert!(out.iter().all(|&v| v == round as u32), "round {round}");
                    {
                        let chunks = DisjointChunks::new(&mut out[..3 * 8], 8, &flags[0]);
                        let scratches = DisjointChunks::new(&mut scratch, 8, &flags[1]);
                        let counter = ChunkCounter::new(3);
                        pool.run(&|thread| {
                            let mine = scratches.claim(thread);
                            while let Some(c) = counter.next() {
                                mine.fill(c as u32);
                                chunks.claim(c).copy_from_slice(mine);
                            }
                        });
                    }
                    assert!(out[..24].iter().enumerate().all(|(i, &v)| v == (i / 8) as u32), "round {round}");
                    if round.is_multiple_of(64) {
                        pool.rest();
                    }
                }
            }
        });
    }

    #[test]
    fn callers_on_several_threads_share_one_pool() {
        let pool = shared_pool(3);
        assert!(Arc::ptr_eq(&pool, &shared_pool(3)), "one pool per thread count");
        assert_eq!(shared_pool(2).n_threads(), 2);
        std::thread::scope(|scope| {
            for caller in 0..3u64 {
                let pool = Arc::clone(&pool);
                scope.spawn(move || {
                    for round in 0..rounds(300) {
                        let counter = ChunkCounter::new(29);
                        let sum = AtomicU64::new(0);
                        pool.run(&|_| {
                            while let Some(c) = counter.next() {
                                sum.fetch_add(c as u64 + caller, Ordering::Relaxed);
                            }
                        });
                        assert_eq!(sum.load(Ordering::Relaxed), 28 * 29 / 2 + 29 * caller, "caller {caller}, {round}");
                    }
                });
            }
        });
        let weak = Arc::downgrade(&pool);
        drop(pool);
        assert!(weak.upgrade().is_none(), "the pool stops with its last holder");
    }

    #[test]
    fn a_job_that_runs_its_own_pool_panics_instead_of_waiting_for_itself() {
        for n in [1, 2] {
            let pool = ThreadPool::new(n);
            let result = catch_unwind(AssertUnwindSafe(|| pool.run(&|_| pool.run(&|_| {}))));
            assert!(panic_message_string(result.unwrap_err()).contains("inside one of its own jobs"));
            still_usable(&pool);
            // Another pool inside a job is fine.
            let other = ThreadPool::new(2);
            pool.run(&|thread| {
                if thread == 0 {
                    still_usable(&other);
                }
            });
        }
    }

    #[test]
    fn a_panic_in_the_callers_share_waits_for_the_workers_then_reaches_the_caller() {
        let pool = ThreadPool::new(2);
        for _ in 0..rounds(20) {
            // The worker's side effect lands in memory owned by this frame;
            // before `run` waited, it landed after `catch_unwind` returned.
            let joined = AtomicUsize::new(0);
            let worker_finished = AtomicBool::new(false);
            let result = catch_unwind(AssertUnwindSafe(|| {
                pool.run(&|thread| {
                    wait_for_a_worker(&joined);
                    if thread == 0 {
                        panic!("caller's share");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    worker_finished.store(true, Ordering::SeqCst);
                })
            }));
            assert_eq!(panic_message(result.unwrap_err()), "caller's share");
            assert!(worker_finished.load(Ordering::SeqCst), "run unwound before its worker was done");
            still_usable(&pool);
        }
    }

    #[test]
    fn a_panic_in_a_workers_share_reaches_the_caller_and_the_pool_lives_on() {
        for n in [2, 3] {
            let pool = ThreadPool::new(n);
            for _ in 0..rounds(20) {
                let joined = AtomicUsize::new(0);
                let result = catch_unwind(AssertUnwindSafe(|| {
                    pool.run(&|thread| {
                        wait_for_a_worker(&joined);
                        if thread != 0 {
                            panic!("worker's share");
                        }
                    })
                }));
                assert_eq!(panic_message(result.unwrap_err()), "worker's share");
                still_usable(&pool);
            }
        }
        // A single-thread pool runs the job inline: the panic passes through.
        let pool = ThreadPool::new(1);
        assert!(catch_unwind(AssertUnwindSafe(|| pool.run(&|_| panic!("inline")))).is_err());
        still_usable(&pool);
    }
}
