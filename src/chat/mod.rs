//! Chat templates: a conversation turned into the model's prompt text by the
//! Jinja template the model ships (GGUF `tokenizer.chat_template`, HF
//! `chat_template`; the model file keeps it verbatim, docs/FORMAT.md).
//!
//! Rendering follows Hugging Face transformers' `apply_chat_template`, the
//! convention these templates are written for: jinja2 with `trim_blocks`,
//! `lstrip_blocks` and loop controls; the variables `messages`, `tools`,
//! `documents`, `add_generation_prompt` and the special tokens (`bos_token`,
//! `eos_token`, `unk_token`, `pad_token`, each only when the model has it);
//! the functions `raise_exception` and `strftime_now`; a `tojson` that is
//! Python's `json.dumps` (no HTML escaping). minijinja does the Jinja part,
//! minijinja-contrib's pycompat the Python string and dict methods, and
//! `python` Python's spelling of printed values (`None`, `True`, dicts).
//! tests/chat_templates.rs checks all this against transformers itself on
//! every template in llama.cpp's `models/templates/`.
//!
//! A model file without a template gets ChatML ([`CHATML`]), the fallback
//! llama.cpp also uses.

mod python;

use std::sync::Arc;

use chrono::format::{Item, StrftimeItems};
use chrono::NaiveDateTime;
use minijinja::value::{Kwargs, Object, ObjectRepr, Rest, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};

use crate::tokenizer::TokenizerSpec;

/// A chat template that did not compile or failed to render: one line, with
/// the template line where minijinja knows it.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChatError {
    #[error("the chat template does not compile: {0}")]
    Compile(String),
    #[error("the chat template failed: {0}")]
    Render(String),
}

/// ChatML (`<|im_start|>role\n…<|im_end|>\n`), for model files without a
/// template of their own.
pub const CHATML: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// The name the template has in error messages.
const TEMPLATE_NAME: &str = "chat_template";

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user`, `assistant`, … as the template expects.
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message { role: role.to_string(), content: content.to_string() }
    }
}

/// The special tokens' text, passed to the template as `bos_token`, … when
/// present (transformers passes its tokenizer's special tokens map).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub unk: Option<String>,
    pub pad: Option<String>,
}

impl SpecialTokens {
    /// The text of the tokenizer's special tokens (lossy for the rare token
    /// that is not UTF-8).
    pub fn from_tokenizer(spec: &TokenizerSpec) -> SpecialTokens {
        let text = |id: Option<u32>| {
            let bytes = spec.tokens.get(id? as usize)?;
            Some(String::from_utf8_lossy(bytes).into_owned())
        };
        SpecialTokens { bos: text(spec.bos_id), eos: text(spec.eos_id), unk: text(spec.unk_id), pad: text(spec.pad_id) }
    }
}

/// What `strftime_now` reads: local time unless a test fixes it.
pub type Clock = Arc<dyn Fn() -> NaiveDateTime + Send + Sync>;

/// A compiled chat template with the model's special tokens.
pub struct ChatTemplate {
    env: Environment<'static>,
    tokens: SpecialTokens,
    is_fallback: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("tokens", &self.tokens).field("is_fallback", &self.is_fallback).finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`; `strftime_now` reads the local clock.
    pub fn new(source: &str, tokens: SpecialTokens) -> Result<ChatTemplate, ChatError> {
        Self::with_clock(source, tokens, Arc::new(|| chrono::Local::now().naive_local()))
    }

    /// Compiles `source` with `strftime_now` reading `clock`.
    pub fn with_clock(source: &str, tokens: SpecialTokens, clock: Clock) -> Result<ChatTemplate, ChatError> {
        let mut env = environment(clock);
        env.add_template_owned(TEMPLATE_NAME, generation_blocks_as_if(source))
            .map_err(|e| ChatError::Compile(e.to_string()))?;
        Ok(ChatTemplate { env, tokens, is_fallback: false })
    }

    /// The tokenizer's own template, or [`CHATML`] if it has none.
    pub fn for_tokenizer(spec: &TokenizerSpec) -> Result<ChatTemplate, ChatError> {
        let tokens = SpecialTokens::from_tokenizer(spec);
        if spec.chat_template.trim().is_empty() {
            let mut template = ChatTemplate::new(CHATML, tokens)?;
            template.is_fallback = true;
            Ok(template)
        } else {
            ChatTemplate::new(&spec.chat_template, tokens)
        }
    }

    /// True for the ChatML stand-in of a model without a template.
    pub fn is_fallback(&self) -> bool {
        self.is_fallback
    }

    /// The prompt text for `messages`; with `add_generation_prompt`, it ends
    /// with the assistant's turn opened.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, ChatError> {
        let messages = messages
            .iter()
            .map(|m| Value::from_pairs([("role", m.role.as_str()), ("content", m.content.as_str())]))
            .collect();
        self.render_values(messages, None, add_generation_prompt)
    }

    /// As [`render`](Self::render), for messages with any fields (tool calls,
    /// content parts …) and a tool list, as JSON-like values.
    pub fn render_values(
        &self,
        messages: Value,
        tools: Option<Value>,
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let mut context = vec![
            ("messages", messages),
            ("tools", tools.unwrap_or(Value::from(()))),
            ("documents", Value::from(())),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
        ];
        let tokens = [
            ("bos_token", &self.tokens.bos),
            ("eos_token", &self.tokens.eos),
            ("unk_token", &self.tokens.unk),
            ("pad_token", &self.tokens.pad),
        ];
        for (name, text) in tokens {
            if let Some(text) = text {
                context.push((name, Value::from(text.as_str())));
            }
        }
        let template = self.env.get_template(TEMPLATE_NAME).expect("added at construction");
        template.render(Value::from_pairs(context)).map_err(|e| ChatError::Render(e.to_string()))
    }
}

