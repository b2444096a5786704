//! OpenAI request bodies (`/v1/chat/completions`, `/v1/completions`) parsed
//! and checked: any byte string gives a request or an [`ApiError`] naming the
//! field, never a panic (fuzzed: fuzz/fuzz_targets/server_request.rs).
//!
//! Fields OpenAI defines and this server does not use (`user`, `model`, ...)
//! are accepted and ignored, as llama.cpp's server does, so stock clients
//! work; fields it cannot honour (`n` > 1, tools) are refused by name.

use serde::Deserialize;

use crate::chat::Message;

/// An error as OpenAI's API reports it: an HTTP status and
/// `{"error": {"message", "type", "param", "code"}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// What was wrong, for the client.
    pub message: String,
    /// The offending field, if one.
    pub param: Option<String>,
}

impl ApiError {
    /// A 400 about `param` (if one field is to blame).
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self { status: 400, message: message.into(), param: param.map(str::to_string) }
    }

    /// OpenAI's `type` for this status.
    pub fn kind(&self) -> &'static str {
        match self.status {
            400 | 404 | 413 => "invalid_request_error",
            503 => "server_busy",
            _ => "server_error",
        }
    }

    /// The JSON body of the error response.
    pub fn body(&self) -> String {
        serde_json::json!({
            "error": {"message": self.message, "type": self.kind(), "param": self.param, "code": self.status}
        })
        .to_string()
    }
}

/// `stop`: one string or a list of them.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// A message's `content`: text, or a list of parts of which only text parts
/// are supported.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, Debug)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize, Debug)]
struct RawMessage {
    role: String,
    content: Option<Content>,
}

/// `prompt` of `/v1/completions`: a string, or a list holding one.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum RawPrompt {
    One(String),
    Many(Vec<String>),
}

/// The fields both endpoints share, plus each one's own, as sent.
#[derive(Deserialize, Debug)]
struct Raw {
    messages: Option<Vec<RawMessage>>,
    prompt: Option<RawPrompt>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i64>,
    min_p: Option<f32>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    stop: Option<Stop>,
    seed: Option<i64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    repeat_penalty: Option<f32>,
    /// Chat: a boolean; completions: the number of top log-probabilities.
    logprobs: Option<serde_json::Value>,
    top_logprobs: Option<i64>,
    n: Option<i64>,
    tools: Option<serde_json::Value>,
    /// llama.cpp's server's extension: never end at an end-of-generation token.
    #[serde(default)]
    ignore_eos: bool,
}

#[derive(Deserialize, Debug)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// What the client asked for, in the engine's terms.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// 0: greedy.
    pub temperature: f32,
    /// Nucleus sampling's probability mass.
    pub top_p: f32,
    /// 0: all tokens.
    pub top_k: usize,
    /// Drop tokens below this share of the most likely one's probability.
    pub min_p: f32,
    /// Subtracted from the logits of tokens already generated.
    pub presence_penalty: f32,
    /// Subtracted per earlier occurrence of a generated token.
    pub frequency_penalty: f32,
    /// llama.cpp's repetition penalty over the last 64 tokens (1: off).
    pub repeat_penalty: f32,
    /// `None`: a seed from the clock.
    pub seed: Option<u64>,
}

/// The prompt: a chat to render with the model's template, or raw text.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    /// Messages, rendered with the model's chat template.
    Chat(Vec<Message>),
    /// Text, tokenized as it is.
    Text(String),
}

#[derive(Clone, Debug, PartialEq)]
/// A checked request, whichever endpoint it came to.
pub struct Request {
    /// What to continue.
    pub prompt: Prompt,
    /// Server-sent events instead of one response.
    pub stream: bool,
    /// Streaming: a last chunk with the usage counts (`stream_options.include_usage`).
    pub include_usage: bool,
    /// `None`: until the end of the turn or a full context.
    pub max_tokens: Option<usize>,
    /// Generation stops where the text reaches one of these (not returned).
    pub stop: Vec<String>,
    /// How tokens are chosen.
    pub sampling: Sampling,
    /// Top log-probabilities per token to report; `None`: no log-probabilities.
    pub logprobs: Option<usize>,
    /// Never sample an end-of-generation token (llama.cpp's `ignore_eos`).
    pub ignore_eos: bool,
}

/// Which endpoint a body came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
}

