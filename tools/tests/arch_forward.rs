//! Tiny random models of each Llama-family architecture (Qwen2, Qwen3,
//! Llama 3 RoPE scaling, Mistral, Gemma 3, Phi-3), converted from their
//! Hugging Face folders and from llama.cpp's GGUF of the same weights, give
//! transformers' float32 logits at every position: within 1e-3 of the
//! largest |logit| of the position (fixtures from tools/fixtures/tiny_archs.py;
//! no PyTorch needed here).

use std::path::{Path, PathBuf};

use gpt_fast::format::DType;
use gpt_fast::import::from_gguf::GgufSource;
use gpt_fast::import::from_hf::HfSource;
use gpt_fast::import::source::Source;
use gpt_fast::model::{Model, ModelOptions};
use gpt_fast::session::{KvType, Session, SessionOptions};
use serde_json::Value;

/// The bound: |gpt-fast - transformers| <= 1e-3 x max|logit| at every position.
const TOLERANCE: f32 = 1e-3;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/archs")
}

/// Converts `input` to an f32 gpt-fast file.
fn convert(source: &dyn Source, input: &Path, tag: &str) -> Model {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("arch-{tag}-{}.gpt", std::process::id()));
    gpt_fast::import::convert::convert(source, input, &out, DType::F32, |_, _, _| {}).unwrap();
    let model = Model::open(&out, ModelOptions::default()).unwrap();
    std::fs::remove_file(&out).unwrap();
    model
}

struct Case {
    ids: Vec<u32>,
    /// `[position][vocab]`
    logits: Vec<Vec<f32>>,
}

fn reference(name: &str) -> Vec<Case> {
    let dir = fixtures().join(name);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let vocab = doc["vocab"].as_u64().unwrap() as usize;
    let raw = std::fs::read(dir.join("logits.f32")).unwrap();
    let all: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let mut at = 0;
    let cases: Vec<Case> = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids: Vec<u32> = c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let rows = c["rows"].as_u64().unwrap() as usize;
            let logits = (0..rows).map(|r| all[(at + r) * vocab..][..vocab].to_vec()).collect();
            at += rows;
            Case { ids, logits }
        })
        .collect();
    assert_eq!(at * vocab, all.len(), "{name}: logits.f32 holds more than the cases");
    cases
}

/// The largest `|a - b| / max|b|` of one position.
fn error(got: &[f32], want: &[f32]) -> f32 {
    let max_abs = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / max_abs
}

fn session(model: &Model, context: usize, batch: usize) -> Session<'_> {
    let options = SessionOptions { context, batch, all_logits: true, kv_type: KvType::F32, ..Default::default() };
    Session::new(model, options).unwrap()
}

/// Checks positions `..positions` (all if `None`) of every case, by prefill
/// (one batch) and by decode (one token at a time), and returns the largest
/// relative error seen.
fn check(model: &Model, cases: &[Case], what: &str, positions: Option<usize>) -> f32 {
    let vocab = model.hparams().vocab_size as usize;
    let mut worst = 0f32;
    for case in cases {
        let n = positions.map_or(case.ids.len(), |p| p.min(case.ids.len()));
        let mut s = session(model, 64, 32);
        let prefill = s.eval_all(&case.ids[..n]).unwrap().to_vec();
        let mut s = session(model, 64, 1);
        for pos in 0..n {
            let decoded = s.eval(&case.ids[pos..pos + 1]).unwrap().to_vec();
            for (how, got) in [("prefill", &prefill[pos * vocab..][..vocab]), ("decode", &decoded[..])] {
                let e = error(got, &case.logits[pos]);
                assert!(e <= TOLERANCE, "{what} {how}: {} ids, position {pos}: error {e:e} of max|logit|", n);
                worst = worst.max(e);
            }
        }
    }
    worst
}

fn check_both(name: &str) -> (f32, f32) {
    let cases = reference(name);
    let dir = fixtures().join(name);
    let hf = convert(&HfSource::open(&dir).unwrap(), &dir, &format!("{name}-hf"));
    let gguf_path = fixtures().join(format!("{name}.gguf"));
    let gguf = convert(&GgufSource::open(&gguf_path).unwrap(), &gguf_path, &format!("{name}-gguf"));
    assert_eq!(hf.hparams(), gguf.hparams(), "{name}: the HF folder and the GGUF give other hyper-parameters");
    let errors =
        (check(&hf, &cases, &format!("{name} (HF)"), None), check(&gguf, &cases, &format!("{name} (GGUF)"), None));
    println!("{name}: max error / max|logit|: HF {:.2e}, GGUF {:.2e}", errors.0, errors.1);
    errors
}

#[test]
fn qwen2_qkv_bias_matches_transformers() {
    check_both("qwen2");
}

#[test]
fn qwen3_qk_norm_matches_transformers() {
    check_both("qwen3");
}

#[test]
fn llama3_rope_scaling_matches_transformers() {
    check_both("llama3");
}

#[test]
fn gemma3_matches_transformers() {
    check_both("gemma3");
}

#[test]
fn phi3_fused_partial_rotary_matches_transformers() {
    check_both("phi3");
}

/// Mistral's sliding window (6) is shorter than the 24-token prompt. llama.cpp
/// writes Mistral as plain `llama`, without the window, so its GGUF matches
/// only up to the window; the HF folder matches everywhere, and also through
/// a cache smaller than the prompt (the ring wraps: the window's run of slots
/// crosses the ring's end into its mirror).
#[test]
fn mistral_sliding_window_matches_transformers() {
    let name = "mistral";
    let cases = reference(name);
    let dir = fixtures().join(name);
    let hf = convert(&HfSource::open(&dir).unwrap(), &dir, "mistral-hf");
    let window = hf.hparams().variant.sliding_window as usize;
    assert_eq!(window, 6);
    let hf_error = check(&hf, &cases, "mistral (HF)", None);
    let gguf_path = fixtures().join("mistral.gguf");
    let gguf = convert(&GgufSource::open(&gguf_path).unwrap(), &gguf_path, "mistral-gguf");
    assert_eq!(gguf.hparams().variant.sliding_window, 0, "llama.cpp's llama has no sliding window");
    let gguf_error = check(&gguf, &cases, "mistral (GGUF, within the window)", Some(window));
    println!("{name}: max error / max|logit|: HF {hf_error:.2e}, GGUF (first {window} positions) {gguf_error:.2e}");

    // A 12-slot cache (4 sinks + a ring of 8) for 24 tokens, one at a time.
    let vocab = hf.hparams().vocab_size as usize;
    let long = cases.iter().max_by_key(|c| c.ids.len()).unwrap();
    let mut s = session(&hf, 12, 1);
    for (pos, id) in long.ids.iter().enumerate() {
        let got = s.eval(&[*id]).unwrap();
        let e = error(&got[..vocab], &long.logits[pos]);
        assert!(e <= TOLERANCE, "mistral through a wrapped 12-slot cache, position {pos}: error {e:e}");
    }
}
