//! A multi-turn conversation over one KV cache. Each turn renders the whole
//! conversation with the model's chat template, but evaluates only what the
//! cache does not hold yet: the cache holds the text `held` (the earlier
//! turns as rendered, the replies as generated), and as long as the new
//! rendering starts with it only the rest is evaluated. A template that
//! renders past turns otherwise (trimmed, thinking removed), a changed
//! system message or a loaded conversation starts the cache afresh.

use std::path::Path;

use gpt_fast::chat::{self, ChatTemplate, Message};
use gpt_fast::generate::{Flow, GenerateError, GenerateParams, Generator, StopReason};
use gpt_fast::model::Model;
use gpt_fast::session::SessionError;

use super::saved;

/// What one turn cost and how it ended.
pub struct TurnReport {
    /// Prompt tokens evaluated for this turn (the turn's text, plus the
    /// token that ended the last reply).
    pub evaluated: usize,
    /// Tokens already in the KV cache when the turn started.
    pub kept: usize,
    /// Tokens of the reply.
    pub generated: usize,
    /// The reply's tokens per second.
    pub tokens_per_second: f64,
    pub stop: StopReason,
}

pub struct Conversation<'m> {
    model: &'m Model,
    template: ChatTemplate,
    generator: Generator<'m>,
    params: GenerateParams,
    messages: Vec<Message>,
    /// The conversation's text as the generator holds it, without a leading
    /// BOS token's text.
    held: String,
}

impl<'m> Conversation<'m> {
    pub fn new(
        model: &'m Model,
        template: ChatTemplate,
        generator: Generator<'m>,
        params: GenerateParams,
        system: Option<&str>,
    ) -> Self {
        let messages = system.map(|s| Message::new("system", s)).into_iter().collect();
        Self { model, template, generator, params, messages, held: String::new() }
    }

    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The system message, if the conversation has one.
    pub fn system(&self) -> Option<&str> {
        self.messages.first().filter(|m| m.role == "system").map(|m| m.content.as_str())
    }

    /// Forgets every turn but the system message.
    pub fn reset(&mut self) {
        self.messages.retain(|m| m.role == "system");
        self.forget_cache();
    }

    /// Replaces the system message (the next turn evaluates the whole
    /// conversation again: its first tokens changed).
    pub fn set_system(&mut self, text: &str) {
        match self.messages.first_mut().filter(|m| m.role == "system") {
            Some(m) => m.content = text.to_string(),
            None => self.messages.insert(0, Message::new("system", text)),
        }
    }

    fn forget_cache(&mut self) {
        self.generator.reset();
        self.held.clear();
    }

    /// Writes the conversation to `path` and its KV cache beside it; the
    /// cache cannot be saved once the context has shifted, which is
    /// reported as a note: the conversation itself is saved all the same.
    pub fn save(&self, path: &Path) -> Result<Option<String>, String> {
        crate::cli::check_output_path(path)?;
        let state = saved::state_path(path);
        let note = match self.generator.session().save(&state) {
            Ok(()) => None,
            Err(e) => {
                let _ = std::fs::remove_file(&state);
                Some(format!("the KV cache was not saved ({e}); loading evaluates the conversation again"))
            }
        };
        saved::save(path, &self.messages)?;
        Ok(note)
    }

    /// Replaces the conversation with the one saved at `path`; with its KV
    /// cache when `path.state` is there and belongs to this model, else the
    /// next turn evaluates it all (the note says why).
    pub fn load(&mut self, path: &Path) -> Result<Option<String>, String> {
        self.messages = saved::load(path)?;
        self.forget_cache();
        let state = saved::state_path(path);
        if !state.is_file() {
            return Ok(Some(format!("no {}: the next turn evaluates the whole conversation", state.display())));
        }
        if let Err(e) = self.generator.load(&state) {
            return Ok(Some(format!("{e}; the next turn evaluates the whole conversation")));
        }
        let tokenizer = self.model.tokenizer();
        let tokens: Vec<u32> = self.generator.tokens().map(Iterator::collect).unwrap_or_default();
        let text = match tokens.split_first() {
            Some((&first, rest)) if tokenizer.spec().add_bos && Some(first) == tokenizer.bos_id() => rest,
            _ => &tokens[..],
        };
        self.held = tokenizer.decode(text).map_err(|e| e.to_string())?;
        Ok(None)
    }

    /// One user turn: the reply handed to `on_text` piece by piece as it is
    /// generated (`Flow::Stop` ends it); the reply, even a stopped one, joins
    /// the conversation. On an error the conversation is as before the turn.
    pub fn turn(&mut self, text: &str, on_text: impl FnMut(&str) -> Flow) -> Result<TurnReport, String> {
        self.messages.push(Message::new("user", text));
        let report = self.reply(on_text);
        if report.is_err() {
            self.messages.pop();
        }
        report
    }

    fn reply(&mut self, mut on_text: impl FnMut(&str) -> Flow) -> Result<TurnReport, String> {
        let tokenizer = self.model.tokenizer();
        let rendered = self.template.render(&self.messages, true).map_err(|e| e.to_string())?;
        let rendered = chat::strip_leading_bos(&rendered, tokenizer.spec()).to_string();
        if !rendered.starts_with(&self.held) {
            self.forget_cache();
        }
        let kept = self.generator.session().position();
        let mut reply = String::new();
        let stats = self.generator.generate(&rendered[self.held.len()..], true, &self.params, |piece| {
            reply.push_str(piece);
            on_text(piece)
        });
        let stats = match stats {
            Ok(stats) => stats,
            Err(e) => {
                // The cache may hold part of a turn the conversation does not.
                self.forget_cache();
                let outgrown = matches!(
                    e,
                    GenerateError::PromptTooLong { .. } | GenerateError::Session(SessionError::ContextFull { .. })
                );
                return Err(match outgrown {
                    true => format!("{e}: /reset starts again (or /save, then chat with a larger -c and /load)"),
                    false => e.to_string(),
                });
            }
        };
        self.held = rendered;
        self.held.push_str(&reply);
        if stats.stop == StopReason::Eos {
            // The token that ended the reply is not printed, but it is the
            // first the next turn evaluates: it is part of the held text.
            let ended = self.generator.tokens().and_then(Iterator::last);
            match ended.and_then(|id| tokenizer.token_bytes(id)) {
                Some(bytes) => self.held.push_str(&String::from_utf8_lossy(bytes)),
                None => self.forget_cache(),
            }
        }
        self.messages.push(Message::new("assistant", &reply));
        let seconds = stats.generate_time.as_secs_f64();
        Ok(TurnReport {
            evaluated: stats.prompt_tokens,
            kept,
            generated: stats.generated_tokens,
            tokens_per_second: if seconds > 0.0 { stats.generated_tokens as f64 / seconds } else { 0.0 },
            stop: stats.stop,
        })
    }
}
