//! The scheduler: one thread owns the model, one forward pass (scratch and
//! thread pool) and `parallel` KV cache slots, all allocated when it starts.
//! Requests wait in a bounded queue; each step admits queued requests into
//! free slots, then advances every active slot in **one batched forward**
//! (continuous batching, [`Forward::run_seqs`]): one decoded token for each
//! slot that is generating, and beside them chunks of the prompts being
//! evaluated, at most [`PREFILL_CHUNK`] tokens in all, so a long prompt does
//! not stall the streams beside it. The weights are read once per step for
//! every sequence, and a request's tokens are the same bits whatever runs
//! beside it (the forward's guarantee).
//!
//! Prefix reuse: a slot keeps the tokens its cache holds after a request
//! ends. A new request goes to the free slot whose tokens share the longest
//! prefix with its prompt, and only the rest of the prompt is evaluated (the
//! same conversation's next turn, a shared system prompt). With float
//! weights, a generated token's keys and values (evaluated in the decode
//! order) are not the bits the prompt evaluating it gets, so only a slot's
//! prompt tokens are reused there (see `Slot::prompt_held`).

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::metrics::Metrics;
use super::request::Sampling;
use crate::model::kv_cache::DEFAULT_SINKS;
use crate::model::{Forward, ForwardSize, KvCache, LogitsMode, Model, Role, SeqRun};
use crate::sampler::{Sampler, SamplerParams};
use crate::session::KvType;
use crate::tokenizer::StreamDecoder;

/// Most prompt tokens evaluated per step (all slots together).
pub const PREFILL_CHUNK: usize = 64;

/// A request, tokenized and checked against the context, waiting for a slot.
pub struct Job {
    /// The prompt's tokens (BOS included), at most the context.
    pub prompt: Vec<u32>,
    /// At most this many tokens; `None`: until the end of the turn or a full context.
    pub max_tokens: Option<usize>,
    /// Generation stops where the text reaches one of these (not sent).
    pub stop: Vec<String>,
    /// How tokens are chosen.
    pub sampling: Sampling,
    /// Top alternatives per token to report with log-probabilities; `None`: none.
    pub logprobs: Option<usize>,
    /// Never sample an end-of-generation token.
    pub ignore_eos: bool,
    /// Where the engine sends the job's events; a closed channel cancels the job.
    pub events: UnboundedSender<Event>,
    /// When the request arrived (for time to first token).
    pub queued: Instant,
}

/// What the engine sends back for a job, in order: pieces, then one `Done`.
#[derive(Debug)]
pub enum Event {
    /// A generated token.
    Piece(Piece),
    /// The job is over; nothing follows.
    Done(Finish),
}

/// One generated token: the text it releases (held back while it could be
/// the start of a stop string, so possibly empty) and its log-probabilities.
#[derive(Debug)]
pub struct Piece {
    /// Text released by this token (may be empty).
    pub text: String,
    /// The token's log-probabilities, if asked for.
    pub logprobs: Option<TokenLogprobs>,
}

