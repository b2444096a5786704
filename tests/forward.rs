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

/// `--quant q4`'s mix on a llama whose 256-wide rows take Q4_K and whose
/// 288-wide `ffn_down` rows q4_kr: the file holds both (and its embedding as
/// q8), runs, and its logits stay near the f32 model's, further than q8's.
#[test]
fn own_q4_runs_close_to_f32() {
    let mut h = gpt_fast::synthetic::config("test-llama").unwrap();
    (h.dim, h.ffn_dim) = (256, 288);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let write = |name: &str, dtype: &dyn Fn(&gpt_fast::format::TensorSpec) -> DType| {
        let path = dir.join(format!("forward-q4-{name}-{}", std::process::id()));
        let specs = gpt_fast::format::expected_tensors(&h);
        let header = gpt_fast::import::weight_types::dominant(&specs, specs.iter().map(dtype));
        gpt_fast::synthetic::write_typed(&path, &h, header, dtype, 5, |_, _| {}).unwrap();
        path
    };
    let q4 = write("q4", &gpt_fast::import::weight_types::q4_dtype);
    let (f32_file, q8_file) = (write("f32", &|s| s.dtype(DType::F32)), write("q8", &|s| s.dtype(DType::Q8)));
    let model = Model::open(&q4, ModelOptions::default()).unwrap();
    let types: Vec<DType> = gpt_fast::format::expected_tensors(&h)
        .iter()
        .map(|spec| model.file().tensor(&spec.name).unwrap().dtype)
        .collect();
    for dtype in [DType::Q4_K, DType::Q4_KR, DType::Q8] {
        assert!(types.contains(&dtype), "{dtype:?} in {types:?}");
    }
    let tokens = prompt(12, h.vocab_size);
    let logits = |path: &Path| {
        let model = Model::open(path, ModelOptions::default()).unwrap();
        Session::new(&model, SessionOptions::default()).unwrap().eval(&tokens).unwrap().to_vec()
    };
    let (want, got, q8) = (logits(&f32_file), logits(&q4), logits(&q8_file));
    let diff = |a: &[f32]| a.iter().zip(&want).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(diff(&got) < 0.1 * max_abs(&want), "q4 vs f32 logits differ by {} of {}", diff(&got), max_abs(&want));
    assert!(diff(&got) > diff(&q8), "q4 ({}) is coarser than q8 ({})", diff(&got), diff(&q8));
    for path in [q4, f32_file, q8_file] {
        std::fs::remove_file(path).unwrap();
    }
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
    // Short prompts too, and 25 tokens on 8 threads: groups of 4 tokens and
    // one of a single token, which the kernels compute as the others.
    for (config, dtype) in [("test-llama", DType::Q8), ("test-gpt2", DType::Q8), ("test-llama", DType::F16)] {
        let model = Model::open(&synthetic("threads", config, dtype), ModelOptions::default()).unwrap();
        let tokens = prompt(28, 300);
        let run = |threads, n_prompt: usize| {
            let mut s = Session::new(
                &model,
                SessionOptions {
                    context: 64,
                    batch: 32,
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
        for n_prompt in [2, 3, 5, 7, 16, 25] {
            let one = run(1, n_prompt);
            for threads in [2, 3, 8] {
                assert!(
                    one == run(threads, n_prompt),
                    "{config} {dtype:?}: logits differ with {threads} threads, prompt {n_prompt}"
                );
            }
        }
    }
}
