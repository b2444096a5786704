//! Perplexity by llama.cpp's method, so figures compare directly: the text is
//! cut into non-overlapping chunks of `context` tokens, each chunk is evaluated
//! from an empty cache, and only the second half of each chunk is scored (every
//! scored token then has at least `context / 2` tokens of history).

use crate::model::Model;
use crate::session::{KvType, Session, SessionError, SessionOptions};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Perplexity {
    /// `exp(mean negative log-likelihood)`.
    pub ppl: f64,
    /// Standard error of `ppl`, as llama.cpp estimates it.
    pub stderr: f64,
    pub scored_tokens: usize,
    pub chunks: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PerplexityError {
    #[error("the text has {tokens} tokens: at least {needed} (two chunks' worth is better) are needed for context {context}")]
    TooShort { tokens: usize, needed: usize, context: usize },
    #[error("nothing to score: context {context} leaves no token in the scored half of a chunk (use a context of at least 3)")]
    NothingScored { context: usize },
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// `-log softmax(logits)[target]`, in f64.
fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = logits.iter().map(|&v| f64::from(v - max).exp()).sum();
    sum.ln() - f64::from(logits[target as usize] - max)
}

/// Running sums of negative log-likelihoods.
#[derive(Default)]
struct Tally {
    sum: f64,
    sum_sq: f64,
    count: usize,
}

impl Tally {
    fn add(&mut self, v: f64) {
        self.sum += v;
        self.sum_sq += v * v;
        self.count += 1;
    }

    fn ppl(&self) -> f64 {
        (self.sum / self.count.max(1) as f64).exp()
    }

    /// The result, or an error if nothing was scored (a mean of no terms is
    /// NaN, not a perplexity).
    fn finish(&self, chunks: usize, context: usize) -> Result<Perplexity, PerplexityError> {
        if self.count == 0 {
            return Err(PerplexityError::NothingScored { context });
        }
        let mean = self.sum / self.count as f64;
        let ppl = mean.exp();
        let var = self.sum_sq / self.count as f64 - mean * mean;
        let stderr = if var > 0.0 && self.count > 1 { (var / (self.count - 1) as f64).sqrt() * ppl } else { 0.0 };
        Ok(Perplexity { ppl, stderr, scored_tokens: self.count, chunks })
    }
}

fn session_options(context: usize, batch: usize, threads: usize, kv_type: KvType) -> SessionOptions {
    SessionOptions { context, batch, all_logits: true, threads, context_shift: true, kv_type, ..Default::default() }
}

/// Scores `tokens` in chunks of `context` (llama.cpp's method) with a
/// `kv_type` cache; `on_chunk(done, total, running_ppl)` reports progress.
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    context: usize,
    batch: usize,
    threads: usize,
    kv_type: KvType,
    mut on_chunk: impl FnMut(usize, usize, f64),
) -> Result<Perplexity, PerplexityError> {
    let chunks = tokens.len() / context.max(1);
    if context < 2 || chunks == 0 {
        return Err(PerplexityError::TooShort { tokens: tokens.len(), needed: context.max(2), context });
    }
    let mut session = Session::new(model, session_options(context, batch, threads, kv_type))?;
    let first = context / 2;
    // llama.cpp starts every chunk with BOS for a model that adds one (the
    // chunk's first token is never scored): without it a model trained to
    // always see BOS first (Gemma) scores far worse than it is.
    let tokenizer = model.tokenizer();
    let chunk_bos = if tokenizer.spec().add_bos { tokenizer.bos_id() } else { None };
    let mut chunk = Vec::with_capacity(context);
    let mut tally = Tally::default();
    for c in 0..chunks {
        chunk.clear();
        chunk.extend_from_slice(&tokens[c * context..(c + 1) * context]);
        if let Some(bos) = chunk_bos {
            chunk[0] = bos;
        }
        session.reset();
        // Logits at position j predict token j + 1; score j in [first, context - 1).
        session.eval_each(&chunk, |j, logits| {
            if j >= first && j + 1 < context {
                tally.add(nll(logits, chunk[j + 1]));
            }
        })?;
        on_chunk(c + 1, chunks, tally.ppl());
    }
    tally.finish(chunks, context)
}

/// Scores every token after the first in one pass through a `context`-slot
/// ring cache (it wraps many times on a long text): how well the model does
/// with a sliding window and attention sinks. `on_progress(done, total, ppl)`.
pub fn perplexity_stream(
    model: &Model,
    tokens: &[u32],
    context: usize,
    batch: usize,
    threads: usize,
    kv_type: KvType,
    mut on_progress: impl FnMut(usize, usize, f64),
) -> Result<Perplexity, PerplexityError> {
    if tokens.len() < 2 {
        return Err(PerplexityError::TooShort { tokens: tokens.len(), needed: 2, context });
    }
    let mut session = Session::new(model, session_options(context, batch, threads, kv_type))?;
    let mut tally = Tally::default();
    let step = context.max(1);
    for (c, part) in tokens[..tokens.len() - 1].chunks(step).enumerate() {
        let offset = c * step;
        session.eval_each(part, |j, logits| tally.add(nll(logits, tokens[offset + j + 1])))?;
        on_progress(offset + part.len(), tokens.len() - 1, tally.ppl());
    }
    tally.finish(1, context)
}

#[cfg(test)]
mod tests {
    use super::nll;

    #[test]
    fn nll_of_uniform_logits_is_log_vocab() {
        assert!((nll(&[0.5; 8], 3) - 8f64.ln()).abs() < 1e-12);
        assert!(nll(&[10.0, 0.0], 0) < 1e-4);
    }
}