#[derive(Debug, Clone)]
/// A generated token's log-probability and the most likely alternatives.
pub struct TokenLogprobs {
    /// The token's bytes.
    pub token: Vec<u8>,
    /// Its log-probability under the model (before penalties and filters).
    pub logprob: f32,
    /// The most likely tokens at this position, most likely first.
    pub top: Vec<(Vec<u8>, f32)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// Why a job ended, in OpenAI's terms.
pub enum FinishReason {
    /// End of turn or a stop string.
    Stop,
    /// `max_tokens` or a full context.
    Length,
}

#[derive(Debug)]
/// A finished job's counts.
pub struct Finish {
    /// Why it ended.
    pub reason: FinishReason,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Prompt tokens the slot already held (not evaluated again).
    pub cached_tokens: usize,
}

/// How the engine is sized.
#[derive(Clone, Copy, Debug)]
pub struct EngineOptions {
    /// KV cache slots: sequences generated at once.
    pub parallel: usize,
    /// Positions per slot.
    pub context: usize,
    /// Threads of the forward pass.
    pub threads: usize,
    /// Element type of the KV caches.
    pub kv_type: KvType,
}

/// A KV cache slot (its cache is the same index of the engine's caches).
struct Slot {
    /// The tokens the cache holds, in order.
    tokens: Vec<u32>,
    /// How many of `tokens` (the first ones) were evaluated as prompt
    /// tokens ([`Role::Prefill`]): what a request may reuse when the
    /// model's keys and values depend on the role
    /// ([`crate::model::Weights::role_changes_kv`]).
    prompt_held: usize,
    /// When the slot last finished a request (least recently used goes first).
    last_used: Instant,
    active: Option<Active>,
}

struct Active {
    job: Job,
    /// Prompt tokens evaluated so far (from the kept prefix on).
    prefilled: usize,
    cached: usize,
    sampler: Sampler,
    decoder: StreamDecoder,
    pending: String,
    generated: usize,
    /// How often each generated token came up (presence and frequency penalties).
    counts: Vec<(u32, u32)>,
    /// The last sampled token, evaluated at the next step.
    next: u32,
    first_token: bool,
}

/// Runs the engine on the current thread until the queue closes and the last
/// job is done. `ready` is called once everything is allocated; an error
/// (the context or the memory) comes before it.
pub fn run(
    model: Arc<Model>,
    options: EngineOptions,
    queue: Receiver<Job>,
    metrics: Arc<Metrics>,
    ready: impl FnOnce(),
) -> Result<(), String> {
    let model = &*model;
    let h = model.hparams();
    let max = h.max_seq_len as usize;
    if !(2..=max).contains(&options.context) {
        return Err(format!("--ctx {} is outside 2..={max} (the model's trained length)", options.context));
    }
    let per_slot = KvCache::bytes_for(h, options.context, DEFAULT_SINKS, options.kv_type).unwrap_or(u64::MAX);
    let needed = per_slot.saturating_mul(options.parallel as u64);
    let available = crate::memory::available_bytes().unwrap_or(u64::MAX);
    if needed > available {
        return Err(format!(
            "{} slots of {} positions need {} MiB of KV cache, more than the {} MiB available",
            options.parallel,
            options.context,
            needed >> 20,
            available >> 20
        ));
    }
    let weights = model.weights();
    let batch_cap = PREFILL_CHUNK + options.parallel;
    let mut forward = Forward::new(
        h,
        ForwardSize { sinks: DEFAULT_SINKS, batch_cap, max_seqs: options.parallel, all_logits: false },
        options.threads,
    );
    let mut caches = Vec::with_capacity(options.parallel);
    let mut slots = Vec::with_capacity(options.parallel);
    for _ in 0..options.parallel {
        caches.push(
            KvCache::new(h, options.context, DEFAULT_SINKS, options.kv_type)
                .map_err(|e| format!("allocating the KV cache: {e}"))?,
        );
        let tokens = Vec::with_capacity(options.context);
        slots.push(Slot { tokens, prompt_held: 0, last_used: Instant::now(), active: None });
    }
    ready();
    let vocab = h.vocab_size as usize;
    let mut batch: Vec<u32> = Vec::with_capacity(batch_cap);
    let mut runs: Vec<SeqRun> = Vec::with_capacity(options.parallel);
    let mut open = true;
    let pool = Arc::clone(forward.pool());
    loop {
        // Admit queued jobs into free slots; wait for one only when idle.
        while open && slots.iter().any(|s| s.active.is_none()) {
            let idle = slots.iter().all(|s| s.active.is_none());
            let job = if idle {
                match queue.recv_timeout(Duration::from_millis(200)) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            } else {
                match queue.try_recv() {
                    Ok(job) => job,
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            };
            metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            admit(&mut slots, job, model);
        }
        if !open && slots.iter().all(|s| s.active.is_none()) {
            return Ok(());
        }
        metrics.active.store(slots.iter().filter(|s| s.active.is_some()).count() as u64, Ordering::Relaxed);
        plan_step(&slots, &mut batch, &mut runs);
        if runs.is_empty() {
            continue;
        }
        let out = forward.run_seqs(&weights, h, model.kernels(), &mut caches, &batch, &runs);
        // Sampling and sending the tokens is serial work the HTTP runtime and
        // the clients wait for: leave them the other core rather than spin there.
        pool.rest();
        let mut rows = out.chunks_exact_mut(vocab);
        let mut at = 0;
        for run in &runs {
            let slot = &mut slots[run.seq];
            let a = slot.active.as_mut().expect("planned slots are active");
            slot.tokens.extend_from_slice(&batch[at..at + run.len]);
            at += run.len;
            if a.prefilled < a.job.prompt.len() {
                a.prefilled += run.len;
                slot.prompt_held = a.prefilled;
            }
            if run.logits != LogitsMode::Last {
                continue;
            }
            let logits = rows.next().expect("a logits row per sequence that asked");
            if let Some(reason) = emit(a, logits, model, slot.tokens.len(), options.context, &metrics) {
                let a = slot.active.take().expect("active");
                let _ = a.job.events.send(Event::Done(Finish {
                    reason,
                    prompt_tokens: a.job.prompt.len(),
                    completion_tokens: a.generated,
                    cached_tokens: a.cached,
                }));
                slot.last_used = Instant::now();
            }
        }
    }
}

/// The next step's batch: the last sampled token of every slot that is
/// generating, then chunks of the prompts being evaluated (the earliest
/// queued first) within [`PREFILL_CHUNK`] tokens in all.
fn plan_step(slots: &[Slot], batch: &mut Vec<u32>, runs: &mut Vec<SeqRun>) {
    batch.clear();
    runs.clear();
    for (i, slot) in slots.iter().enumerate() {
        let Some(a) = slot.active.as_ref().filter(|a| a.prefilled == a.job.prompt.len()) else { continue };
        batch.push(a.next);
        runs.push(SeqRun { seq: i, pos: slot.tokens.len(), len: 1, logits: LogitsMode::Last, role: Role::Decode });
    }
    let mut budget = PREFILL_CHUNK;
    while budget > 0 {
        let waiting = slots.iter().enumerate().filter(|(i, s)| {
            s.active.as_ref().is_some_and(|a| a.prefilled < a.job.prompt.len()) && !runs.iter().any(|r| r.seq == *i)
        });
        let Some((i, slot)) = waiting.min_by_key(|(_, s)| s.active.as_ref().map(|a| a.job.queued)) else { break };
        let a = slot.active.as_ref().expect("filtered");
        let end = (a.prefilled + budget).min(a.job.prompt.len());
        let last = end == a.job.prompt.len();
        batch.extend_from_slice(&a.job.prompt[a.prefilled..end]);
        let logits = if last { LogitsMode::Last } else { LogitsMode::None };
        let len = end - a.prefilled;
        runs.push(SeqRun { seq: i, pos: slot.tokens.len(), len, logits, role: Role::Prefill });
        budget -= end - a.prefilled;
    }
}

/// Puts `job` in the free slot whose cached tokens share the longest prefix
/// with its prompt (least recently used among equals); the slot forgets the
/// rest of its tokens.
fn admit(slots: &mut [Slot], job: Job, model: &Model) {
    let all_reusable = !model.weights().role_changes_kv(model.kernels());
    let common = |s: &Slot| {
        let held = if all_reusable { s.tokens.len() } else { s.prompt_held };
        s.tokens[..held].iter().zip(&job.prompt).take_while(|(a, b)| a == b).count()
    };
    let slot = slots
        .iter_mut()
        .filter(|s| s.active.is_none())
        .max_by(|a, b| common(a).cmp(&common(b)).then(b.last_used.cmp(&a.last_used)))
        .expect("a free slot");
    // At least the prompt's last token is evaluated: its logits give the first token.
    let kept = common(slot).min(job.prompt.len() - 1);
    slot.tokens.truncate(kept);
    slot.prompt_held = kept;
    let s = &job.sampling;
    let seed = s.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    let params = SamplerParams {
        temperature: s.temperature,
        top_k: s.top_k,
        top_p: s.top_p,
        min_p: s.min_p,
        repeat_penalty: s.repeat_penalty,
        repeat_last_n: 64,
        seed,
    };
    let mut sampler = Sampler::new(params, model.hparams().vocab_size as usize);
    if job.ignore_eos {
        sampler.ban(model.tokenizer().end_of_generation_ids());
    }
    for &t in &job.prompt[job.prompt.len().saturating_sub(64)..] {
        sampler.accept(t);
    }
    slot.active = Some(Active {
        job,
        prefilled: kept,
        cached: kept,
        sampler,
        decoder: StreamDecoder::new(),
        pending: String::new(),
        generated: 0,
        counts: Vec::new(),
        next: 0,
        first_token: true,
    });
}

/// Samples the next token from `logits` and sends what it releases; the
/// finish reason if the job is done (its client gone: `Stop`, sent to no one).
fn emit(
    a: &mut Active,
    logits: &mut [f32],
    model: &Model,
    held: usize,
    context: usize,
    metrics: &Metrics,
) -> Option<FinishReason> {
    let tokenizer = model.tokenizer();
    // The model's own distribution (before penalties and sampling filters), as OpenAI reports it.
    let distribution = a.job.logprobs.map(|top| Distribution::of(logits, top));
    let s = &a.job.sampling;
    let penalty = |count: u32| s.presence_penalty + s.frequency_penalty * count as f32;
    for &(id, count) in &a.counts {
        logits[id as usize] -= penalty(count);
    }
    let token = a.sampler.sample(logits);
    if a.first_token {
        a.first_token = false;
        metrics.observe_ttft(a.job.queued.elapsed());
    }
    if tokenizer.is_end_of_generation(token) {
        return Some(FinishReason::Stop);
    }
    let seen = a.counts.iter_mut().find(|(id, _)| *id == token);
    let raw_logit = logits[token as usize] + seen.as_ref().map_or(0.0, |(_, c)| penalty(*c));
    match seen {
        Some((_, c)) => *c += 1,
        None => a.counts.push((token, 1)),
    }
    a.generated += 1;
    metrics.generated_tokens.fetch_add(1, Ordering::Relaxed);
    a.sampler.accept(token);
    a.decoder.push(tokenizer, token, &mut a.pending).expect("sampled ids are in range");
    let mut finish = None;
    let text = if let Some(at) = a.job.stop.iter().filter_map(|s| a.pending.find(s.as_str())).min() {
        a.pending.truncate(at);
        finish = Some(FinishReason::Stop);
        std::mem::take(&mut a.pending)
    } else {
        if a.job.max_tokens.is_some_and(|m| a.generated >= m) || held >= context {
            finish = Some(FinishReason::Length);
        }
        if finish.is_some() {
            a.decoder.finish(&mut a.pending);
            std::mem::take(&mut a.pending)
        } else {
            let longest = a.job.stop.iter().map(String::len).max().unwrap_or(0);
            let keep = crate::generate::held_back(&a.pending, &a.job.stop, longest);
            a.pending.drain(..a.pending.len() - keep).collect()
        }
    };
    let bytes = |id: u32| tokenizer.token_bytes(id).unwrap_or_default().to_vec();
    let logprobs = distribution.map(|d| TokenLogprobs {
        token: bytes(token),
        logprob: raw_logit - d.log_sum,
        top: d.top.iter().map(|&(id, lp)| (bytes(id), lp)).collect(),
    });
    if a.job.events.send(Event::Piece(Piece { text, logprobs })).is_err() {
        // The client is gone: the slot is free from the next step on.
        return Some(FinishReason::Stop);
    }
    a.next = token;
    finish
}

/// The log-softmax's normaliser and its `top` most likely tokens with their log-probabilities.
struct Distribution {
    log_sum: f32,
    top: Vec<(u32, f32)>,
}

impl Distribution {
    fn of(logits: &[f32], top: usize) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
        let log_sum = max + sum.ln() as f32;
        let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
        for (id, &l) in logits.iter().enumerate() {
            if best.len() < top || best.last().is_some_and(|&(_, b)| l > b) {
                let at = best.partition_point(|&(_, b)| b >= l);
                best.insert(at, (id as u32, l));
                best.truncate(top);
            }
        }
        Self { log_sum, top: best.into_iter().map(|(id, l)| (id, l - log_sum)).collect() }
    }
}
