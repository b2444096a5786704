//! Throughput measurement with llama-bench's conventions, so figures compare
//! directly: `ppN` evaluates a prompt of N tokens in one batch, `tgN` generates
//! N tokens one at a time from an empty context; tokenization and sampling are
//! excluded, and each test is run once to warm up, then `repetitions` times.
//! `tgN` of B sequences (llama-batched-bench's S_TG) decodes B sequences
//! together, one token of each per step through [`Forward::run_seqs`], the
//! step `gpt-fast serve` runs for its slots.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::model::kv_cache::DEFAULT_SINKS;
use crate::model::{Forward, ForwardSize, KvCache, LogitsMode, Model, Role, SeqRun};
use crate::session::{KvType, Session, SessionError, SessionOptions};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Test {
    Prompt(usize),
    Generate(usize),
}

impl Test {
    pub fn name(&self) -> String {
        match self {
            Self::Prompt(n) => format!("pp{n}"),
            Self::Generate(n) => format!("tg{n}"),
        }
    }

    fn tokens(&self) -> usize {
        match *self {
            Self::Prompt(n) | Self::Generate(n) => n,
        }
    }
}

/// Mean and standard deviation of tokens per second over the repetitions;
/// for `tgN`, the latency of its steps too.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchResult {
    pub test: Test,
    pub samples_tps: Vec<f64>,
    pub mean_tps: f64,
    pub stddev_tps: f64,
    /// One decode step's latency over every measured repetition (`tgN` only).
    pub steps: Option<StepLatency>,
}

/// Latency percentiles of a run of steps, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLatency {
    pub steps: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl StepLatency {
    /// The percentiles of `times` (nearest rank); `None` for no steps.
    pub fn of(times: &[Duration]) -> Option<Self> {
        let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
        (!ms.is_empty()).then(|| Self {
            steps: ms.len(),
            median_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        })
    }

    /// How much longer the slow steps are: p99 / median.
    pub fn tail(&self) -> f64 {
        self.p99_ms / self.median_ms
    }
}

/// Deterministic, in-range token ids (the content does not change the cost).
fn tokens(n: usize, vocab: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) % vocab).collect()
}

