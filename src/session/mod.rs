//! A session: one conversation's state (its tokens, KV cache, scratch,
//! thread pool, position) over a shared [`Model`]. Sessions are independent;
//! each owns its cache, and everything is allocated when it is created.
//!
//! A conversation continues: every evaluation appends to the tokens already
//! in the cache, [`Session::truncate`] keeps a prefix of them (a server reusing
//! a shared prompt prefix, an edited last turn), [`Session::reset`] forgets
//! them, and [`Session::save`] / [`Session::load`] keep them in a file.

mod state_file;

pub use state_file::StateError;

use crate::format::Arch;
pub use crate::model::kv_cache::KvType;
use crate::model::kv_cache::DEFAULT_SINKS;
use crate::model::{Forward, ForwardSize, KvCache, LogitsMode, Model, Role, Weights};
use crate::threads::ThreadPool;
use std::sync::Arc;

/// Why a session could not be created, or refused a call.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// The context is full and context shift is off.
    #[error("context full: {needed} positions needed, the context holds {context}")]
    ContextFull {
        /// Positions needed.
        needed: usize,
        /// Positions the context holds.
        context: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is out of range (vocabulary of {vocab})")]
    TokenOutOfRange {
        /// The token id.
        id: u32,
        /// Tokens in the vocabulary.
        vocab: usize,
    },
    /// No tokens to evaluate.
    #[error("nothing to evaluate: no tokens")]
    Empty,
    /// Every position's logits were asked of a session made without `all_logits`.
    #[error("eval_each and eval_all need a session created with SessionOptions::all_logits")]
    NoAllLogits,
    /// `eval_all` was given more than one batch.
    #[error("eval_all takes at most {room} tokens here (the batch size, within the context), not {tokens}")]
    NotOneBatch {
        /// Tokens given.
        tokens: usize,
        /// Tokens that fit in one batch here.
        room: usize,
    },
    /// More tokens to keep than the session holds.
    #[error("cannot keep {keep} tokens: the session holds {held}")]
    TruncateBeyond {
        /// Tokens asked to keep.
        keep: usize,
        /// Tokens the session holds.
        held: usize,
    },
    /// After a context shift the cache no longer holds the conversation from
    /// its start: only all of it can be kept, or none.
    #[error(
        "the context has shifted: its first tokens are gone, so no prefix of {keep} tokens can be kept (reset instead)"
    )]
    Shifted {
        /// Tokens asked to keep.
        keep: usize,
    },
    /// Saving or loading a session's state failed.
    #[error("{path}: {source}")]
    State {
        /// The file.
        path: String,
        /// What is wrong.
        source: StateError,
    },
    /// A context outside what the model supports.
    #[error("context {context} is outside 2..={max} (the model's trained length)")]
    BadContext {
        /// The context asked for.
        context: usize,
        /// The model's trained length.
        max: usize,
    },
    /// The KV cache and scratch would not fit: refused before allocating.
    #[error("a context of {context} needs {} of KV cache and scratch, more than the {} available{}", mib(*needed), mib(*available), if *needed == u64::MAX { " (the size overflows)" } else { "" })]
    OutOfMemory {
        /// The context asked for.
        context: usize,
        /// Bytes needed (`u64::MAX` if the size overflows).
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The allocation itself failed (the system refused it).
    #[error("allocating the KV cache for a context of {context}: {reason}")]
    Alloc {
        /// The context asked for.
        context: usize,
        /// Why the system refused.
        reason: String,
    },
}

fn mib(bytes: u64) -> String {
    if bytes == u64::MAX {
        return "more than 16 EiB".into();
    }
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// The default context when the model's trained length is longer: the cache
/// is allocated up front, so it is sized for common use, not the maximum.
pub const DEFAULT_MAX_CONTEXT: usize = 4096;

/// How a session is sized; everything is allocated at creation.
#[derive(Clone, Copy, Debug)]
pub struct SessionOptions {
    /// Positions the KV cache holds; 0 takes the model's trained length, at
    /// most [`DEFAULT_MAX_CONTEXT`].
    pub context: usize,
    /// Most tokens run through the network at once in prefill.
    pub batch: usize,
    /// Whether [`Session::eval_all`] may be used (allocates `batch × vocab` logits).
    pub all_logits: bool,
    /// Threads of the session's pool; 0 takes one per physical core
    /// ([`crate::threads::default_count`]). Sessions of one thread count
    /// share one pool.
    pub threads: usize,
    /// Whether evaluation goes on past a full context (docs/DESIGN.md,
    /// "Context shift"); if not, a full context is an error.
    pub context_shift: bool,
    /// Element type of the KV cache: f16 (the default) halves its memory and
    /// the bytes attention reads; f32 keeps keys and values exact.
    pub kv_type: KvType,
    /// At most how many tokens the session will evaluate, when the caller
    /// knows (0: unknown). The cache then holds at most that many positions:
    /// a cache that never fills never shifts, so results are the same, and a
    /// short run neither waits for the kernel to zero memory it cannot use
    /// (90 MiB for SmolLM2's 4096 positions in f16) nor keeps it.
    pub token_budget: usize,
    /// Most bytes the KV cache and scratch may take; 0: the memory the system
    /// says is available (Linux's MemAvailable; no limit where it cannot say).
    pub max_memory: u64,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            context: 0,
            batch: 128,
            all_logits: false,
            threads: 0,
            context_shift: true,
            kv_type: KvType::F16,
            token_budget: 0,
            max_memory: 0,
        }
    }
}