/// The rendered prompt as gpt-fast's tokenizer should see it. Templates write
/// `bos_token` themselves and transformers then tokenizes without adding
/// special tokens; gpt-fast's prompt encoding adds BOS when the model says
/// so, so a leading BOS text is dropped here to keep exactly one.
pub fn strip_leading_bos<'a>(rendered: &'a str, spec: &TokenizerSpec) -> &'a str {
    match (spec.add_bos, SpecialTokens::from_tokenizer(spec).bos) {
        (true, Some(bos)) if !bos.is_empty() => rendered.strip_prefix(bos.as_str()).unwrap_or(rendered),
        _ => rendered,
    }
}

/// `source` with transformers' `{% generation %}…{% endgeneration %}` blocks
/// (its AssistantTracker extension, which marks the assistant's tokens for
/// training masks and renders the body unchanged) spelled `{% if true %}…
/// {% endif %}`, which minijinja knows and which trims whitespace the same way.
fn generation_blocks_as_if(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let (before, tag) = rest.split_at(start);
        out.push_str(before);
        out.push_str("{%");
        let body = &tag[2..];
        let control_len = usize::from(body.starts_with(['-', '+']));
        out.push_str(&body[..control_len]);
        let after_control = &body[control_len..];
        let keyword_start = after_control.len() - after_control.trim_start().len();
        out.push_str(&after_control[..keyword_start]);
        let words = &after_control[keyword_start..];
        let ends_word =
            |w: &str| words.get(w.len()..).is_some_and(|r| r.starts_with([' ', '\t', '\n', '\r', '-', '+', '%']));
        rest = if words.starts_with("generation") && ends_word("generation") {
            out.push_str("if true");
            &words["generation".len()..]
        } else if words.starts_with("endgeneration") && ends_word("endgeneration") {
            out.push_str("endif");
            &words["endgeneration".len()..]
        } else {
            words
        };
    }
    out.push_str(rest);
    out
}

/// minijinja set up as transformers sets up jinja2 (see the module doc).
fn environment(clock: Clock) -> Environment<'static> {
    let mut env = Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .expect("the default delimiters are valid");
    env.set_syntax(syntax);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(|out, _state, value| {
        let text = python::str(value);
        out.write_str(&text).map_err(|_| Error::new(ErrorKind::WriteFailure, "cannot write the output"))
    });
    env.add_filter("tojson", tojson);
    env.add_filter("string", |value: Value| python::str(&value));
    env.add_filter("safe", |value: Value| Value::from_object(Markup(python::str(&value))));
    // jinja2's `is iterable` asks Python whether `iter(x)` works: not for
    // None, numbers or booleans (minijinja iterates None as empty), but for
    // undefined values, which iterate as empty in jinja2 too.
    env.add_test("iterable", |value: Value| {
        matches!(
            value.kind(),
            ValueKind::String
                | ValueKind::Bytes
                | ValueKind::Seq
                | ValueKind::Map
                | ValueKind::Iterable
                | ValueKind::Undefined
        )
    });
    env.add_function("raise_exception", |message: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, format!("raise_exception: {message}")))
    });
    env.add_function("strftime_now", move |format: String| strftime(&clock(), &format));
    env
}

/// What `|safe` returns. In jinja2 it is a `Markup` string, and `Markup + str`
/// HTML-escapes the plain side (`'a'|safe + '"'` is `a&#34;`), which minijinja
/// cannot do without auto-escaping everything it prints. So here it is an
/// opaque value that prints as its text and refuses `+` (minijinja's "tried to
/// use + operator on unsupported types"): a template that relies on the
/// escaping fails with an error instead of rendering other text than
/// transformers would.
#[derive(Debug)]
struct Markup(String);