/// Runs `test` `repetitions` times after a warm-up, each time from a context
/// that already holds `depth` tokens (evaluated untimed, in batches).
pub fn run(
    model: &Model,
    test: Test,
    depth: usize,
    repetitions: usize,
    threads: usize,
    kv_type: KvType,
) -> Result<BenchResult, SessionError> {
    let n = test.tokens().max(1);
    let vocab = model.hparams().vocab_size;
    let needed = depth + n + 1;
    let context = needed.next_power_of_two().max(64).min(model.hparams().max_seq_len as usize).max(needed);
    let batch = match test {
        Test::Prompt(_) => n.max(depth).min(512),
        Test::Generate(_) => depth.clamp(1, 512),
    };
    let mut session = Session::new(model, SessionOptions { context, batch, threads, kv_type, ..Default::default() })?;
    let history = tokens(depth, vocab);
    let input = tokens(depth + n, vocab).split_off(depth);
    let mut step_times = Vec::with_capacity(n * repetitions.max(1));
    let mut once = |step_times: &mut Vec<Duration>| -> Result<f64, SessionError> {
        session.reset();
        if depth > 0 {
            session.eval(&history)?;
        }
        let start = Instant::now();
        match test {
            Test::Prompt(_) => {
                session.eval(&input)?;
            }
            Test::Generate(_) => {
                for &t in &input {
                    let step = Instant::now();
                    session.decode(t)?;
                    step_times.push(step.elapsed());
                }
            }
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    };
    once(&mut Vec::new())?; // warm-up: page in the weights, settle the threads
    let samples_tps = (0..repetitions.max(1)).map(|_| once(&mut step_times)).collect::<Result<Vec<_>, _>>()?;
    Ok(BenchResult::of(test, samples_tps, &step_times))
}

/// `tgN` for `seqs` sequences decoding together: each step evaluates one
/// token of every sequence in one batch, each sequence from a context that
/// holds `depth` tokens of its own. `mean_tps` is the aggregate (all the
/// sequences' tokens per second; one sequence's is that over `seqs`), the
/// step latencies those of the batched steps.
pub fn run_batched(
    model: &Model,
    n: usize,
    seqs: usize,
    depth: usize,
    repetitions: usize,
    threads: usize,
    kv_type: KvType,
) -> Result<BenchResult, SessionError> {
    let (n, seqs) = (n.max(1), seqs.max(1));
    let h = model.hparams();
    let max = h.max_seq_len as usize;
    let needed = depth + n + 1;
    let context = needed.next_power_of_two().max(64).min(max).max(needed);
    if context > max {
        return Err(SessionError::BadContext { context, max });
    }
    let alloc = |e: std::io::Error| SessionError::Alloc { context, reason: e.to_string() };
    let caches = (0..seqs).map(|_| KvCache::new(h, context, DEFAULT_SINKS, kv_type).map_err(alloc));
    let mut caches = caches.collect::<Result<Vec<_>, _>>()?;
    let prefill = depth.clamp(1, 512);
    let size = ForwardSize { sinks: DEFAULT_SINKS, batch_cap: prefill.max(seqs), max_seqs: seqs, all_logits: false };
    let mut forward = Forward::new(h, size, threads);
    let (w, k) = (model.weights(), model.kernels());
    // Each sequence its own tokens, as the server's slots have.
    let history: Vec<Vec<u32>> = (0..seqs).map(|s| tokens(depth + s, h.vocab_size).split_off(s)).collect();
    let input: Vec<Vec<u32>> =
        (0..seqs).map(|s| tokens(depth + n * (s + 1), h.vocab_size).split_off(depth + n * s)).collect();
    let mut batch = vec![0u32; seqs];
    let mut runs: Vec<SeqRun> = Vec::with_capacity(seqs);
    let mut step_times = Vec::with_capacity(n * repetitions.max(1));
    let mut once = |step_times: &mut Vec<Duration>| {
        // A cache's positions are overwritten from 0, so nothing needs clearing.
        for (seq, history) in history.iter().enumerate() {
            for (c, chunk) in history.chunks(prefill).enumerate() {
                let (pos, len) = (c * prefill, chunk.len());
                let run = [SeqRun { seq, pos, len, logits: LogitsMode::None, role: Role::Prefill }];
                forward.run_seqs(&w, h, k, &mut caches, chunk, &run);
            }
        }
        let start = Instant::now();
        for step in 0..n {
            let at = Instant::now();
            runs.clear();
            for (seq, input) in input.iter().enumerate() {
                batch[seq] = input[step];
                runs.push(SeqRun { seq, pos: depth + step, len: 1, logits: LogitsMode::Last, role: Role::Decode });
            }
            forward.run_seqs(&w, h, k, &mut caches, &batch, &runs);
            step_times.push(at.elapsed());
        }
        (n * seqs) as f64 / start.elapsed().as_secs_f64()
    };
    once(&mut Vec::new()); // warm-up
    let samples_tps: Vec<f64> = (0..repetitions.max(1)).map(|_| once(&mut step_times)).collect();
    Ok(BenchResult::of(Test::Generate(n), samples_tps, &step_times))
}

impl BenchResult {
    fn of(test: Test, samples_tps: Vec<f64>, step_times: &[Duration]) -> Self {
        let mean = samples_tps.iter().sum::<f64>() / samples_tps.len() as f64;
        let var = if samples_tps.len() > 1 {
            samples_tps.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (samples_tps.len() - 1) as f64
        } else {
            0.0
        };
        Self { test, samples_tps, mean_tps: mean, stddev_tps: var.sqrt(), steps: StepLatency::of(step_times) }
    }
}

/// Decode without the arithmetic, to read decode's tail against: `steps`
/// steps that each read `weights` (the bytes a decoded token reads) with a
/// plain read loop, split across `threads` threads that meet at a barrier
/// after every step (as the pool's threads do after every operation). The
/// work never changes, so a slow step here is the machine's doing
/// (preemption, interrupts, neighbours on the host taking the cores or the
/// memory bandwidth); where this loop's p99 / median is as high as decode's,
/// the engine is not what sets decode's tail.
pub fn weight_read_latency(weights: &[&[u8]], threads: usize, steps: usize) -> Option<StepLatency> {
    const CHUNK: usize = 256 << 10;
    let chunks: Vec<&[u8]> = weights.iter().flat_map(|w| w.chunks(CHUNK)).collect();
    let threads = threads.max(1);
    let read = |thread: usize| {
        let mut sum = 0u64;
        for chunk in chunks.iter().skip(thread).step_by(threads) {
            let (head, words, tail) = bytemuck::pod_align_to::<u8, u64>(chunk);
            sum = words.iter().fold(sum, |a, &w| a.wrapping_add(w));
            sum = head.iter().chain(tail).fold(sum, |a, &b| a.wrapping_add(u64::from(b)));
        }
        std::hint::black_box(sum);
    };
    let barrier = Barrier::new(threads);
    let mut times = Vec::with_capacity(steps);
    std::thread::scope(|s| {
        for thread in 1..threads {
            let (barrier, read) = (&barrier, &read);
            s.spawn(move || {
                for _ in 0..=steps {
                    barrier.wait();
                    read(thread);
                    barrier.wait();
                }
            });
        }
        for step in 0..=steps {
            let start = Instant::now();
            barrier.wait();
            read(0);
            barrier.wait();
            if step > 0 {
                times.push(start.elapsed()); // step 0 warms up
            }
        }
    });
    StepLatency::of(&times)
}

/// Bytes [`read_bandwidth`] streams: more than any cache, yet small enough
/// for an edge device.
pub const READ_LOOP_BYTES: usize = 1 << 30;

/// The memory-bandwidth roofline: GB/s of a plain read loop (a sum of 64-bit
/// words, no SIMD intrinsics) over `bytes` split across `threads` threads;
/// the best of a few runs after a first one that faults the pages in. Decode
/// reads every weight once per token, so weight bytes × tokens/s can at most
/// reach this.
pub fn read_bandwidth(threads: usize, bytes: usize) -> f64 {
    let words = vec![1u64; bytes / 8];
    let part = words.len().div_ceil(threads.max(1));
    let once = || {
        let start = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let sums: Vec<_> =
                words.chunks(part).map(|c| s.spawn(move || c.iter().fold(0u64, |a, &w| a.wrapping_add(w)))).collect();
            sums.into_iter().map(|h| h.join().expect("read loop thread")).sum()
        });
        assert_eq!(total, words.len() as u64, "the read loop must read every word");
        (words.len() * 8) as f64 / start.elapsed().as_secs_f64() / 1e9
    };
    once();
    (0..3).map(|_| once()).fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_percentiles_are_nearest_rank() {
        let times: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let l = StepLatency::of(&times).unwrap();
        assert_eq!((l.steps, l.median_ms, l.p90_ms, l.p99_ms, l.max_ms), (100, 51.0, 90.0, 99.0, 100.0));
        assert!((l.tail() - 99.0 / 51.0).abs() < 1e-12);
        assert_eq!(StepLatency::of(&[]), None);
    }

    #[test]
    fn weight_reads_time_every_step() {
        let bytes = vec![1u8; 3 << 20];
        let parts = [&bytes[..1 << 20], &bytes[1 << 20..]];
        let l = weight_read_latency(&parts, 2, 50).unwrap();
        assert_eq!(l.steps, 50);
        assert!(l.median_ms > 0.0 && l.p99_ms >= l.median_ms && l.max_ms >= l.p99_ms);
    }
}
