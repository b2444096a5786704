//! Conversations that continue: a session appends, keeps a prefix
//! (`truncate`), and saves and loads its state; a generator's second turn
//! evaluates only its new tokens. Each is checked bit for bit against a
//! session that evaluated the same tokens in the same batches.

use std::path::{Path, PathBuf};

use gpt_fast::format::{DType, HParams};
use gpt_fast::generate::{Flow, GenerateParams, Generator};
use gpt_fast::model::{Model, ModelOptions};
use gpt_fast::sampler::{Sampler, SamplerParams};
use gpt_fast::session::{KvType, Session, SessionError, SessionOptions, StateError};

fn temp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("continue-{name}-{}", std::process::id()))
}

fn write_model(name: &str, h: &HParams, seed: u64) -> PathBuf {
    let path = temp(name);
    gpt_fast::synthetic::write(&path, h, DType::Q8, seed, |_, _| {}).unwrap();
    path
}

fn tokens(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 7919 + salt) % 300).collect()
}

fn options(context: usize) -> SessionOptions {
    SessionOptions { context, batch: 8, threads: 2, ..Default::default() }
}

/// A Llama with sliding-window layers, so the cache has a mirror to restore.
fn sliding_llama() -> HParams {
    let mut h = gpt_fast::synthetic::config("test-llama").unwrap();
    h.variant.sliding_window = 6;
    h.variant.swa_period = 2;
    h
}

#[test]
fn truncate_keeps_a_prefix_as_if_the_rest_had_never_been_evaluated() {
    for config in ["test-llama", "test-gpt2"] {
        let h = gpt_fast::synthetic::config(config).unwrap();
        let model = Model::open(&write_model(&format!("trunc-{config}"), &h, 3), ModelOptions::default()).unwrap();
        let (a, b, junk) = (tokens(11, 5), tokens(6, 77), tokens(13, 123));
        let mut edited = Session::new(&model, options(64)).unwrap();
        edited.eval(&a).unwrap();
        edited.eval(&junk).unwrap();
        let held = a.len() + junk.len();
        assert_eq!(edited.truncate(held + 1), Err(SessionError::TruncateBeyond { keep: held + 1, held }));
        edited.truncate(a.len()).unwrap();
        assert_eq!(edited.tokens(), Some(&a[..]));
        let got = edited.eval(&b).unwrap().to_vec();
        let mut straight = Session::new(&model, options(64)).unwrap();
        straight.eval(&a).unwrap();
        let want = straight.eval(&b).unwrap();
        assert_eq!(got, want, "{config}");
        assert_eq!(edited.tokens(), straight.tokens());
        assert_eq!(edited.position(), a.len() + b.len());
    }
}

#[test]
fn after_a_context_shift_only_everything_or_nothing_can_be_kept() {
    for config in ["test-llama", "test-gpt2"] {
        let h = gpt_fast::synthetic::config(config).unwrap();
        let model = Model::open(&write_model(&format!("shift-{config}"), &h, 3), ModelOptions::default()).unwrap();
        let mut s = Session::new(&model, options(16)).unwrap();
        s.eval(&tokens(12, 1)).unwrap();
        assert!(s.tokens().is_some());
        s.eval(&tokens(8, 2)).unwrap();
        assert_eq!(s.tokens(), None, "{config}: the first tokens are gone");
        assert_eq!(s.truncate(5), Err(SessionError::Shifted { keep: 5 }));
        assert!(s.save(&temp(&format!("shifted-{config}"))).is_err());
        s.truncate(20).unwrap();
        s.truncate(0).unwrap();
        assert_eq!(s.tokens(), Some(&[][..]));
    }
}