impl Object for Markup {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, arguments by position or name.
fn tojson(value: Value, args: Rest<Value>, kwargs: Kwargs) -> Result<String, Error> {
    let names = ["ensure_ascii", "indent", "separators", "sort_keys"];
    if args.len() > names.len() {
        return Err(Error::new(ErrorKind::TooManyArguments, "tojson takes at most 4 arguments"));
    }
    let mut params: [Option<Value>; 4] = Default::default();
    for (slot, name) in params.iter_mut().zip(names).skip(args.len()) {
        if kwargs.has(name) {
            *slot = Some(kwargs.get::<Value>(name)?);
        }
    }
    for (slot, arg) in params.iter_mut().zip(args.iter()) {
        *slot = Some(arg.clone());
    }
    kwargs.assert_all_used()?;
    let [ensure_ascii, indent, separators, sort_keys] = params;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().to_string()),
        Some(v) => match v.as_i64() {
            Some(n) => Some(" ".repeat(n.max(0) as usize)),
            None => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: indent must be an int or a string")),
        },
    };
    let mut options = python::JsonOptions::new(indent);
    options.ensure_ascii = ensure_ascii.is_some_and(|v| v.is_true());
    options.sort_keys = sort_keys.is_some_and(|v| v.is_true());
    if let Some(separators) = separators.filter(|v| !v.is_none()) {
        let pair: Vec<Value> = separators.try_iter()?.collect();
        match pair.as_slice() {
            [item, key] if item.as_str().is_some() && key.as_str().is_some() => {
                options.separators = (item.to_string(), key.to_string());
            }
            _ => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings")),
        }
    }
    python::json_dumps(&value, &options)
}

/// Python's `datetime.strftime` for the directives chrono shares with C's
/// strftime; an unknown directive is an error rather than a guess.
fn strftime(now: &NaiveDateTime, format: &str) -> Result<String, Error> {
    let items: Vec<Item<'_>> = StrftimeItems::new(format).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return Err(Error::new(ErrorKind::InvalidOperation, format!("strftime_now: unsupported format {format:?}")));
    }
    let mut out = String::new();
    std::fmt::Write::write_fmt(&mut out, format_args!("{}", now.format_with_items(items.into_iter())))
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("strftime_now: cannot format {format:?}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn fixed_clock() -> Clock {
        Arc::new(|| chrono::NaiveDate::from_ymd_opt(2024, 7, 26).unwrap().and_hms_opt(8, 5, 0).unwrap())
    }

    fn render(source: &str, messages: &[Message]) -> Result<String, ChatError> {
        let tokens = SpecialTokens { bos: Some("<s>".into()), eos: Some("</s>".into()), ..Default::default() };
        ChatTemplate::with_clock(source, tokens, fixed_clock())?.render(messages, true)
    }

    #[test]
    fn smollm2_user_turn() {
        assert_eq!(
            render(SMOLLM2, &[Message::new("user", "Hi")]).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn chatml_fallback() {
        let msgs = [Message::new("system", "S"), Message::new("user", "U")];
        assert_eq!(
            render(CHATML, &msgs).unwrap(),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_conventions() {
        let user = [Message::new("user", "x")];
        let cases = [
            ("{{ bos_token }}{{ eos_token }}{{ unk_token }}", "<s></s>"),
            ("{{ none }} {{ true }} {{ [1, 'a', none] }} {{ {'k': false} }}", "None True [1, 'a', None] {'k': False}"),
            ("{{ messages | tojson }}", r#"[{"role": "user", "content": "x"}]"#),
            ("{{ {'a': '<é>'} | tojson(indent=2) }}", "{\n  \"a\": \"<é>\"\n}"),
            ("{{ strftime_now('%d %b %Y') }}", "26 Jul 2024"),
            ("{{ '  a b  '.strip().split(' ') }}", "['a', 'b']"),
            ("{% for m in messages %}{% if true %}{% break %}{% endif %}never{% endfor %}done", "done"),
            ("{% if true %}\n  a\n{% endif %}\n", "  a\n"),
            ("{{ true | string }}", "True"),
            ("{{ none is iterable }} {{ [] is iterable }} {{ nothing is iterable }}", "False True True"),
            ("{{ 'a<b' | safe }}", "a<b"),
        ];
        for (source, want) in cases {
            assert_eq!(render(source, &user).unwrap(), want, "{source}");
        }
    }

    #[test]
    fn generation_blocks_render_their_body() {
        let source =
            "a{% generation %}b{%- endgeneration -%} c{%generation%}{{ 1 }}{%endgeneration%}{% if x %}{% endif %}";
        assert_eq!(
            generation_blocks_as_if(source),
            "a{% if true %}b{%- endif -%} c{%if true%}{{ 1 }}{%endif%}{% if x %}{% endif %}"
        );
        assert_eq!(render(source, &[]).unwrap(), "abc1");
        assert_eq!(generation_blocks_as_if("{% generations %}{%"), "{% generations %}{%");
    }

    #[test]
    fn errors_are_one_line() {
        let err = render(
            "{% if messages[0]['role'] == 'user' %}{{ raise_exception('no users') }}{% endif %}",
            &[Message::new("user", "x")],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the chat template failed: invalid operation: raise_exception: no users (in chat_template:1)"
        );
        let err = render("{% for %}", &[]).unwrap_err();
        assert!(matches!(err, ChatError::Compile(_)), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
        assert!(render("{{ strftime_now('%Q') }}", &[]).unwrap_err().to_string().contains("unsupported format"));
        assert!(render("{{ undefined_thing | tojson }}", &[])
            .unwrap_err()
            .to_string()
            .contains("not JSON serializable"));
        // jinja2 would HTML-escape the right side here; refused rather than rendered differently.
        assert!(render("{{ 'a' | safe + '\"' }}", &[]).unwrap_err().to_string().contains("+ operator"));
    }
}
