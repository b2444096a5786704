//! A decode step allocates nothing: after the first decoded token, forward
//! pass and sampling run on buffers planned at session creation. A counting
//! global allocator sees every allocation in this test binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use gpt_fast::format::DType;
use gpt_fast::model::{Model, ModelOptions};
use gpt_fast::sampler::{Sampler, SamplerParams};
use gpt_fast::session::{Session, SessionOptions};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`; `ptr` came from this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The count is process-wide: the tests take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn decode_steps_after_the_first_allocate_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for (config, threads) in [("test-llama", 2), ("test-gpt2", 3)] {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("noalloc-{config}-{}", std::process::id()));
        let h = gpt_fast::synthetic::config(config).unwrap();
        gpt_fast::synthetic::write(&path, &h, DType::Q8, 5, |_, _| {}).unwrap();
        let model = Model::open(&path, ModelOptions::default()).unwrap();
        // A context of 64 makes the 200 steps wrap the cache (Llama's ring,
        // GPT-2's re-evaluated half) several times.
        let options = SessionOptions { context: 64, batch: 16, threads, ..Default::default() };
        let mut session = Session::new(&model, options).unwrap();
        let params = SamplerParams {
            temperature: 0.9,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.1,
            ..Default::default()
        };
        let mut sampler = Sampler::new(params, h.vocab_size as usize);
        let mut token = sampler.sample(session.eval(&[1, 2, 3, 4, 5]).unwrap());
        for step in 1..=200 {
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            sampler.accept(token);
            token = sampler.sample(session.decode(token).unwrap());
            let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
            if step >= 2 {
                assert_eq!(allocated, 0, "{config}: decode step {step} allocated {allocated} times");
            }
        }
        assert_eq!(session.position(), 205);
    }
}

/// A batched step (several sequences' decode tokens and a prompt chunk in
/// one forward, as `serve` runs them) allocates nothing either.
#[test]
fn batched_steps_allocate_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    use gpt_fast::model::kv_cache::{KvType, DEFAULT_SINKS};
    use gpt_fast::model::{Forward, ForwardSize, KvCache, LogitsMode, Role, SeqRun};
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("noalloc-batched-{}", std::process::id()));
    let h = gpt_fast::synthetic::config("test-llama").unwrap();
    gpt_fast::synthetic::write(&path, &h, DType::Q8, 5, |_, _| {}).unwrap();
    let model = Model::open(&path, ModelOptions::default()).unwrap();
    let (weights, kernels) = (model.weights(), model.kernels());
    let (n_seqs, chunk) = (4, 8);
    let mut forward = Forward::new(
        &h,
        ForwardSize { sinks: DEFAULT_SINKS, batch_cap: chunk + n_seqs, max_seqs: n_seqs, all_logits: false },
        2,
    );
    let mut caches: Vec<KvCache> =
        (0..n_seqs).map(|_| KvCache::new(&h, 512, DEFAULT_SINKS, KvType::F16).unwrap()).collect();
    let mut tokens = Vec::with_capacity(chunk + n_seqs);
    let mut runs = Vec::with_capacity(n_seqs);
    for step in 0..60 {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        tokens.clear();
        runs.clear();
        // Sequences 0..3 decode; sequence 3 evaluates a chunk of 8 every 5th step.
        for seq in 0..n_seqs - 1 {
            tokens.push((step * 7 + seq) as u32 % h.vocab_size);
            runs.push(SeqRun { seq, pos: step, len: 1, logits: LogitsMode::Last, role: Role::Decode });
        }
        if step % 5 == 0 {
            tokens.extend((0..chunk as u32).map(|t| (t * 3 + step as u32) % h.vocab_size));
            let (seq, pos, len) = (n_seqs - 1, step / 5 * chunk, chunk);
            runs.push(SeqRun { seq, pos, len, logits: LogitsMode::Last, role: Role::Prefill });
        }
        let logits = forward.run_seqs(&weights, &h, kernels, &mut caches, &tokens, &runs);
        assert_eq!(logits.len(), runs.len() * h.vocab_size as usize);
        let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
        if step >= 2 {
            assert_eq!(allocated, 0, "batched step {step} allocated {allocated} times");
        }
    }
}