/// Most stop strings (OpenAI allows 4).
pub const MAX_STOP: usize = 4;
/// Most top log-probabilities (OpenAI allows 20).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Parses and checks a request body.
pub fn parse(endpoint: Endpoint, body: &[u8]) -> Result<Request, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}"), None))?;
    if !value.is_object() {
        return Err(ApiError::invalid("the body must be a JSON object", None));
    }
    let raw: Raw = serde_json::from_value(value).map_err(|e| ApiError::invalid(format!("bad request: {e}"), None))?;
    let prompt = match endpoint {
        Endpoint::Chat => Prompt::Chat(messages(raw.messages)?),
        Endpoint::Completions => Prompt::Text(match raw.prompt {
            Some(RawPrompt::One(text)) => text,
            Some(RawPrompt::Many(mut texts)) if texts.len() == 1 => texts.remove(0),
            Some(RawPrompt::Many(_)) => {
                return Err(ApiError::invalid(
                    "prompt: give one string (batches of prompts are not supported)",
                    Some("prompt"),
                ))
            }
            None => return Err(ApiError::invalid("prompt is required", Some("prompt"))),
        }),
    };
    if raw.tools.as_ref().is_some_and(|t| !t.is_null()) {
        return Err(ApiError::invalid("tools are not supported", Some("tools")));
    }
    if let Some(n) = raw.n.filter(|&n| n != 1) {
        return Err(ApiError::invalid(format!("n must be 1 (got {n})"), Some("n")));
    }
    let temperature = raw.temperature.unwrap_or(0.8);
    check(temperature.is_finite() && (0.0..=2.0).contains(&temperature), "temperature", "in [0, 2]")?;
    let top_p = raw.top_p.unwrap_or(0.95);
    check(top_p.is_finite() && top_p > 0.0 && top_p <= 1.0, "top_p", "in (0, 1]")?;
    let min_p = raw.min_p.unwrap_or(0.05);
    check(min_p.is_finite() && (0.0..=1.0).contains(&min_p), "min_p", "in [0, 1]")?;
    let top_k = raw.top_k.unwrap_or(40);
    check(top_k >= 0, "top_k", "0 (all) or more")?;
    let presence_penalty = raw.presence_penalty.unwrap_or(0.0);
    check(presence_penalty.is_finite() && (-2.0..=2.0).contains(&presence_penalty), "presence_penalty", "in [-2, 2]")?;
    let frequency_penalty = raw.frequency_penalty.unwrap_or(0.0);
    check(
        frequency_penalty.is_finite() && (-2.0..=2.0).contains(&frequency_penalty),
        "frequency_penalty",
        "in [-2, 2]",
    )?;
    let repeat_penalty = raw.repeat_penalty.unwrap_or(1.0);
    check(repeat_penalty.is_finite() && repeat_penalty > 0.0, "repeat_penalty", "positive")?;
    let max_tokens = match raw.max_completion_tokens.or(raw.max_tokens) {
        None | Some(-1) => None,
        Some(n) if n >= 1 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        Some(n) => {
            return Err(ApiError::invalid(format!("max_tokens must be at least 1 (got {n})"), Some("max_tokens")))
        }
    };
    let stop = match raw.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(list)) => list,
    };
    check(stop.len() <= MAX_STOP, "stop", "at most 4 strings")?;
    check(stop.iter().all(|s| !s.is_empty()), "stop", "non-empty strings")?;
    let seed = match raw.seed {
        None | Some(-1) => None,
        Some(s) => Some(u64::try_from(s).map_err(|_| ApiError::invalid("seed must be -1 or 0 and up", Some("seed")))?),
    };
    let logprobs = logprobs(endpoint, raw.logprobs, raw.top_logprobs)?;
    Ok(Request {
        prompt,
        stream: raw.stream,
        include_usage: raw.stream_options.is_some_and(|o| o.include_usage),
        max_tokens,
        stop,
        sampling: Sampling {
            temperature,
            top_p,
            top_k: usize::try_from(top_k).unwrap_or(usize::MAX),
            min_p,
            presence_penalty,
            frequency_penalty,
            repeat_penalty,
            seed,
        },
        logprobs,
        ignore_eos: raw.ignore_eos,
    })
}

fn check(ok: bool, param: &str, range: &str) -> Result<(), ApiError> {
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!("{param} must be {range}"), Some(param)))
    }
}

