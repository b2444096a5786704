//! Going past a full context: Llama's ring cache with attention sinks and
//! GPT-2's re-evaluated newer half, checked against fresh sessions that see
//! exactly what the shifted cache holds.

use std::path::{Path, PathBuf};

use gpt_fast::format::{Arch, DType, HParams};
use gpt_fast::model::{Model, ModelOptions};
use gpt_fast::session::{KvType, Session, SessionError, SessionOptions};

fn write_model(name: &str, h: &HParams) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("shift-{name}-{}", std::process::id()));
    gpt_fast::synthetic::write(&path, h, DType::F32, 11, |_, _| {}).unwrap();
    path
}

fn tokens(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 7919 + 5) % 300).collect()
}

fn options(context: usize, batch: usize) -> SessionOptions {
    SessionOptions { context, batch, threads: 2, ..Default::default() }
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(diff <= 1e-4 * scale, "{what}: max difference {diff} (scale {scale})");
}

/// With one layer, keys and values depend only on the token and its position,
/// so a wrapped ring (sinks + the newest window, RoPE distances preserved)
/// must give the logits of a fresh session fed those same tokens.
#[test]
fn llama_ring_equals_sinks_plus_window() {
    let mut h = gpt_fast::synthetic::config("test-llama").unwrap();
    h.n_layers = 1;
    let path = write_model("llama-1l", &h);
    let model = Model::open(&path, ModelOptions::default()).unwrap();
    let (context, sinks) = (16, 4);
    let all = tokens(53);
    let mut ring = Session::new(&model, options(context, 8)).unwrap();
    let mut logits = Vec::new();
    for (i, &t) in all.iter().enumerate() {
        logits = ring.eval(&[t]).unwrap().to_vec();
        assert!(logits.iter().all(|v| v.is_finite()), "position {i}");
    }
    assert_eq!(ring.position(), all.len());
    let window = context - sinks;
    let mut seen: Vec<u32> = all[..sinks].to_vec();
    seen.extend_from_slice(&all[all.len() - window..]);
    let mut fresh = Session::new(&model, options(context, 8)).unwrap();
    assert_close(&logits, fresh.eval(&seen).unwrap(), "ring vs fresh");
}

#[test]
fn llama_prompt_longer_than_the_context_streams_through() {
    let h = gpt_fast::synthetic::config("test-llama").unwrap();
    let model = Model::open(&write_model("llama-long", &h), ModelOptions::default()).unwrap();
    let mut s = Session::new(&model, options(16, 8)).unwrap();
    assert!(s.eval(&tokens(70)).unwrap().iter().all(|v| v.is_finite()));
    assert_eq!(s.position(), 70);
    let mut strict = Session::new(&model, SessionOptions { context_shift: false, ..options(16, 8) }).unwrap();
    assert_eq!(strict.eval(&tokens(17)).unwrap_err(), SessionError::ContextFull { needed: 17, context: 16 });
}

/// GPT-2 keeps the newer half and evaluates it again from position 0, so the
/// state equals a fresh session fed the tokens since the last shift.
#[test]
fn gpt2_shift_equals_fresh_newer_half() {
    let h = gpt_fast::synthetic::config("test-gpt2").unwrap();
    assert_eq!(h.arch, Arch::Gpt2);
    let model = Model::open(&write_model("gpt2", &h), ModelOptions::default()).unwrap();
    let all = tokens(40);
    let mut s = Session::new(&model, options(16, 8)).unwrap();
    let mut logits = Vec::new();
    for &t in &all {
        logits = s.eval(&[t]).unwrap().to_vec();
    }
    // Shifts when token 16, 24 and 32 arrive: the cache then holds tokens 24..40.
    let mut fresh = Session::new(&model, options(16, 8)).unwrap();
    assert_close(&logits, fresh.eval(&all[24..]).unwrap(), "shifted vs fresh");
}

#[test]
fn streaming_perplexity_scores_every_token() {
    let h = gpt_fast::synthetic::config("test-llama").unwrap();
    let model = Model::open(&write_model("ppl", &h), ModelOptions::default()).unwrap();
    let text = tokens(100);
    let p = gpt_fast::perplexity::perplexity_stream(&model, &text, 16, 8, 2, KvType::F16, |_, _, _| {}).unwrap();
    assert_eq!(p.scored_tokens, 99);
    assert!(p.ppl.is_finite() && p.ppl > 1.0);
    let chunked = gpt_fast::perplexity::perplexity(&model, &text, 16, 8, 2, KvType::F16, |_, _, _| {}).unwrap();
    assert_eq!((chunked.chunks, chunked.scored_tokens), (6, 6 * 7));
}

/// A token budget below the context sizes the cache to the budget; within it
/// nothing shifts, so the logits are those of the full-size cache, bit for bit.
#[test]
fn a_token_budget_shrinks_the_cache_not_the_results() {
    for config in ["test-llama", "test-gpt2"] {
        let h = gpt_fast::synthetic::config(config).unwrap();
        let model = Model::open(&write_model(&format!("budget-{config}"), &h), ModelOptions::default()).unwrap();
        let all = tokens(24);
        let full_options = SessionOptions { context_shift: false, ..options(64, 8) };
        let mut full = Session::new(&model, full_options).unwrap();
        let mut budget = Session::new(&model, SessionOptions { token_budget: all.len(), ..full_options }).unwrap();
        assert_eq!((full.context(), budget.context()), (64, all.len()), "{config}");
        assert!(budget.cache_bytes() * 2 < full.cache_bytes(), "{config}");
        assert_eq!(full.eval(&all[..20]).unwrap(), budget.eval(&all[..20]).unwrap(), "{config} prompt");
        for &t in &all[20..] {
            assert_eq!(full.eval(&[t]).unwrap(), budget.eval(&[t]).unwrap(), "{config} decode");
        }
        // Past the budget the cache is full (or shifts, with context shift on).
        assert_eq!(budget.eval(&[1]).unwrap_err(), SessionError::ContextFull { needed: 25, context: 24 });
    }
}