#[test]
fn a_saved_state_loads_into_another_session_and_continues_identically() {
    for (name, h) in [("llama-swa", sliding_llama()), ("gpt2", gpt_fast::synthetic::config("test-gpt2").unwrap())] {
        let model = Model::open(&write_model(&format!("save-{name}"), &h, 3), ModelOptions::default()).unwrap();
        for kv_type in [KvType::F16, KvType::F32] {
            let opts = SessionOptions { kv_type, ..options(32) };
            let (a, b) = (tokens(14, 9), tokens(20, 31));
            let mut original = Session::new(&model, opts).unwrap();
            original.eval(&a).unwrap();
            let path = temp(&format!("state-{name}-{}", kv_type.name()));
            original.save(&path).unwrap();
            // A smaller context, which `b` wraps (Llama's ring reads the
            // restored mirror and sinks, GPT-2 re-evaluates restored tokens),
            // in a session that held something else before.
            let small = SessionOptions { context: 20, ..opts };
            let mut restored = Session::new(&model, small).unwrap();
            restored.eval(&tokens(5, 200)).unwrap();
            restored.load(&path).unwrap();
            assert_eq!(restored.tokens(), Some(&a[..]));
            assert_eq!(restored.position(), a.len());
            let mut fresh = Session::new(&model, small).unwrap();
            fresh.eval(&a).unwrap();
            let want = fresh.eval(&b).unwrap().to_vec();
            assert_eq!(restored.eval(&b).unwrap(), want, "{name} {kv_type:?}");
            assert_eq!(restored.tokens(), None);
            std::fs::remove_file(&path).unwrap();
        }
    }
}

#[test]
fn a_bad_state_file_is_refused_with_what_is_wrong_and_the_session_is_unchanged() {
    let h = sliding_llama();
    let model = Model::open(&write_model("bad-state", &h, 3), ModelOptions::default()).unwrap();
    let other = Model::open(&write_model("bad-state-other", &h, 4), ModelOptions::default()).unwrap();
    let mut s = Session::new(&model, options(32)).unwrap();
    s.eval(&tokens(10, 1)).unwrap();
    let path = temp("state-bad");
    s.save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();

    let held = tokens(3, 50);
    let check = |bytes: &[u8], session_of: &Model, opts: SessionOptions, want: &str| {
        let bad = temp("state-bad-variant");
        std::fs::write(&bad, bytes).unwrap();
        let mut target = Session::new(session_of, opts).unwrap();
        target.eval(&held).unwrap();
        let err = target.load(&bad).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, SessionError::State { .. }), "{message}");
        assert!(message.starts_with(&bad.display().to_string()), "{message}");
        assert!(message.contains(want), "wanted {want:?} in {message:?}");
        assert_eq!(target.tokens(), Some(&held[..]), "a refused load changed the session");
    };
    check(b"GGUF and more", &model, options(32), "bad magic");
    check(&good[..good.len() - 1], &model, options(32), "truncated");
    check(&good[..20], &model, options(32), "truncated");
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x40;
    check(&flipped, &model, options(32), "checksum mismatch");
    let mut version = good.clone();
    version[8] = 9;
    check(&version, &model, options(32), "version 9");
    check(&good, &other, options(32), "another model");
    check(&good, &model, SessionOptions { kv_type: KvType::F32, ..options(32) }, "f16");
    check(&good, &model, options(8), "more than this session's context of 8");

    let missing = s.load(&temp("state-never-written")).unwrap_err().to_string();
    assert!(missing.contains("reading the session state"), "{missing}");
    assert!(matches!(s.save(Path::new("/nonexistent-folder/state")), Err(SessionError::State { .. })));
    assert_eq!(StateError::BadMagic.to_string(), "not a gpt-fast session state (bad magic)");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn misuse_of_eval_all_is_an_error_not_a_panic() {
    let h = gpt_fast::synthetic::config("test-llama").unwrap();
    let model = Model::open(&write_model("misuse", &h, 3), ModelOptions::default()).unwrap();
    let mut s = Session::new(&model, options(32)).unwrap();
    assert_eq!(s.eval_all(&[1, 2]).unwrap_err(), SessionError::NoAllLogits);
    assert_eq!(s.eval_each(&[1, 2], |_, _| {}).unwrap_err(), SessionError::NoAllLogits);
    let mut all = Session::new(&model, SessionOptions { all_logits: true, ..options(32) }).unwrap();
    assert_eq!(all.eval_all(&tokens(9, 1)).unwrap_err(), SessionError::NotOneBatch { tokens: 9, room: 8 });
    assert_eq!(all.position(), 0);
}