/// One conversation's state over a shared [`Model`]: the tokens, their keys
/// and values, and scratch, all allocated at creation; evaluation appends.
///
/// ```
/// # use gpt_fast::{Model, ModelOptions, Session, SessionOptions};
/// # let path = std::env::temp_dir().join(format!("gpt-fast-doc-session-{}", std::process::id()));
/// # let h = gpt_fast::synthetic::config("test-llama").unwrap();
/// # gpt_fast::synthetic::write(&path, &h, gpt_fast::format::DType::Q8, 1, |_, _| {}).unwrap();
/// let model = Model::open(&path, ModelOptions::default())?;
/// let mut session = Session::new(&model, SessionOptions { context: 64, ..Default::default() })?;
/// let prompt = model.tokenizer().encode_prompt("hello", false);
/// let logits = session.eval(&prompt)?; // one per vocabulary entry
/// assert_eq!(logits.len(), model.tokenizer().n_vocab());
/// session.eval(&[1, 2, 3])?;
/// session.truncate(prompt.len())?; // forget the last three
/// assert_eq!(session.tokens(), Some(&prompt[..]));
/// assert!(session.eval(&[u32::MAX]).is_err()); // out of range: an error, not a panic
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), gpt_fast::Error>(())
/// ```
pub struct Session<'m> {
    model: &'m Model,
    weights: Weights<'m>,
    forward: Forward,
    cache: KvCache,
    options: SessionOptions,
    /// Position of the next token in the cache's numbering (restarts after a
    /// GPT-2 shift; keeps growing through Llama's ring).
    pos: usize,
    /// Tokens evaluated since the last reset.
    evaluated: usize,
    /// The tokens whose keys and values the cache holds, in position order
    /// (`context` entries, allocated once). Llama's ring stops recording at
    /// its wrap (`shifted`); GPT-2 keeps recording, to re-evaluate the newer
    /// half when its learned positions run out.
    tokens: Vec<u32>,
    /// The cache has shifted since the last reset: `tokens` is no longer the
    /// conversation from its start.
    shifted: bool,
}

impl<'m> Session<'m> {
    /// A session on the process's pool of `options.threads` threads
    /// ([`crate::threads::shared_pool`]), lent to every session of that many.
    pub fn new(model: &'m Model, options: SessionOptions) -> Result<Self, SessionError> {
        Self::build(model, options, None)
    }

    /// A session on `pool`, whose thread count replaces `options.threads`.
    pub fn with_pool(model: &'m Model, options: SessionOptions, pool: Arc<ThreadPool>) -> Result<Self, SessionError> {
        Self::build(model, options, Some(pool))
    }

