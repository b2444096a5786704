//! A persistent thread pool for the forward pass.
//!
//! A decode step of a small model takes a few milliseconds and runs a few
//! hundred parallel operations, so per-operation fork/join cost matters: the
//! workers are started once, wait for work on a spin barrier that spins
//! briefly and then parks (an idle session burns no CPU), and a dispatch
//! neither allocates nor boxes a closure. Work inside an operation is handed
//! out in chunks by an atomic counter; each chunk is computed by one thread in
//! a fixed order, so results do not depend on the thread count.
//!
//! This module and `mmap` are the only `unsafe` outside the SIMD kernels: a
//! borrowed job must be shared with threads that outlive the borrow (as in
//! rayon's and crossbeam's scopes), and threads must write disjoint parts of
//! one output buffer.
#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Spins before parking: long enough to cover the gap between two operations
/// of one token, short enough that an idle pool sleeps almost at once.
const SPIN_ITERATIONS: u32 = 20_000;

#[repr(align(128))]
struct CachePadded<T>(T);

/// The job being run: a type-erased `&dyn Fn(usize) + Sync` whose lifetime
/// [`ThreadPool::run`] guarantees.
type JobPtr = *const (dyn Fn(usize) + Sync + 'static);

struct Shared {
    /// Bumped once per job; workers wait for it to change.
    epoch: CachePadded<AtomicU64>,
    /// Workers that finished the current job.
    done: CachePadded<AtomicUsize>,
    job: Mutex<Option<SendPtr>>,
    /// Workers park here after spinning.
    wake: Condvar,
    sleepers: Mutex<usize>,
    stop: AtomicBool,
}

#[derive(Clone, Copy)]
struct SendPtr(JobPtr);
// SAFETY: the pointee is `Sync` (shared calls from many threads are allowed),
// and `ThreadPool::run` keeps it alive until every worker is done with it.
unsafe impl Send for SendPtr {}

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl ThreadPool {
    /// A pool of `n_threads` (the caller's thread counts as one).
    pub fn new(n_threads: usize) -> Self {
        let shared = Arc::new(Shared {
            epoch: CachePadded(AtomicU64::new(0)),
            done: CachePadded(AtomicUsize::new(0)),
            job: Mutex::new(None),
            wake: Condvar::new(),
            sleepers: Mutex::new(0),
            stop: AtomicBool::new(false),
        });
        let workers = (1..n_threads.max(1))
            .map(|index| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("gpt-fast-{index}"))
                    .spawn(move || worker(&shared, index))
                    .expect("spawning a worker thread")
            })
            .collect();
        Self { shared, workers }
    }

    pub fn n_threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `job(thread_index)` on every thread of the pool, the caller's as
    /// index 0, and returns when all have finished.
    pub fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            job(0);
            return;
        }
        let ptr: *const (dyn Fn(usize) + Sync + '_) = job;
        // SAFETY: only the lifetime is erased. The pointer is published to the
        // workers below and this function does not return before every worker
        // has counted itself done with this epoch's job, so no use outlives `job`.
        let ptr: JobPtr = unsafe { std::mem::transmute(ptr) };
        *self.shared.job.lock().expect("pool lock") = Some(SendPtr(ptr));
        self.shared.done.0.store(0, Ordering::Relaxed);
        self.shared.epoch.0.fetch_add(1, Ordering::Release);
        if *self.shared.sleepers.lock().expect("pool lock") > 0 {
            self.shared.wake.notify_all();
        }
        job(0);
        let mut spins = 0u32;
        while self.shared.done.0.load(Ordering::Acquire) < self.workers.len() {
            spins += 1;
            if spins < SPIN_ITERATIONS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        *self.shared.job.lock().expect("pool lock") = None;
    }
}

fn worker(shared: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        let epoch = loop {
            let epoch = shared.epoch.0.load(Ordering::Acquire);
            if epoch != seen || shared.stop.load(Ordering::Relaxed) {
                break epoch;
            }
            spins += 1;
            if spins < SPIN_ITERATIONS {
                std::hint::spin_loop();
                continue;
            }
            let mut sleepers = shared.sleepers.lock().expect("pool lock");
            *sleepers += 1;
            // Re-check under the lock: `run` bumps the epoch before it looks
            // for sleepers under this lock, so either we see the new epoch here
            // or it sees us and notifies.
            while shared.epoch.0.load(Ordering::Acquire) == seen && !shared.stop.load(Ordering::Relaxed) {
                sleepers = shared.wake.wait(sleepers).expect("pool lock");
            }
            *sleepers -= 1;
            spins = 0;
        };
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        seen = epoch;
        let job = shared.job.lock().expect("pool lock").expect("a job is published with its epoch");
        // SAFETY: `run` published this pointer for this epoch and waits for our
        // `done` increment below before the borrow it came from ends.
        unsafe { (*job.0)(index) };
        shared.done.0.fetch_add(1, Ordering::Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        {
            let _guard = self.shared.sleepers.lock().expect("pool lock");
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
    pub fn new(n_chunks: usize) -> Self {
        Self { next: AtomicUsize::new(0), n_chunks }
    }

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
    fn every_thread_runs_every_job() {
        for n in [1, 2, 3] {
            let pool = ThreadPool::new(n);
            for round in 0..200u64 {
                let hits = AtomicU64::new(0);
                pool.run(&|i| {
                    hits.fetch_add(1 << (8 * i), Ordering::Relaxed);
                });
                let want: u64 = (0..n).map(|i| 1u64 << (8 * i)).sum();
                assert_eq!(hits.load(Ordering::Relaxed), want, "round {round}");
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
        // Let the workers park, then wake them.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let hits = AtomicUsize::new(0);
        pool.run(&|_| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 3);
    }
}
