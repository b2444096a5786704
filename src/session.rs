//! A session: one conversation's state (KV cache, scratch, position) over a
//! shared [`Model`]. Sessions are independent; each owns its cache.

use crate::model::{Forward, KvCache, LogitsMode, Model, Weights};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("context full: {needed} positions needed, the context holds {context}")]
    ContextFull { needed: usize, context: usize },
    #[error("token id {id} is out of range (vocabulary of {vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("nothing to evaluate: no tokens")]
    Empty,
    #[error("context {context} is outside 1..={max} (the model's trained length)")]
    BadContext { context: usize, max: usize },
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
    /// Threads of the session's pool; 0 takes one per CPU the process may use.
    pub threads: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self { context: 0, batch: 128, all_logits: false, threads: 0 }
    }
}

pub struct Session<'m> {
    model: &'m Model,
    weights: Weights<'m>,
    forward: Forward,
    cache: KvCache,
    pos: usize,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m Model, options: SessionOptions) -> Result<Self, SessionError> {
        let h = model.hparams();
        let max = h.max_seq_len as usize;
        let context = if options.context == 0 { max.min(DEFAULT_MAX_CONTEXT) } else { options.context };
        if context > max {
            return Err(SessionError::BadContext { context, max });
        }
        let batch = options.batch.clamp(1, context);
        let threads = match options.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(Self {
            model,
            weights: model.weights(),
            forward: Forward::new(h, context, batch, options.all_logits, threads),
            cache: KvCache::new(h, context),
            pos: 0,
        })
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Positions evaluated so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn context(&self) -> usize {
        self.cache.capacity()
    }

    /// Bytes of the KV cache.
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Forgets everything evaluated; the next token is at position 0.
    pub fn reset(&mut self) {
        self.pos = 0;
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
        if needed > self.context() {
            return Err(SessionError::ContextFull { needed, context: self.context() });
        }
        Ok(())
    }

    /// Appends `tokens` (prefill in batches) and returns the logits after the last one.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<&[f32], SessionError> {
        self.check(tokens)?;
        let batch = self.forward.batch_cap();
        let (h, k) = (self.model.hparams(), self.model.kernels());
        let last_start = (tokens.len() - 1) / batch * batch;
        for chunk in tokens[..last_start].chunks(batch) {
            self.forward.run(&self.weights, h, k, &mut self.cache, chunk, self.pos, LogitsMode::None);
            self.pos += chunk.len();
        }
        let last = &tokens[last_start..];
        let pos = self.pos;
        self.pos += last.len();
        Ok(self.forward.run(&self.weights, h, k, &mut self.cache, last, pos, LogitsMode::Last))
    }

    /// Appends at most `batch` tokens and returns every position's logits
    /// (`(tokens.len(), vocab)`). Needs `all_logits` in the options.
    pub fn eval_all(&mut self, tokens: &[u32]) -> Result<&[f32], SessionError> {
        self.check(tokens)?;
        assert!(tokens.len() <= self.forward.batch_cap(), "eval_all takes at most one batch");
        let pos = self.pos;
        self.pos += tokens.len();
        let (h, k) = (self.model.hparams(), self.model.kernels());
        Ok(self.forward.run(&self.weights, h, k, &mut self.cache, tokens, pos, LogitsMode::All))
    }
}
