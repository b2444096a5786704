//! Whole-model throughput through the library, llama-bench style, in tokens/s:
//!
//! - `pp128`: a 128-token prompt evaluated in one batch (from an empty cache);
//! - `tg16`: 16 tokens decoded one at a time after an 8-token prompt (the
//!   prompt is not timed).
//!
//! Models: synthetic SmolLM2-135M (random weights, real shapes) at q8 and f16,
//! written to a temporary directory, and, when `GPT_FAST_BENCH_MODEL` names a
//! gpt-fast model file (e.g. the real SmolLM2 converted with
//! `convert "$(tools/fetch-model.sh)" -o smollm2-q8.bin --quant q8`), that
//! file too. Two threads, as on the CI machine.
//!
//!     cargo bench --bench end_to_end
//!     GPT_FAST_BENCH_MODEL=smollm2-q8.bin cargo bench --bench end_to_end
//!
//! Each model is checked before it is timed: logits of the right length, all
//! finite, and the same for the same input twice.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use gpt_fast::format::DType;
use gpt_fast::model::{Model, ModelOptions};
use gpt_fast::session::{Session, SessionOptions};

const THREADS: usize = 2;
const PROMPT: usize = 128;
const DECODE_PROMPT: usize = 8;
const DECODE: usize = 16;

/// Deterministic, in-range token ids (the content does not change the cost).
fn tokens(n: usize, vocab: u32, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i.wrapping_add(salt).wrapping_mul(2_654_435_761) >> 7) % vocab).collect()
}

/// Removes the synthetic models when the bench ends (or panics).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check(model: &Model, name: &str) {
    let vocab = model.hparams().vocab_size;
    let mut session = Session::new(model, SessionOptions { context: 256, threads: THREADS, ..Default::default() })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let input = tokens(PROMPT, vocab, 0);
    let first = session.eval(&input).unwrap().to_vec();
    assert_eq!(first.len(), vocab as usize, "{name}: logits length");
    assert!(first.iter().all(|v| v.is_finite()), "{name}: non-finite logits");
    assert!(first.iter().any(|&v| v != first[0]), "{name}: constant logits");
    session.reset();
    assert_eq!(session.eval(&input).unwrap(), &first[..], "{name}: same input, different logits");
}

fn bench_model(c: &mut Criterion, name: &str, path: &Path) {
    let model = Model::open(path, ModelOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    check(&model, name);
    let vocab = model.hparams().vocab_size;
    let mut group = c.benchmark_group("end_to_end");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));

    let options = SessionOptions { context: 256, batch: PROMPT, threads: THREADS, ..Default::default() };
    let mut session = Session::new(&model, options).unwrap();
    let prompt = tokens(PROMPT, vocab, 0);
    group.throughput(Throughput::Elements(PROMPT as u64));
    group.bench_function(BenchmarkId::new(format!("pp{PROMPT}"), name), |b| {
        b.iter(|| {
            session.reset();
            session.eval(&prompt).unwrap().len()
        })
    });

    let (short, decode) = (tokens(DECODE_PROMPT, vocab, 1), tokens(DECODE, vocab, 2));
    group.throughput(Throughput::Elements(DECODE as u64));
    group.bench_function(BenchmarkId::new(format!("tg{DECODE}"), name), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                session.reset();
                session.eval(&short).unwrap();
                let start = Instant::now();
                for &t in &decode {
                    session.eval(&[t]).unwrap();
                }
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn end_to_end(c: &mut Criterion) {
    let dir = TempDir(Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("end_to_end-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let hparams = gpt_fast::synthetic::config("smollm2-135m").expect("named configuration");
    for dtype in [DType::Q8, DType::F16] {
        let path = dir.0.join(format!("smollm2-135m-{}.bin", dtype.name()));
        gpt_fast::synthetic::write(&path, &hparams, dtype, 1, |_, _| {}).unwrap();
        bench_model(c, &format!("synthetic-smollm2-135m-{}", dtype.name()), &path);
        std::fs::remove_file(&path).unwrap();
    }
    match std::env::var_os("GPT_FAST_BENCH_MODEL") {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            let name = path.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
            bench_model(c, &name, &path);
        }
        _ => eprintln!(
            "note: GPT_FAST_BENCH_MODEL not set; skipping the real model (convert \"$(tools/fetch-model.sh)\" -o smollm2-q8.bin --quant q8, then set it to that file)"
        ),
    }
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
