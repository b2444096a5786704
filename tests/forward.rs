//! The forward pass on synthetic models of both families: incremental decoding
//! through the KV cache equals a full recompute, batch size does not change the
//! result, and bad inputs are errors.

use std::path::{Path, PathBuf};

use gpt_fast::format::DType;
use gpt_fast::model::{Model, ModelError, ModelOptions};
use gpt_fast::session::{Session, SessionError, SessionOptions};

/// Writes a synthetic model; `test` keeps concurrently running tests' files apart.
fn synthetic(test: &str, config: &str, dtype: DType) -> PathBuf {
    let name = format!("forward-{test}-{config}-{}-{}", dtype.name(), std::process::id());
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let h = gpt_fast::synthetic::config(config).unwrap();
    gpt_fast::synthetic::write(&path, &h, dtype, 3, |_, _| {}).unwrap();
    path
}

fn prompt(len: usize, vocab: u32) -> Vec<u32> {
    (0..len as u32).map(|i| (i * 7919 + 13) % vocab).collect()
}

fn max_abs(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

#[test]
fn cached_decoding_equals_full_recompute() {
    for config in ["test-llama", "test-gpt2"] {
        for dtype in [DType::F32, DType::F16, DType::Q8] {
            let model = Model::open(&synthetic("cache", config, dtype), ModelOptions::default()).unwrap();
            let vocab = model.hparams().vocab_size as usize;
            let tokens = prompt(20, vocab as u32);
            let opts = SessionOptions {
                context: 64,
                batch: 32,
                all_logits: true,
                threads: 1,
                context_shift: false,
                ..Default::default()
            };
            let mut full = Session::new(&model, opts).unwrap();
            let all = full.eval_all(&tokens).unwrap().to_vec();
            assert_eq!(all.len(), tokens.len() * vocab);
            assert!(all.iter().all(|v| v.is_finite()));
            assert!(max_abs(&all) > 0.0);

            let mut inc = Session::new(&model, SessionOptions { all_logits: false, ..opts }).unwrap();
            for (t, &tok) in tokens.iter().enumerate() {
                let logits = inc.eval(&[tok]).unwrap();
                let want = &all[t * vocab..][..vocab];
                let tol = 1e-5 * max_abs(want);
                for (a, b) in logits.iter().zip(want) {
                    assert!((a - b).abs() <= tol, "{config} {dtype:?} position {t}: {a} vs {b}");
                }
            }
            assert_eq!(inc.position(), tokens.len());

            // A prompt split into several prefill batches gives the same last logits.
            let mut chunked = Session::new(&model, SessionOptions { batch: 6, all_logits: false, ..opts }).unwrap();
            let last = chunked.eval(&tokens).unwrap();
            let want = &all[(tokens.len() - 1) * vocab..];
            let tol = 1e-5 * max_abs(want);
            assert!(last.iter().zip(want).all(|(a, b)| (a - b).abs() <= tol), "{config} {dtype:?} chunked prefill");
        }
    }
}

#[test]
fn lower_precision_at_load_and_higher_refused() {
    let f16 = synthetic("precision", "test-llama", DType::F16);
    let model = Model::open(&f16, ModelOptions { quant: Some(DType::Q8), ..Default::default() }).unwrap();
    assert!(model.converted_at_load());
    assert_eq!(model.dtype(), DType::Q8);
    let reference = Model::open(&f16, ModelOptions::default()).unwrap();
    let tokens = prompt(8, 300);
    let mut a = Session::new(&model, SessionOptions::default()).unwrap();
    let mut b = Session::new(&reference, SessionOptions::default()).unwrap();
    let (la, lb) = (a.eval(&tokens).unwrap().to_vec(), b.eval(&tokens).unwrap());
    let diff = la.iter().zip(lb).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(diff > 0.0 && diff < 0.05 * max_abs(lb), "q8 vs f16 logits differ by {diff}");

    let err = Model::open(&f16, ModelOptions { quant: Some(DType::F32), ..Default::default() }).err().unwrap();
    assert!(matches!(err, ModelError::Precision { .. }), "{err}");
    assert!(err.to_string().contains("f16"));
}

#[test]
fn bad_session_inputs_are_errors() {
    let model = Model::open(&synthetic("inputs", "test-gpt2", DType::Q8), ModelOptions::default()).unwrap();
    let mut s = Session::new(
        &model,
        SessionOptions {
            context: 16,
            batch: 8,
            all_logits: false,
            threads: 2,
            context_shift: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.eval(&[]).unwrap_err(), SessionError::Empty);
    assert_eq!(s.eval(&[300]).unwrap_err(), SessionError::TokenOutOfRange { id: 300, vocab: 300 });
    assert_eq!(s.eval(&prompt(17, 300)).unwrap_err(), SessionError::ContextFull { needed: 17, context: 16 });
    s.eval(&prompt(16, 300)).unwrap();
    assert_eq!(s.eval(&[1]).unwrap_err(), SessionError::ContextFull { needed: 17, context: 16 });
    s.reset();
    s.eval(&[1]).unwrap();
    // GPT-2's learned positions cap the context at the trained length.
    let too_long = SessionOptions { context: 5000, ..Default::default() };
    assert!(matches!(Session::new(&model, too_long).err().unwrap(), SessionError::BadContext { .. }));
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    // Short prompts too: a thread's share of a few tokens must never be a
    // single token (the one-token matmul sums in another order).
    for (config, dtype) in [("test-llama", DType::Q8), ("test-gpt2", DType::Q8), ("test-llama", DType::F16)] {
        let model = Model::open(&synthetic("threads", config, dtype), ModelOptions::default()).unwrap();
        let tokens = prompt(19, 300);
        let run = |threads, n_prompt: usize| {
            let mut s = Session::new(
                &model,
                SessionOptions {
                    context: 64,
                    batch: 16,
                    all_logits: true,
                    threads,
                    context_shift: false,
                    ..Default::default()
                },
            )
            .unwrap();
            let mut all = s.eval_all(&tokens[..n_prompt]).unwrap().to_vec();
            for &t in &tokens[n_prompt..] {
                all.extend_from_slice(s.eval(&[t]).unwrap());
            }
            all
        };
        for n_prompt in [2, 3, 5, 7, 16] {
            let one = run(1, n_prompt);
            for threads in [2, 3] {
                assert!(
                    one == run(threads, n_prompt),
                    "{config} {dtype:?}: logits differ with {threads} threads, prompt {n_prompt}"
                );
            }
        }
    }
}