    fn build(model: &'m Model, options: SessionOptions, pool: Option<Arc<ThreadPool>>) -> Result<Self, SessionError> {
        let h = model.hparams();
        let max = h.max_seq_len as usize;
        let context = if options.context == 0 { max.min(DEFAULT_MAX_CONTEXT) } else { options.context };
        // RoPE models could run past their trained length, but quality falls
        // apart there; learned positions cannot at all.
        if !(2..=max).contains(&context) {
            return Err(SessionError::BadContext { context, max });
        }
        let context = match options.token_budget {
            0 => context,
            budget => context.min(budget.max(2)),
        };
        let batch = options.batch.clamp(1, context);
        let threads = match (&pool, options.threads) {
            (Some(pool), _) => pool.n_threads(),
            (None, 0) => crate::threads::default_count(),
            (None, n) => n,
        };
        // Sized with checked math and refused before anything is allocated: a
        // header's max_seq_len can be 16,777,216 (386 GiB of cache for SmolLM2).
        let size = ForwardSize { sinks: DEFAULT_SINKS, batch_cap: batch, max_seqs: 1, all_logits: options.all_logits };
        let needed = KvCache::bytes_for(h, context, DEFAULT_SINKS, options.kv_type)
            .zip(Forward::scratch_bytes(h, size, threads))
            .and_then(|(kv, scratch)| kv.checked_add(scratch))
            .unwrap_or(u64::MAX);
        let available = match options.max_memory {
            0 => crate::memory::available_bytes().unwrap_or(u64::MAX),
            cap => cap,
        };
        if needed > available {
            return Err(SessionError::OutOfMemory { context, needed, available });
        }
        let cache = KvCache::new(h, context, DEFAULT_SINKS, options.kv_type)
            .map_err(|e| SessionError::Alloc { context, reason: e.to_string() })?;
        Ok(Self {
            model,
            weights: model.weights(),
            forward: Forward::with_pool(h, size, pool.unwrap_or_else(|| crate::threads::shared_pool(threads))),
            cache,
            options: SessionOptions { context, batch, threads, ..options },
            pos: 0,
            evaluated: 0,
            tokens: Vec::with_capacity(context),
            shifted: false,
        })
    }

    /// The model it runs.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Tokens evaluated since the last reset (may exceed the context).
    pub fn position(&self) -> usize {
        self.evaluated
    }

    /// Positions the KV cache holds.
    pub fn context(&self) -> usize {
        self.cache.capacity()
    }

    /// Threads of its pool.
    pub fn threads(&self) -> usize {
        self.options.threads
    }

    /// Bytes of the KV cache.
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Element type of the KV cache.
    pub fn kv_type(&self) -> KvType {
        self.cache.kv_type()
    }

