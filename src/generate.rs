//! Text generation on a [`Session`]: prompt in, tokens out one at a time, with
//! sampling, streaming detokenization and stop conditions. Every buffer is
//! allocated in [`Generator::new`]; a step allocates nothing.
//!
//! A generator is a conversation: each [`Generator::generate`] appends its
//! prompt to what the session already holds, so only the new tokens are
//! evaluated. The token that ended a turn (the end-of-turn token, the last
//! one before `max_tokens`, ...) has been sampled but not evaluated; it is
//! kept and evaluated first in the next turn, as part of the conversation.

use std::time::{Duration, Instant};

use crate::model::Model;
use crate::sampler::{Sampler, SamplerError, SamplerParams};
use crate::session::{Session, SessionError, SessionOptions};
use crate::tokenizer::StreamDecoder;

/// Why [`Generator::generate`] could not run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum GenerateError {
    /// The prompt has no tokens (and no earlier turn to continue).
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The prompt is longer than the context.
    #[error("the prompt has {tokens} tokens but the context holds {context} (raise -c)")]
    PromptTooLong {
        /// Tokens in the prompt.
        tokens: usize,
        /// Positions the context holds.
        context: usize,
    },
    /// A sampling setting is out of range (the message names it).
    #[error(transparent)]
    BadSampler(#[from] SamplerError),
    /// The session refused (see [`SessionError`]).
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Most steps whose latency [`Generator::step_times`] keeps (1 MiB).
pub const MAX_STEP_TIMES: usize = 1 << 16;

/// Why generation ended. Exhaustive on purpose: a new way to end is
/// something every caller must decide how to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token: its end-of-sequence
    /// token or an end-of-turn token ([`crate::tokenizer::Tokenizer::end_of_generation_ids`]).
    Eos,
    /// The token limit was reached.
    MaxTokens,
    /// The text reached a stop string (which is not emitted).
    StopString,
    /// The callback asked to stop.
    Cancelled,
    /// The context is full and context shift is off.
    ContextFull,
}

/// What one [`Generator::generate`] call did.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateStats {
    /// Tokens evaluated before the first new one: the prompt's, and the
    /// previous turn's last token if there was one.
    pub prompt_tokens: usize,
    /// Time to evaluate them and pick the first new token.
    pub prompt_time: Duration,
    /// Tokens generated (the end-of-generation token is not counted).
    pub generated_tokens: usize,
    /// Time from the first new token to the end.
    pub generate_time: Duration,
    /// Why generation ended.
    pub stop: StopReason,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// At most this many tokens.
    pub max_tokens: usize,
    /// How this turn's tokens are chosen. A generator keeps the tokens it has
    /// seen across turns (for the repetition penalty) and its RNG's place
    /// while the seed stays the same ([`Sampler::set_params`]).
    pub sampler: SamplerParams,
    /// Generation stops when the text reaches any of these (not emitted).
    pub stop: Vec<String>,
    /// Never sample an end-of-generation token (EOS or an end-of-turn
    /// token), so generation runs to `max_tokens` (benchmarks, long-context
    /// tests).
    pub ignore_eos: bool,
}

impl Default for GenerateParams {
    /// 256 tokens (a bound, so that a default never runs for ever), the
    /// default sampler, no stop strings.
    fn default() -> Self {
        Self { max_tokens: 256, sampler: SamplerParams::default(), stop: Vec::new(), ignore_eos: false }
    }
}

/// Whether to go on after a piece of text: the callback's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on generating.
    Continue,
    /// Stop now ([`StopReason::Cancelled`]).
    Stop,
}

/// A conversation: a [`Session`] with a sampler, a streaming detokenizer and
/// stop conditions. Each [`Generator::generate`] appends a turn.
///
/// ```
/// # use gpt_fast::{Flow, GenerateParams, Generator, Model, ModelOptions, SessionOptions};
/// # fn main() -> Result<(), gpt_fast::Error> {
/// # let path = std::env::temp_dir().join(format!("gpt-fast-doc-gen-{}", std::process::id()));
/// # let h = gpt_fast::synthetic::config("test-llama").unwrap();
/// # gpt_fast::synthetic::write(&path, &h, gpt_fast::format::DType::Q8, 1, |_, _| {}).unwrap();
/// let model = Model::open(&path, ModelOptions::default())?;
/// let mut chat = Generator::new(&model, SessionOptions { context: 128, ..Default::default() })?;
/// let params = GenerateParams { max_tokens: 4, ..Default::default() };
/// chat.generate("Hi", false, &params, |_| Flow::Continue)?;
/// let first_turn = chat.len();
/// chat.generate(" again", false, &params, |_| Flow::Continue)?;
/// chat.truncate(first_turn)?; // as if the second turn never happened
/// assert_eq!(chat.len(), first_turn);
/// # std::fs::remove_file(&path).unwrap();
/// # Ok(())
/// # }
/// ```
pub struct Generator<'m> {
    session: Session<'m>,
    sampler: Sampler,
    decoder: StreamDecoder,
    /// Text decoded but not yet handed out: held back while it could be the
    /// start of a stop string.
    pending: String,
    /// This turn's tokens to evaluate: the last turn's final token, then the prompt's.
    input: Vec<u32>,
    /// The last sampled token, which ended the previous turn before it was evaluated.
    unevaluated: Option<u32>,
    /// Per generated token, the time its step took (for latency percentiles).
    step_times: Vec<Duration>,
}