/// The generator's second turn, replayed on a bare session: the first turn's
/// prompt in one batch, each generated token alone, then the first turn's
/// last token with the second prompt. Greedy picks must match, and the
/// session must hold exactly the conversation (nothing evaluated twice).
#[test]
fn a_second_turn_evaluates_only_its_new_tokens() {
    let h = gpt_fast::synthetic::config("test-llama").unwrap();
    let model = Model::open(&write_model("turns", &h, 3), ModelOptions::default()).unwrap();
    let tokenizer = model.tokenizer();
    let mut generator = Generator::new(&model, options(128)).unwrap();
    let params = GenerateParams { max_tokens: 6, sampler: SamplerParams::greedy(), stop: Vec::new(), ignore_eos: true };
    let mut texts = [String::new(), String::new()];
    for (turn, prompt) in ["hello there", " and again"].iter().enumerate() {
        let stats = generator
            .generate(prompt, false, &params, |piece| {
                texts[turn].push_str(piece);
                Flow::Continue
            })
            .unwrap();
        assert_eq!(stats.generated_tokens, 6);
    }
    let conversation: Vec<u32> = generator.tokens().unwrap().collect();
    assert_eq!(conversation.len(), generator.len());

    let first = tokenizer.encode_prompt("hello there", false);
    let second = tokenizer.encode(" and again", false);
    assert_eq!(first[..], conversation[..first.len()]);
    assert_eq!(generator.session().position(), first.len() + 6 + second.len() + 5);

    let mut replay = Session::new(&model, options(128)).unwrap();
    let mut greedy = Sampler::new(SamplerParams::greedy(), h.vocab_size as usize);
    greedy.ban(tokenizer.end_of_generation_ids());
    let mut turn = |replay: &mut Session, input: &[u32]| {
        let mut picked = vec![greedy.sample(replay.eval(input).unwrap())];
        for _ in 1..6 {
            let last = *picked.last().unwrap();
            picked.push(greedy.sample(replay.decode(last).unwrap()));
        }
        picked
    };
    let one = turn(&mut replay, &first);
    let two = turn(&mut replay, &[&one[5..], &second[..]].concat());
    let want: Vec<u32> = [&first[..], &one, &second, &two].concat();
    assert_eq!(conversation, want);
    let bytes: Vec<u8> = two.iter().flat_map(|&t| tokenizer.token_bytes(t).unwrap().to_vec()).collect();
    assert_eq!(texts[1], String::from_utf8_lossy(&bytes));

    // Back to the end of the first turn, and a second turn again: only its
    // prompt is evaluated now (the first turn's last token is in the cache).
    generator.truncate(first.len() + 6).unwrap();
    assert_eq!(generator.tokens().unwrap().collect::<Vec<_>>(), [&first[..], &one].concat());
    generator.generate(" and again", false, &params, |_| Flow::Continue).unwrap();
    replay.truncate(first.len() + 6).unwrap();
    let retry = turn(&mut replay, &second);
    assert_eq!(generator.tokens().unwrap().collect::<Vec<_>>(), [&first[..], &one, &second, &retry].concat());
    let n = generator.len();
    let beyond = generator.truncate(n + 1).unwrap_err().to_string();
    assert_eq!(beyond, format!("cannot keep {} tokens: the session holds {n}", n + 1));
    generator.reset();
    assert!(generator.is_empty());
}
