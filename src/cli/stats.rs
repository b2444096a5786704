//! `run`'s closing report: timings and why generation stopped, as text on
//! stderr (in the spirit of llama.cpp's `llama_perf_context_print`) and as
//! JSON for `--json-stats`.

use std::fmt::Write;
use std::time::Duration;

/// Why a run stopped, as the user sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Eos,
    MaxTokens,
    StopString,
    ContextFull,
    Interrupted,
}

impl Ending {
    /// The JSON name.
    fn key(self) -> &'static str {
        match self {
            Self::Eos => "eos",
            Self::MaxTokens => "max_tokens",
            Self::StopString => "stop_string",
            Self::ContextFull => "context_full",
            Self::Interrupted => "interrupted",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            Self::Eos => "end-of-sequence or end-of-turn token (EOS)",
            Self::MaxTokens => "-n reached",
            Self::StopString => "stop string (-r) reached",
            Self::ContextFull => "context full (--no-context-shift)",
            Self::Interrupted => "interrupted (Ctrl-C)",
        }
    }
}

pub struct RunStats {
    /// Opening the model and allocating the session.
    pub load: Duration,
    pub prompt_tokens: usize,
    /// Evaluating the prompt and sampling the first token.
    pub prompt: Duration,
    /// From the start of generation (tokenizing the prompt) to the first
    /// generated text on stdout; `None` if nothing was generated.
    pub first_token: Option<Duration>,
    pub generated_tokens: usize,
    pub generate: Duration,
    /// From the process's start.
    pub total: Duration,
    pub stop: Ending,
    pub seed: u64,
    pub threads: usize,
    pub context: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

impl RunStats {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "load:        {:10.2} ms", ms(self.load));
        let _ = writeln!(
            out,
            "prompt:      {:10.2} ms, {} tokens, {:.2} tok/s",
            ms(self.prompt),
            self.prompt_tokens,
            per_second(self.prompt_tokens, self.prompt)
        );
        match self.first_token {
            Some(t) => _ = writeln!(out, "first token: {:10.2} ms from the start of the prompt's evaluation", ms(t)),
            None => _ = writeln!(out, "first token:          - (none generated)"),
        }
        let _ = writeln!(
            out,
            "generated:   {:10.2} ms, {} tokens, {:.2} tok/s",
            ms(self.generate),
            self.generated_tokens,
            per_second(self.generated_tokens, self.generate)
        );
        let _ = writeln!(out, "total:       {:10.2} ms", ms(self.total));
        let _ = writeln!(out, "stopped:     {}", self.stop.explain());
        out
    }

    pub fn json(&self) -> String {
        // Microseconds are all a wall clock here can tell.
        let ms = |d: Duration| (ms(d) * 1e3).round() / 1e3;
        let per_second = |n, d| (per_second(n, d) * 1e3).round() / 1e3;
        let value = serde_json::json!({
            "load_ms": ms(self.load),
            "prompt_tokens": self.prompt_tokens,
            "prompt_ms": ms(self.prompt),
            "prompt_tokens_per_second": per_second(self.prompt_tokens, self.prompt),
            "first_token_ms": self.first_token.map(ms),
            "generated_tokens": self.generated_tokens,
            "generate_ms": ms(self.generate),
            "generate_tokens_per_second": per_second(self.generated_tokens, self.generate),
            "total_ms": ms(self.total),
            "stop": self.stop.key(),
            "seed": self.seed,
            "threads": self.threads,
            "context": self.context,
        });
        format!("{value}\n")
    }
}