impl<'m> Generator<'m> {
    /// A generator over a new session of `model`. The sampling settings come
    /// with each [`Generator::generate`] call.
    pub fn new(model: &'m Model, options: SessionOptions) -> Result<Self, GenerateError> {
        let session = Session::new(model, options)?;
        let context = session.context();
        Ok(Self {
            sampler: Sampler::new(SamplerParams::default(), model.hparams().vocab_size as usize),
            session,
            decoder: StreamDecoder::new(),
            pending: String::with_capacity(1024),
            input: Vec::with_capacity(context),
            unevaluated: None,
            step_times: Vec::new(),
        })
    }

    /// The session underneath (its tokens, context, threads).
    pub fn session(&self) -> &Session<'m> {
        &self.session
    }

    /// How long each generated token's step took, in order (after `generate`).
    pub fn step_times(&self) -> &[Duration] {
        &self.step_times
    }

    /// The conversation's length in tokens: the session's and the one
    /// that ended the last turn.
    pub fn len(&self) -> usize {
        self.session.position() + usize::from(self.unevaluated.is_some())
    }

    /// Whether the conversation is empty (the next prompt starts with BOS).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The conversation's tokens ([`Generator::len`] of them); `None` once
    /// the context has shifted.
    pub fn tokens(&self) -> Option<impl Iterator<Item = u32> + '_> {
        Some(self.session.tokens()?.iter().copied().chain(self.unevaluated))
    }

    /// Appends `tokens` to the conversation (after the last turn's final
    /// token, if it is still to be evaluated) and returns the logits after
    /// the last one: raw access for callers that sample themselves.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<&[f32], GenerateError> {
        self.input.clear();
        self.input.extend(self.unevaluated);
        self.input.extend_from_slice(tokens);
        let logits = self.session.eval(&self.input)?;
        self.unevaluated = None;
        for &t in &self.input {
            self.sampler.accept(t);
        }
        Ok(logits)
    }

    /// Appends one token the caller sampled from the last logits and returns
    /// the logits after it: a caller's own decode loop. Unlike
    /// [`Generator::eval`] (prefill), its tokens take the order in which
    /// generated tokens are summed ([`Session::decode`]: the fast one-token
    /// path for float weights, and the same bits as `generate` and a
    /// server's batched decode give them).
    pub fn decode(&mut self, token: u32) -> Result<&[f32], GenerateError> {
        if let Some(last) = self.unevaluated {
            self.session.decode(last)?;
            self.sampler.accept(last);
            self.unevaluated = None;
        }
        let logits = self.session.decode(token)?;
        self.sampler.accept(token);
        Ok(logits)
    }

    /// Forgets the conversation: an empty cache, the sampler restarted.
    pub fn reset(&mut self) {
        self.session.reset();
        self.sampler.reset();
        self.unevaluated = None;
        self.decoder = StreamDecoder::new();
        self.pending.clear();
    }

    /// Keeps the conversation's first `keep` tokens and forgets the rest
    /// ([`Session::truncate`]); the repetition penalty then sees only the
    /// kept ones.
    pub fn truncate(&mut self, keep: usize) -> Result<(), GenerateError> {
        if keep == self.len() {
            return Ok(());
        }
        if keep > self.len() {
            return Err(SessionError::TruncateBeyond { keep, held: self.len() }.into());
        }
        self.session.truncate(keep)?;
        self.unevaluated = None;
        self.sampler.forget_seen();
        self.see_recent_tokens();
        Ok(())
    }

    /// Replaces the conversation with the state [`Session::save`] wrote to
    /// `path` (`self.session().save(path)`: the tokens evaluated so far, not
    /// the one that ended the last turn). On an error the conversation is as
    /// it was ([`Session::load`] checks the whole file first).
    pub fn load(&mut self, path: &std::path::Path) -> Result<(), GenerateError> {
        self.session.load(path)?;
        self.unevaluated = None;
        self.decoder = StreamDecoder::new();
        self.pending.clear();
        self.sampler.reset();
        self.see_recent_tokens();
        Ok(())
    }

    /// Feeds the repetition penalty the session's last tokens, as if they
    /// had just been evaluated.
    fn see_recent_tokens(&mut self) {
        let kept = self.session.tokens().unwrap_or(&[]);
        let recent = kept.len().saturating_sub(self.sampler.params().repeat_last_n);
        kept[recent..].iter().for_each(|&t| self.sampler.accept(t));
    }

    /// Appends `prompt` to the conversation (special-token text recognised
    /// if `parse_special`; BOS first if the conversation is empty), evaluates
    /// what the session does not hold yet, then generates, handing each piece
    /// of text to `on_text` as soon as it is complete UTF-8 and cannot be the
    /// start of a stop string. An empty prompt continues the last turn.
    pub fn generate(
        &mut self,
        prompt: &str,
        parse_special: bool,
        params: &GenerateParams,
        mut on_text: impl FnMut(&str) -> Flow,
    ) -> Result<GenerateStats, GenerateError> {
        params.sampler.validate().map_err(GenerateError::BadSampler)?;
        let model = self.session.model();
        let tokenizer = model.tokenizer();
        self.input.clear();
        if self.is_empty() {
            tokenizer.encode_prompt_into(prompt, parse_special, &mut self.input);
        } else {
            self.input.extend(self.unevaluated);
            tokenizer.encode_into(prompt, parse_special, &mut self.input);
        }
        if self.input.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        let context = self.session.context();
        if self.input.len() > context {
            return Err(GenerateError::PromptTooLong { tokens: self.input.len(), context });
        }
        self.sampler.set_params(params.sampler);
        self.step_times.clear();
        // Latencies of the first MAX_STEP_TIMES steps: `max_tokens` may be
        // unbounded (`usize::MAX`) and is no size to allocate.
        self.step_times.reserve(params.max_tokens.min(MAX_STEP_TIMES));
        self.sampler.ban(if params.ignore_eos { tokenizer.end_of_generation_ids() } else { &[] });
        let start = Instant::now();
        let logits = self.session.eval(&self.input)?;
        // Evaluated: the carried token is in the session now.
        self.unevaluated = None;
        for &t in &self.input {
            self.sampler.accept(t);
        }
        let mut token = self.sampler.sample(logits);
        let prompt_time = start.elapsed();
        let mut generated = 0;
        let start = Instant::now();
        let longest_stop = params.stop.iter().map(String::len).max().unwrap_or(0);
        let stop = loop {
            let step_start = Instant::now();
            if tokenizer.is_end_of_generation(token) {
                break StopReason::Eos;
            }
            generated += 1;
            self.sampler.accept(token);
            self.decoder.push(tokenizer, token, &mut self.pending).expect("sampled ids are in range");
            if let Some(at) = params.stop.iter().filter_map(|s| self.pending.find(s.as_str())).min() {
                self.pending.truncate(at);
                on_text(&self.pending);
                self.pending.clear();
                break StopReason::StopString;
            }
            // Hand out all but a tail that could still grow into a stop string.
            let keep = held_back(&self.pending, &params.stop, longest_stop);
            let cut = self.pending.len() - keep;
            if cut > 0 {
                let flow = on_text(&self.pending[..cut]);
                self.pending.drain(..cut);
                if flow == Flow::Stop {
                    break StopReason::Cancelled;
                }
            }
            if generated >= params.max_tokens {
                break StopReason::MaxTokens;
            }
            match self.session.decode(token) {
                Ok(logits) => token = self.sampler.sample(logits),
                Err(SessionError::ContextFull { .. }) => break StopReason::ContextFull,
                Err(e) => return Err(e.into()),
            }
            if self.step_times.len() < self.step_times.capacity() {
                self.step_times.push(step_start.elapsed());
            }
        };
        self.unevaluated = Some(token);
        self.decoder.finish(&mut self.pending);
        if stop != StopReason::StopString && !self.pending.is_empty() {
            on_text(&self.pending);
        }
        self.pending.clear();
        Ok(GenerateStats {
            prompt_tokens: self.input.len(),
            prompt_time,
            generated_tokens: generated,
            generate_time: start.elapsed(),
            stop,
        })
    }
}

/// Bytes at the end of `text` that are a proper prefix of some stop string.
pub(crate) fn held_back(text: &str, stops: &[String], longest: usize) -> usize {
    let max = longest.saturating_sub(1).min(text.len());
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && stops.iter().any(|s| s.starts_with(&text[text.len() - n..]))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::held_back;

    #[test]
    fn holds_back_only_possible_stop_prefixes() {
        let stops = vec!["\nUser:".to_string()];
        assert_eq!(held_back("hello\nUs", &stops, 6), 3);
        assert_eq!(held_back("hello", &stops, 6), 0);
        assert_eq!(held_back("a\n", &stops, 6), 1);
    }
}
