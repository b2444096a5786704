//! Throughput measurement with llama-bench's conventions, so figures compare
//! directly: `ppN` evaluates a prompt of N tokens in one batch, `tgN` generates
//! N tokens one at a time from an empty context; tokenization and sampling are
//! excluded, and each test is run once to warm up, then `repetitions` times.

use std::time::Instant;

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

/// Mean and standard deviation of tokens per second over the repetitions.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchResult {
    pub test: Test,
    pub samples_tps: Vec<f64>,
    pub mean_tps: f64,
    pub stddev_tps: f64,
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
    let mut once = || -> Result<f64, SessionError> {
        session.reset();
        let start = Instant::now();
        match test {
            Test::Prompt(_) => {
                session.eval(&input)?;
            }
            Test::Generate(_) => {
                for &t in &input {
                    session.eval(&[t])?;
                }
            }
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    };
    once()?; // warm-up: page in the weights, settle the threads
    let samples_tps = (0..repetitions.max(1)).map(|_| once()).collect::<Result<Vec<_>, _>>()?;
    let mean = samples_tps.iter().sum::<f64>() / samples_tps.len() as f64;
    let var = if samples_tps.len() > 1 {
        samples_tps.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (samples_tps.len() - 1) as f64
    } else {
        0.0
    };
    Ok(BenchResult { test, samples_tps, mean_tps: mean, stddev_tps: var.sqrt() })
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
