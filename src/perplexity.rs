//! Perplexity by llama.cpp's method, so figures compare directly: the text is
//! cut into non-overlapping chunks of `context` tokens, each chunk is evaluated
//! from an empty cache, and only the second half of each chunk is scored (every
//! scored token then has at least `context / 2` tokens of history).

use crate::model::Model;
use crate::session::{Session, SessionError, SessionOptions};

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
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// `-log softmax(logits)[target]`, in f64.
fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = logits.iter().map(|&v| f64::from(v - max).exp()).sum();
    sum.ln() - f64::from(logits[target as usize] - max)
}

/// Scores `tokens` in chunks of `context`; `on_chunk(done, total, running_ppl)` reports progress.
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    context: usize,
    batch: usize,
    threads: usize,
    mut on_chunk: impl FnMut(usize, usize, f64),
) -> Result<Perplexity, PerplexityError> {
    let chunks = tokens.len() / context.max(1);
    if context < 2 || chunks == 0 {
        return Err(PerplexityError::TooShort { tokens: tokens.len(), needed: context.max(2), context });
    }
    let vocab = model.hparams().vocab_size as usize;
    let options = SessionOptions { context, batch, all_logits: true, threads };
    let mut session = Session::new(model, options)?;
    let first = context / 2;
    let (mut sum, mut sum_sq, mut count) = (0f64, 0f64, 0usize);
    for c in 0..chunks {
        let chunk = &tokens[c * context..(c + 1) * context];
        session.reset();
        let mut start = 0;
        while start < context {
            let end = (start + batch).min(context);
            let logits = session.eval_all(&chunk[start..end])?;
            // Logits at position j predict token j + 1; score j in [first, context - 1).
            for j in start.max(first)..end.min(context - 1) {
                let v = nll(&logits[(j - start) * vocab..][..vocab], chunk[j + 1]);
                sum += v;
                sum_sq += v * v;
                count += 1;
            }
            start = end;
        }
        on_chunk(c + 1, chunks, (sum / count as f64).exp());
    }
    let mean = sum / count as f64;
    let ppl = mean.exp();
    let var = sum_sq / count as f64 - mean * mean;
    let stderr = if var > 0.0 && count > 1 { (var / (count - 1) as f64).sqrt() * ppl } else { 0.0 };
    Ok(Perplexity { ppl, stderr, scored_tokens: count, chunks })
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
