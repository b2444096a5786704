//! Throughput measurement with llama-bench's conventions, so figures compare
//! directly: `ppN` evaluates a prompt of N tokens in one batch, `tgN` generates
//! N tokens one at a time from an empty context; tokenization and sampling are
//! excluded, and each test is run once to warm up, then `repetitions` times.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::model::Model;
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

pub fn run(
    model: &Model,
    test: Test,
    repetitions: usize,
    threads: usize,
    kv_type: KvType,
) -> Result<BenchResult, SessionError> {
    let n = test.tokens().max(1);
    let vocab = model.hparams().vocab_size;
    let context = (n + 1).next_power_of_two().max(64).min(model.hparams().max_seq_len as usize).max(n + 1);
    let batch = match test {
        Test::Prompt(_) => n.min(512),
        Test::Generate(_) => 1,
    };
    let mut session = Session::new(model, SessionOptions { context, batch, threads, kv_type, ..Default::default() })?;
    let input = tokens(n, vocab);
    let mut step_times = Vec::with_capacity(n * repetitions.max(1));
    let mut once = |step_times: &mut Vec<Duration>| -> Result<f64, SessionError> {
        session.reset();
        let start = Instant::now();
        match test {
            Test::Prompt(_) => {
                session.eval(&input)?;
            }
            Test::Generate(_) => {
                for &t in &input {
                    let step = Instant::now();
                    session.eval(&[t])?;
                    step_times.push(step.elapsed());
                }
            }
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    };
    once(&mut Vec::new())?; // warm-up: page in the weights, settle the threads
    let samples_tps = (0..repetitions.max(1)).map(|_| once(&mut step_times)).collect::<Result<Vec<_>, _>>()?;
    let mean = samples_tps.iter().sum::<f64>() / samples_tps.len() as f64;
    let var = if samples_tps.len() > 1 {
        samples_tps.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (samples_tps.len() - 1) as f64
    } else {
        0.0
    };
    Ok(BenchResult { test, samples_tps, mean_tps: mean, stddev_tps: var.sqrt(), steps: StepLatency::of(&step_times) })
}

/// The machine's own jitter, to read decode's tail against: `steps` steps of
/// fixed arithmetic lasting about `step` each, on `threads` threads that meet
/// at a barrier after every step (as the pool's threads meet after every
/// operation). The work never changes, so a slow step here is the machine's
/// doing (preemption, interrupts, a hypervisor running something else on
/// the core); where this loop's p99 / median is as high as decode's, the
/// engine is not what sets decode's tail.
pub fn fixed_work_latency(threads: usize, step: Duration, steps: usize) -> Option<StepLatency> {
    // A dependent multiply-add chain: pure core time, no memory traffic.
    fn chain(iterations: u64) -> f64 {
        let mut x = 1.0f64;
        for _ in 0..iterations {
            x = std::hint::black_box(x * 1.000_000_1 + 1e-9);
        }
        x
    }
    let calibration = 1 << 20;
    let start = Instant::now();
    chain(calibration);
    let per_second = calibration as f64 / start.elapsed().as_secs_f64().max(1e-9);
    let iterations = (per_second * step.as_secs_f64()).max(1.0) as u64;
    let barrier = Barrier::new(threads.max(1));
    let mut times = Vec::with_capacity(steps);
    std::thread::scope(|s| {
        for _ in 1..threads.max(1) {
            s.spawn(|| {
                for _ in 0..steps {
                    barrier.wait();
                    chain(iterations);
                    barrier.wait();
                }
            });
        }
        for _ in 0..steps {
            let start = Instant::now();
            barrier.wait();
            chain(iterations);
            barrier.wait();
            times.push(start.elapsed());
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
    fn fixed_work_runs_every_step_on_every_thread() {
        let l = fixed_work_latency(2, Duration::from_micros(200), 50).unwrap();
        assert_eq!(l.steps, 50);
        assert!(l.median_ms > 0.0 && l.p99_ms >= l.median_ms && l.max_ms >= l.p99_ms);
    }
}