fn messages(raw: Option<Vec<RawMessage>>) -> Result<Vec<Message>, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::invalid("messages is required", Some("messages")))?;
    if raw.is_empty() {
        return Err(ApiError::invalid("messages must not be empty", Some("messages")));
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, m)| {
            if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
                return Err(ApiError::invalid(
                    format!("messages[{i}].role: unknown role '{}'", m.role),
                    Some("messages"),
                ));
            }
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(text)) => text,
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.kind.as_str(), part.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(ApiError::invalid(
                                    format!("messages[{i}].content: only text parts are supported (got '{kind}')"),
                                    Some("messages"),
                                ))
                            }
                        }
                    }
                    text
                }
            };
            Ok(Message { role: m.role, content })
        })
        .collect()
}

/// Chat: `logprobs: true` with `top_logprobs: 0..=20`; completions:
/// `logprobs: 0..=5` (the count of top alternatives).
fn logprobs(
    endpoint: Endpoint,
    logprobs: Option<serde_json::Value>,
    top: Option<i64>,
) -> Result<Option<usize>, ApiError> {
    let top = match top {
        None => 0,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|&n| n <= MAX_TOP_LOGPROBS)
            .ok_or_else(|| ApiError::invalid("top_logprobs must be in 0..=20", Some("top_logprobs")))?,
    };
    match (endpoint, logprobs) {
        (_, None | Some(serde_json::Value::Null)) => Ok(None),
        (Endpoint::Chat, Some(serde_json::Value::Bool(on))) => Ok(on.then_some(top)),
        (Endpoint::Completions, Some(serde_json::Value::Number(n))) => match n.as_u64() {
            Some(n @ 0..=5) => Ok(Some(n as usize)),
            _ => Err(ApiError::invalid("logprobs must be in 0..=5", Some("logprobs"))),
        },
        (Endpoint::Chat, Some(_)) => Err(ApiError::invalid("logprobs must be a boolean", Some("logprobs"))),
        (Endpoint::Completions, Some(_)) => Err(ApiError::invalid("logprobs must be an integer", Some("logprobs"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<Request, ApiError> {
        parse(Endpoint::Chat, body.as_bytes())
    }

    #[test]
    fn a_full_chat_request_parses() {
        let r = chat(
            r#"{"model": "x", "messages": [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                "stream": true, "stream_options": {"include_usage": true}, "temperature": 0,
                "top_p": 0.5, "top_k": 3, "min_p": 0.1, "max_tokens": 7, "stop": "\n", "seed": 5,
                "presence_penalty": 0.5, "frequency_penalty": -0.5, "logprobs": true, "top_logprobs": 2,
                "n": 1, "user": "ignored"}"#,
        )
        .unwrap();
        assert_eq!(r.prompt, Prompt::Chat(vec![Message::new("system", "Be brief."), Message::new("user", "Hi")]));
        assert!(r.stream && r.include_usage);
        assert_eq!((r.max_tokens, r.stop.as_slice(), r.logprobs), (Some(7), &["\n".to_string()][..], Some(2)));
        assert_eq!(r.sampling.seed, Some(5));
        assert_eq!((r.sampling.top_k, r.sampling.temperature), (3, 0.0));
    }

    #[test]
    fn bad_bodies_are_refused_naming_the_field() {
        let refused = |body: &str, what: &str| {
            let e = chat(body).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(what), "'{what}' not in '{}'", e.message);
        };
        refused("{", "not valid JSON");
        refused("[1]", "JSON object");
        refused(r#"{"messages": "hi"}"#, "invalid type");
        refused(r#"{"messages": []}"#, "must not be empty");
        refused(r#"{"prompt": "x"}"#, "messages is required");
        refused(r#"{"messages": [{"role": "wizard", "content": "x"}]}"#, "unknown role");
        refused(r#"{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#, "invalid type");
        refused(r#"{"messages": [{"role": "user", "content": "x"}], "temperature": 9}"#, "temperature");
        refused(r#"{"messages": [{"role": "user", "content": "x"}], "n": 2}"#, "n must be 1");
        refused(r#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}"#, "max_tokens");
        refused(r#"{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 99}"#, "top_logprobs");
        refused(r#"{"messages": [{"role": "user", "content": "x"}], "logprobs": 3}"#, "boolean");
        let e = parse(Endpoint::Completions, br#"{"prompt": ["a", "b"]}"#).unwrap_err();
        assert!(e.message.contains("one string"));
        assert_eq!(parse(Endpoint::Completions, br#"{"prompt": ["a"], "logprobs": 2}"#).unwrap().logprobs, Some(2));
        assert!(e.body().contains("\"invalid_request_error\""));
    }
}
