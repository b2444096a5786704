//! SmolLM2-135M-Instruct against llama.cpp: the GGUF from tools/fetch-model.sh
//! converted to gpt-fast's f32 file must give llama.cpp's F32 logits and greedy
//! tokens (fixture: tools/fixtures/smollm2_reference.py).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use gpt_fast::format::DType;
use gpt_fast::model::{Model, ModelOptions};
use gpt_fast::session::{KvType, Session, SessionOptions};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The real model converted to `dtype`, once per test binary.
fn converted(dtype: DType) -> PathBuf {
    static GGUF: OnceLock<PathBuf> = OnceLock::new();
    let gguf = GGUF.get_or_init(|| {
        let out = Command::new(root().join("tools/fetch-model.sh")).output().expect("running tools/fetch-model.sh");
        assert!(out.status.success(), "fetch-model.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    });
    let path =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("smollm2-{}-{}.bin", dtype.name(), std::process::id()));
    if !path.exists() {
        let source = gpt_fast::import::from_gguf::GgufSource::open(gguf).unwrap();
        gpt_fast::import::convert::convert(&source, gguf, &path, dtype, |_, _, _| {}).unwrap();
    }
    path
}

fn reference() -> Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/smollm2/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// With an f32 KV cache, so the f32 path is compared with llama.cpp's F32 run;
/// [`f16_kv_cache_stays_close_to_f32`] bounds what the default cache changes.
#[test]
fn f32_logits_and_greedy_tokens_match_llama_cpp() {
    let model = Model::open(&converted(DType::F32), ModelOptions::default()).unwrap();
    let reference = reference();
    let fixed = ids(&reference["fixed_ids"]);
    let vocab = model.hparams().vocab_size as usize;
    for prompt in reference["prompts"].as_array().unwrap() {
        let text = prompt["text"].as_str().unwrap();
        let tokens = ids(&prompt["ids"]);
        // The tokenizer agrees with llama.cpp's on the prompt itself.
        assert_eq!(model.tokenizer().encode_prompt(text, true), tokens, "{text:?}");

        let options =
            SessionOptions { context: 128, batch: 64, all_logits: true, kv_type: KvType::F32, ..Default::default() };
        let mut session = Session::new(&model, options).unwrap();
        let logits = session.eval_all(&tokens).unwrap().to_vec();
        for (pos, want) in prompt["positions"].as_array().unwrap().iter().enumerate() {
            let row = &logits[pos * vocab..][..vocab];
            let max_abs = want["max_abs"].as_f64().unwrap() as f32;
            let tol = 1e-3 * max_abs;
            let argmax = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
            assert_eq!(argmax as u64, want["argmax"].as_u64().unwrap(), "{text:?} position {pos}: argmax");
            let checks = ids(&want["top_ids"])
                .into_iter()
                .zip(want["top_logits"].as_array().unwrap())
                .chain(fixed.iter().copied().zip(want["fixed_logits"].as_array().unwrap()));
            for (id, value) in checks {
                let (got, expected) = (row[id as usize], value.as_f64().unwrap() as f32);
                assert!(
                    (got - expected).abs() <= tol,
                    "{text:?} position {pos} token {id}: {got} vs llama.cpp {expected} (tolerance {tol})"
                );
            }
        }

        // 32 greedy tokens, without stopping at EOS (as the fixture's loop).
        let options = SessionOptions { context: 128, kv_type: KvType::F32, ..Default::default() };
        let mut session = Session::new(&model, options).unwrap();
        let mut next = argmax(session.eval(&tokens).unwrap());
        let mut greedy = vec![next];
        while greedy.len() < 32 {
            next = argmax(session.eval(&[next]).unwrap());
            greedy.push(next);
        }
        assert_eq!(greedy, ids(&prompt["greedy"]), "{text:?}: greedy continuation");
    }
}

fn argmax(logits: &[f32]) -> u32 {
    logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32
}

/// Weights only: every session here has an f32 KV cache.
#[test]
fn q8_and_f16_files_stay_close_to_f32() {
    let f32_model = Model::open(&converted(DType::F32), ModelOptions::default()).unwrap();
    let prompt: Vec<u32> = ids(&reference()["prompts"][0]["ids"]);
    let f32_kv = SessionOptions { context: 64, kv_type: KvType::F32, ..Default::default() };
    let mut s = Session::new(&f32_model, f32_kv).unwrap();
    let want = s.eval(&prompt).unwrap().to_vec();
    // Budgets (fractions of max |logit|) for the largest and the RMS difference:
    // q8 quantizes weights and activations to int8 per block of 32.
    for (dtype, max_budget, rms_budget) in [(DType::F16, 0.002, 0.0005), (DType::Q8, 0.06, 0.015)] {
        let path = converted(dtype);
        let len = std::fs::metadata(&path).unwrap().len();
        let limit = if dtype == DType::Q8 { 150_000_000 } else { 275_000_000 };
        assert!(len <= limit, "{dtype:?} file is {len} bytes");
        let model = Model::open(&path, ModelOptions::default()).unwrap();
        let mut s = Session::new(&model, f32_kv).unwrap();
        let got = s.eval(&prompt).unwrap();
        let max_abs = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let rms = (got.iter().zip(&want).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / got.len() as f32).sqrt();
        assert!(diff <= max_budget * max_abs, "{dtype:?}: max logit difference {diff} (max |logit| {max_abs})");
        assert!(rms <= rms_budget * max_abs, "{dtype:?}: RMS logit difference {rms} (max |logit| {max_abs})");
        assert_eq!(argmax(got), argmax(&want), "{dtype:?}: argmax");
    }
}

/// The default f16 KV cache against the f32 one, f32 weights: every prompt's
/// logits at every position (prefill) and 32 greedy tokens (decode).
#[test]
fn f16_kv_cache_stays_close_to_f32() {
    let model = Model::open(&converted(DType::F32), ModelOptions::default()).unwrap();
    let vocab = model.hparams().vocab_size as usize;
    let (mut worst_max, mut worst_rms) = (0f32, 0f32);
    for prompt in reference()["prompts"].as_array().unwrap() {
        let tokens = ids(&prompt["ids"]);
        let run = |kv_type| {
            let options = SessionOptions { context: 128, batch: 64, all_logits: true, kv_type, ..Default::default() };
            let mut s = Session::new(&model, options).unwrap();
            let logits = s.eval_all(&tokens).unwrap().to_vec();
            let mut next = argmax(&logits[(tokens.len() - 1) * vocab..]);
            let mut greedy = vec![next];
            while greedy.len() < 32 {
                next = argmax(s.eval(&[next]).unwrap());
                greedy.push(next);
            }
            (logits, greedy)
        };
        let ((got, got_greedy), (want, want_greedy)) = (run(KvType::F16), run(KvType::F32));
        for (pos, (g, w)) in got.chunks_exact(vocab).zip(want.chunks_exact(vocab)).enumerate() {
            let max_abs = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            let rms = (g.iter().zip(w).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / vocab as f32).sqrt();
            worst_max = worst_max.max(diff / max_abs);
            worst_rms = worst_rms.max(rms / max_abs);
            assert!(
                diff <= F16_KV_MAX * max_abs,
                "position {pos}: max logit difference {diff} (max |logit| {max_abs})"
            );
            assert!(rms <= F16_KV_RMS * max_abs, "position {pos}: RMS logit difference {rms} (max |logit| {max_abs})");
        }
        assert_eq!(got_greedy, want_greedy, "{:?}: greedy tokens with an f16 KV cache", prompt["text"]);
    }
    eprintln!("f16 KV cache: largest max / RMS logit difference {worst_max:e} / {worst_rms:e} of max |logit|");
}

/// Budgets, fractions of max |logit|, for the f16 cache's largest and RMS logit
/// difference: about 3× the largest seen (9.5e-4 and 4.1e-4; for scale, f16
/// weights are allowed 0.002 and 0.0005 above).
const F16_KV_MAX: f32 = 0.003;
const F16_KV_RMS: f32 = 0.0012;