    /// Forgets everything evaluated; the next token is at position 0.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.evaluated = 0;
        self.tokens.clear();
        self.shifted = false;
    }

    /// The conversation's tokens, in order, as the cache holds them; `None`
    /// once the context has shifted (its first tokens are gone).
    pub fn tokens(&self) -> Option<&[u32]> {
        (!self.shifted).then_some(&self.tokens[..])
    }

    /// Keeps the first `keep` tokens and forgets the rest: the next token is
    /// evaluated at position `keep`, attending to those only. Costs nothing
    /// (the cache's later entries are overwritten as new tokens arrive).
    /// After a context shift only `keep == 0` (a reset) or all of them is possible.
    pub fn truncate(&mut self, keep: usize) -> Result<(), SessionError> {
        if keep == 0 {
            self.reset();
            return Ok(());
        }
        if keep == self.evaluated {
            return Ok(());
        }
        if keep > self.evaluated {
            return Err(SessionError::TruncateBeyond { keep, held: self.evaluated });
        }
        if self.shifted {
            return Err(SessionError::Shifted { keep });
        }
        self.tokens.truncate(keep);
        self.pos = keep;
        self.evaluated = keep;
        Ok(())
    }

    /// Writes the session's tokens and their keys and values to `path`
    /// (a temporary file renamed into place), to be [`Session::load`]ed later
    /// by a session of the same model, with the same KV type.
    pub fn save(&self, path: &std::path::Path) -> Result<(), SessionError> {
        let fail = |source| SessionError::State { path: path.display().to_string(), source };
        if self.shifted {
            return Err(fail(StateError::Shifted));
        }
        let bytes = state_file::encode(self.model, &self.cache, &self.tokens);
        crate::format::write_replacing(path, &bytes).map_err(|e| fail(StateError::Write(e.to_string())))
    }

    /// Replaces the session's state with the one [`Session::save`] wrote to
    /// `path`. Everything is checked (magic, version, model, KV type, length,
    /// checksum) before the session changes: on an error it is as it was.
    pub fn load(&mut self, path: &std::path::Path) -> Result<(), SessionError> {
        let fail = |source| SessionError::State { path: path.display().to_string(), source };
        let bytes = std::fs::read(path).map_err(|e| fail(StateError::Read(e.to_string())))?;
        let saved = state_file::decode(self.model, &self.cache, &bytes).map_err(fail)?;
        self.reset();
        self.cache.load_positions(saved.tokens.len(), saved.kv);
        self.tokens.extend_from_slice(&saved.tokens);
        self.pos = saved.tokens.len();
        self.evaluated = saved.tokens.len();
        Ok(())
    }

    fn check(&self, tokens: &[u32]) -> Result<(), SessionError> {
        if tokens.is_empty() {
            return Err(SessionError::Empty);
        }
        let vocab = self.model.hparams().vocab_size as usize;
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(SessionError::TokenOutOfRange { id, vocab });
        }
        let needed = self.pos + tokens.len();
        if !self.options.context_shift && needed > self.context() {
            return Err(SessionError::ContextFull { needed, context: self.context() });
        }
        Ok(())
    }

    /// How many of the next tokens can run as one batch: never past the
    /// batch size, and never across a full cache (after the wrap, one at a time).
    fn next_batch(&self, remaining: usize) -> usize {
        let room = self.context().saturating_sub(self.pos);
        remaining.min(self.options.batch).min(room.max(1))
    }

    /// GPT-2's learned positions end at the context: keep the newer half of
    /// the tokens and evaluate them again from position 0 (a pause of half a
    /// context's prefill, once every half context).
    fn shift_learned_positions(&mut self) {
        let keep = self.context() / 2;
        let start = self.tokens.len() - keep;
        self.tokens.copy_within(start.., 0);
        self.tokens.truncate(keep);
        self.shifted = true;
        self.pos = 0;
        let (h, k) = (self.model.hparams(), self.model.kernels());
        let mut done = 0;
        while done < keep {
            let n = (keep - done).min(self.options.batch);
            let chunk = &self.tokens[done..done + n];
            self.forward.run(&self.weights, h, k, &mut self.cache, chunk, self.pos, LogitsMode::None, Role::Prefill);
            self.pos += n;
            done += n;
        }
    }

    /// Runs one batch of tokens of `role`; returns the logits `mode` asks for.
    fn run_batch(&mut self, chunk: &[u32], mode: LogitsMode, role: Role) -> &[f32] {
        let learned = self.model.hparams().arch == Arch::Gpt2;
        if learned && self.pos == self.context() {
            self.shift_learned_positions();
        }
        if self.pos + chunk.len() > self.context() {
            self.shifted = true; // Llama's ring wraps
        }
        if !self.shifted || learned {
            self.tokens.extend_from_slice(chunk);
        }
        let pos = self.pos;
        self.pos += chunk.len();
        self.evaluated += chunk.len();
        let (h, k) = (self.model.hparams(), self.model.kernels());
        self.forward.run(&self.weights, h, k, &mut self.cache, chunk, pos, mode, role)
    }

    /// Appends `tokens` (prefill in batches: [`Role::Prefill`], however
    /// few) and returns the logits after the last one.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<&[f32], SessionError> {
        self.check(tokens)?;
        let mut start = 0;
        loop {
            let n = self.next_batch(tokens.len() - start);
            if start + n == tokens.len() {
                return Ok(self.run_batch(&tokens[start..], LogitsMode::Last, Role::Prefill));
            }
            self.run_batch(&tokens[start..start + n], LogitsMode::None, Role::Prefill);
            start += n;
        }
    }

    /// Appends one generated token (decode: [`Role::Decode`], the order a
    /// server's batched decode gives it too) and returns the logits after it.
    pub fn decode(&mut self, token: u32) -> Result<&[f32], SessionError> {
        self.check(&[token])?;
        Ok(self.run_batch(&[token], LogitsMode::Last, Role::Decode))
    }

    /// Appends tokens and calls `each(index, logits)` with every token's logits
    /// (`vocab` values, predicting the next token). Needs `all_logits`.
    pub fn eval_each(&mut self, tokens: &[u32], mut each: impl FnMut(usize, &[f32])) -> Result<(), SessionError> {
        self.check(tokens)?;
        if !self.options.all_logits {
            return Err(SessionError::NoAllLogits);
        }
        let vocab = self.model.hparams().vocab_size as usize;
        let mut start = 0;
        while start < tokens.len() {
            let n = self.next_batch(tokens.len() - start);
            let logits = self.run_batch(&tokens[start..start + n], LogitsMode::All, Role::Prefill);
            for (i, row) in logits.chunks_exact(vocab).enumerate() {
                each(start + i, row);
            }
            start += n;
        }
        Ok(())
    }

    /// Appends at most `batch` tokens, within the context, and returns every
    /// position's logits (`(tokens.len(), vocab)`). Needs `all_logits`.
    pub fn eval_all(&mut self, tokens: &[u32]) -> Result<&[f32], SessionError> {
        self.check(tokens)?;
        if !self.options.all_logits {
            return Err(SessionError::NoAllLogits);
        }
        let room = self.next_batch(tokens.len());
        if room != tokens.len() {
            return Err(SessionError::NotOneBatch { tokens: tokens.len(), room });
        }
        Ok(self.run_batch(tokens, LogitsMode::All, Role::Prefill))
    }
}
