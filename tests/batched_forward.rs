//! A batch of sequences in one forward gives each sequence, bit for bit, the
//! logits it gets alone: SmolLM2-135M-Instruct (tools/fetch-model.sh),
//! converted to each weight type the converter can write a whole model in,
//! f32 and f16 among them (the kernels' batch invariance, which this rests
//! on, is tested for every type in kernels/tests), four prompts through a
//! [`Session`] each (one thread), against the same prompts through one
//! [`Forward::run_seqs`] (two threads) where they join at different steps,
//! prefill in chunks beside the others' decode steps, and decode together.
//! Each token keeps its role (a prompt's tokens prefill, however the prompt
//! is cut; a generated token decodes), and the float matmuls sum each role
//! in its own order: what must not matter is the batch.

use std::path::{Path, PathBuf};

use gpt_fast::format::DType;
use gpt_fast::model::kv_cache::{KvType, DEFAULT_SINKS};
use gpt_fast::model::{Forward, ForwardSize, KvCache, LogitsMode, Model, ModelOptions, Role, SeqRun};
use gpt_fast::session::{Session, SessionOptions};

fn fetch() -> PathBuf {
    let out = std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/fetch-model.sh"))
        .output()
        .expect("run tools/fetch-model.sh");
    assert!(out.status.success(), "fetch-model.sh: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn convert(gguf: &Path, dtype: DType) -> PathBuf {
    let source = gpt_fast::import::from_gguf::GgufSource::open(gguf).unwrap();
    let name = format!("batched-smollm2-{}-{}.bin", dtype.name(), std::process::id());
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    gpt_fast::import::convert::convert(&source, gguf, &path, dtype, |_, _, _| {}).unwrap();
    path
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn bits(logits: &[f32]) -> Vec<u32> {
    logits.iter().map(|v| v.to_bits()).collect()
}

/// Greedy tokens decoded after each prompt.
const DECODED: usize = 10;
/// Most prompt tokens a sequence evaluates per batched step.
const CHUNK: usize = 16;

/// Each prompt alone: the logits of its prompt's last token, then of each
/// greedy token, and those tokens.
fn alone(model: &Model, prompt: &[u32]) -> (Vec<Vec<u32>>, Vec<u32>) {
    let options = SessionOptions { context: 256, threads: 1, kv_type: KvType::F16, ..Default::default() };
    let mut session = Session::new(model, options).unwrap();
    let mut logits = Vec::new();
    let mut tokens = Vec::new();
    let mut out = session.eval(prompt).unwrap().to_vec();
    for _ in 0..DECODED {
        logits.push(bits(&out));
        let next = argmax(&out);
        tokens.push(next);
        out = session.decode(next).unwrap().to_vec();
    }
    logits.push(bits(&out));
    (logits, tokens)
}

struct Seq {
    prompt: Vec<u32>,
    /// Step at which it joins the batch.
    joins: usize,
    prefilled: usize,
    /// Tokens in its cache.
    held: usize,
    /// Its logits so far.
    logits: Vec<Vec<u32>>,
    next: u32,
}

#[test]
fn a_sequence_gets_the_same_logits_in_a_batch_as_alone() {
    let gguf = fetch();
    // Each type `--quant` can convert a whole model to (q4_k's 256-value
    // super-blocks cannot hold SmolLM2's 576-column rows; it is only a part
    // of the own q4 mix).
    let dtypes: Vec<DType> = DType::ALL.into_iter().filter(|d| d.is_whole_model_target()).collect();
    for needed in [DType::Q8, DType::F16, DType::F32] {
        assert!(dtypes.contains(&needed), "{dtypes:?}");
    }
    for dtype in dtypes {
        let path = convert(&gguf, dtype);
        let model = Model::open(&path, ModelOptions::default()).unwrap();
        let tok = model.tokenizer();
        let texts = [
            "The capital of France is",
            "Write a haiku about the sea.",
            "1, 2, 3, 4, 5,",
            // Longer than CHUNK tokens: its prefill takes several steps.
            "A long prompt that takes several prefill chunks, evaluated while the other sequences decode their \
             tokens one step at a time, and which must not change a bit of what they compute.",
        ];
        let prompts: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode_prompt(t, false)).collect();
        assert!(prompts[3].len() > 2 * CHUNK, "prompt of {} tokens", prompts[3].len());
        let expected: Vec<_> = prompts.iter().map(|p| alone(&model, p)).collect();

        let h = model.hparams();
        let (weights, kernels) = (model.weights(), model.kernels());
        let n_seqs = prompts.len();
        let mut forward = Forward::new(
            h,
            ForwardSize { sinks: DEFAULT_SINKS, batch_cap: CHUNK * n_seqs, max_seqs: n_seqs, all_logits: false },
            2,
        );
        let mut caches: Vec<KvCache> =
            (0..n_seqs).map(|_| KvCache::new(h, 256, DEFAULT_SINKS, KvType::F16).unwrap()).collect();
        let joins = [0, 0, 3, 5];
        let mut seqs: Vec<Seq> = prompts
            .iter()
            .zip(joins)
            .map(|(p, joins)| Seq { prompt: p.clone(), joins, prefilled: 0, held: 0, logits: vec![], next: 0 })
            .collect();
        let (mut tokens, mut runs) = (Vec::new(), Vec::new());
        for step in 0.. {
            tokens.clear();
            runs.clear();
            for (i, s) in seqs.iter().enumerate() {
                if step < s.joins || s.logits.len() > DECODED {
                    continue;
                }
                let (from, logits, role) = if s.prefilled < s.prompt.len() {
                    let end = (s.prefilled + CHUNK).min(s.prompt.len());
                    tokens.extend_from_slice(&s.prompt[s.prefilled..end]);
                    let last = end == s.prompt.len();
                    (end - s.prefilled, if last { LogitsMode::Last } else { LogitsMode::None }, Role::Prefill)
                } else {
                    tokens.push(s.next);
                    (1, LogitsMode::Last, Role::Decode)
                };
                runs.push(SeqRun { seq: i, pos: s.held, len: from, logits, role });
            }
            if runs.is_empty() {
                break;
            }
            let out = forward.run_seqs(&weights, h, kernels, &mut caches, &tokens, &runs);
            let mut rows = out.chunks_exact(h.vocab_size as usize);
            for run in &runs {
                let s = &mut seqs[run.seq];
                s.held += run.len;
                if s.prefilled < s.prompt.len() {
                    s.prefilled += run.len;
                }
                if run.logits == LogitsMode::Last {
                    let row = rows.next().expect("a row per sequence that asked");
                    s.logits.push(bits(row));
                    s.next = argmax(row);
                }
            }
            assert!(rows.next().is_none(), "step {step}: rows nobody asked for");
        }
        for (i, (s, (want, want_tokens))) in seqs.iter().zip(&expected).enumerate() {
            assert_eq!(s.logits.len(), want.len(), "{}: sequence {i}", dtype.name());
            for (step, (got, want)) in s.logits.iter().zip(want).enumerate() {
                assert!(got == want, "{}: sequence {i}, token {step}: logits differ in a batch", dtype.name());
            }
            let decoded: Vec<u32> = s.logits[..DECODED]
                .iter()
                .map(|l| argmax(&l.iter().map(|&b| f32::from_bits(b)).collect::<Vec<_>>()))
                .collect();
            assert_eq!(&decoded, want_tokens, "{}: sequence {i}", dtype.name());
        }
        drop(model);
        let _ = std::fs::remove_file(&path);
    }
}
