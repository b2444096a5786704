//! Throughput measurement with llama-bench's conventions, so figures compare
//! directly: `ppN` evaluates a prompt of N tokens in one batch, `tgN` generates
//! N tokens one at a time from an empty context; tokenization and sampling are
//! excluded, and each test is run once to warm up, then `repetitions` times.

use std::time::Instant;

use crate::model::Model;
use crate::session::{Session, SessionError, SessionOptions};

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

pub fn run(model: &Model, test: Test, repetitions: usize, threads: usize) -> Result<BenchResult, SessionError> {
    let n = test.tokens().max(1);
    let vocab = model.hparams().vocab_size;
    let context = (n + 1).next_power_of_two().max(64).min(model.hparams().max_seq_len as usize).max(n + 1);
    let batch = match test {
        Test::Prompt(_) => n.min(512),
        Test::Generate(_) => 1,
    };
    let mut session = Session::new(model, SessionOptions { context, batch, threads, ..Default::default() })?;
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
