//! Tiny random GPT-2 and Llama models in Hugging Face format, converted, give
//! transformers' logits and greedy tokens (fixtures from
//! tools/fixtures/hf_tiny_models.py; no PyTorch needed here).

use std::path::{Path, PathBuf};

use gpt_fast::format::DType;
use gpt_fast::import::from_hf::HfSource;
use gpt_fast::model::{Model, ModelOptions};
use gpt_fast::session::{KvType, Session, SessionOptions};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf").join(name)
}

fn convert(name: &str, dtype: DType) -> PathBuf {
    let dir = fixture(name);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "hf-forward-{name}-{}-{}",
        dtype.name(),
        std::process::id()
    ));
    let source = HfSource::open(&dir).unwrap();
    gpt_fast::import::convert::convert(&source, &dir, &out, dtype, |_, _, _| {}).unwrap();
    out
}

fn argmax(row: &[f32]) -> u32 {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32
}

/// With an f32 KV cache: this checks the f32 path against transformers' f32
/// (tests/forward.rs and the SmolLM2 tests cover the f16 cache).
fn check(name: &str) {
    let model = Model::open(&convert(name, DType::F32), ModelOptions::default()).unwrap();
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap()).unwrap();
    let vocab = model.hparams().vocab_size as usize;
    for case in reference["cases"].as_array().unwrap() {
        let ids: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let options =
            SessionOptions { context: 64, batch: 32, all_logits: true, kv_type: KvType::F32, ..Default::default() };
        let mut session = Session::new(&model, options).unwrap();
        let logits = session.eval_all(&ids).unwrap().to_vec();
        for (pos, want) in case["logits"].as_array().unwrap().iter().enumerate() {
            let want: Vec<f32> = want.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            let row = &logits[pos * vocab..][..vocab];
            let max_abs = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (t, (a, b)) in row.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * max_abs.max(1.0),
                    "{name} position {pos} token {t}: {a} vs transformers {b}"
                );
            }
        }
        let greedy: Vec<u32> = case["greedy"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let options = SessionOptions { context: 64, kv_type: KvType::F32, ..Default::default() };
        let mut session = Session::new(&model, options).unwrap();
        let mut next = argmax(session.eval(&ids).unwrap());
        let mut got = vec![next];
        while got.len() < greedy.len() {
            next = argmax(session.eval(&[next]).unwrap());
            got.push(next);
        }
        assert_eq!(got, greedy, "{name}: greedy tokens for {ids:?}");
    }
}

#[test]
fn tiny_gpt2_matches_transformers() {
    check("tiny-gpt2");
}

#[test]
fn tiny_llama_matches_transformers() {
    check("tiny-llama");
}
