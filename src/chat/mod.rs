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
//! A model file without a template gets the built-in of its vocabulary's
//! turn format ([`defaults`]).

pub mod defaults;
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

/// The name the template has in error messages.
const TEMPLATE_NAME: &str = "chat_template";

/// What any render may spend, in minijinja fuel (about one unit per
/// instruction and one per 64 bytes created, so this also bounds memory at
/// ~64 MB): the template comes from the model file, and a hostile one must
/// fail with an error rather than loop or allocate without end. The 70
/// templates of llama.cpp's `models/templates/` use under 0.5 % of it on
/// tests/chat_templates.rs's conversations.
const BASE_FUEL: u64 = 1_000_000;

/// Fuel added per byte of conversation text: a template that copies each
/// message a few times (trimmed, concatenated, printed) must not run out on a
/// long prompt; 1/4 per byte pays for 16 copies.
const FUEL_PER_TEXT_BYTE: f64 = 0.25;

/// The stack a render runs on. minijinja recurses over nested values (to
/// print, compare and drop them), and a template can nest a list in itself
/// once per loop step (`{% set ns.x = [ns.x] %}`) as deep as its fuel allows:
/// ~125,000 levels, which overflow the default 2 MiB thread stack (an abort,
/// not an error). Only the pages a render touches are ever backed.
const RENDER_STACK_BYTES: usize = 256 << 20;

/// Characters of a template error shown: the message may quote the template
/// (a `raise_exception` text, a syntax error's token), which is the file's.
const MAX_ERROR_CHARS: usize = 300;

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
    /// The built-in used for a model file without a template.
    default: Option<&'static str>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("tokens", &self.tokens).field("default", &self.default).finish()
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
            .map_err(|e| ChatError::Compile(one_line(&e)))?;
        Ok(ChatTemplate { env, tokens, default: None })
    }

    /// The tokenizer's own template, or the built-in of its vocabulary
    /// ([`defaults::for_vocabulary`]) if it has none.
    pub fn for_tokenizer(spec: &TokenizerSpec) -> Result<ChatTemplate, ChatError> {
        let tokens = SpecialTokens::from_tokenizer(spec);
        if spec.chat_template.trim().is_empty() {
            let default = defaults::for_vocabulary(&spec.tokens);
            let mut template = ChatTemplate::new(default.source, tokens)?;
            template.default = Some(default.name);
            Ok(template)
        } else {
            ChatTemplate::new(&spec.chat_template, tokens)
        }
    }

    /// The name of the built-in standing in for a model without a template
    /// (llama.cpp's name for it: `gemma`, `chatml` …).
    pub fn default_name(&self) -> Option<&'static str> {
        self.default
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
        let text_bytes: usize = context.iter().map(|(_, value)| text_bytes(value)).sum();
        let mut env = self.env.clone();
        env.set_fuel(Some(BASE_FUEL + (text_bytes as f64 * FUEL_PER_TEXT_BYTE) as u64));
        let template = env.get_template(TEMPLATE_NAME).expect("added at construction");
        let render = || template.render(Value::from_pairs(context)).map_err(|e| ChatError::Render(one_line(&e)));
        std::thread::scope(|scope| {
            let renderer = std::thread::Builder::new().stack_size(RENDER_STACK_BYTES).spawn_scoped(scope, render);
            match renderer {
                Ok(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(e) => Err(ChatError::Render(format!("cannot start the renderer thread: {e}"))),
            }
        })
    }
}

/// A minijinja error as one bounded, escaped line.
fn one_line(error: &Error) -> String {
    crate::escape::untrusted_up_to(error.to_string().as_bytes(), MAX_ERROR_CHARS)
}

/// The bytes of the strings in a template argument (messages, tools), which
/// its fuel grows with.
fn text_bytes(value: &Value) -> usize {
    match value.kind() {
        ValueKind::String => value.as_str().map_or(0, str::len),
        ValueKind::Seq => value.try_iter().map_or(0, |items| items.map(|item| text_bytes(&item)).sum()),
        ValueKind::Map => value.try_iter().map_or(0, |keys| {
            keys.map(|key| text_bytes(&key) + value.get_item(&key).map_or(0, |v| text_bytes(&v))).sum()
        }),
        _ => 0,
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
        let text = python::str(value)?;
        out.write_str(&text).map_err(|_| Error::new(ErrorKind::WriteFailure, "cannot write the output"))
    });
    env.add_filter("tojson", tojson);
    env.add_filter("string", |value: Value| python::str(&value));
    env.add_filter("safe", |value: Value| python::str(&value).map(|text| Value::from_object(Markup(text))));
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

/// The widest `tojson` indent accepted, in bytes.
const MAX_JSON_INDENT: usize = 1024;

fn too_wide(indent: i64) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("tojson: indent {indent} is wider than {MAX_JSON_INDENT}"))
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
        // Python would indent by any amount; a billion spaces per level is a
        // template trying to exhaust memory before fuel can see it.
        Some(v) => match v.as_i64() {
            Some(n) if n > MAX_JSON_INDENT as i64 => return Err(too_wide(n)),
            Some(n) => Some(" ".repeat(n.max(0) as usize)),
            None => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: indent must be an int or a string")),
        },
    };
    if let Some(unit) = indent.as_ref().filter(|unit| unit.len() > MAX_JSON_INDENT) {
        return Err(too_wide(unit.len() as i64));
    }
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
            render(defaults::CHATML.source, &msgs).unwrap(),
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

    #[test]
    fn hostile_templates_fail_with_an_error() {
        let user = [Message::new("user", "x")];
        let cases = [
            // 10^10 iterations: would run for hours without a fuel budget.
            ("{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}", "fuel"),
            // 100 GB of output from a 1 MB string.
            ("{% set s = 'x' * 1000000 %}{% for i in range(100000) %}{{ s }}{% endfor %}", "fuel"),
            ("{{ [('x' * 1000000)] * 100000 }}", "prints to over"),
            ("{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}", "nested deeper"),
            ("{{ messages | tojson(indent=1000000000000) }}", "wider than"),
            ("{{ messages | tojson(indent=' ' * 100000) }}", "wider than"),
            ("{{ raise_exception('a\nb\u{1b}[31m' * 1000) }}", "a\\nb\\u{1b}[31m"),
        ];
        for (source, want) in cases {
            let err = render(source, &user).unwrap_err().to_string();
            assert!(err.contains(want), "{source}: {err}");
            // 300 characters shown, an escape is at most 10 bytes.
            assert!(err.len() < 3500 && !err.contains(['\n', '\x1b']), "{source}: {err}");
        }
        // A long prompt gets fuel in proportion: 8 MB through a template that
        // copies it a few times renders.
        let long = [Message::new("user", &"word ".repeat(8 << 18))];
        let tokens = SpecialTokens::default();
        let out = ChatTemplate::with_clock(defaults::CHATML.source, tokens, fixed_clock())
            .unwrap()
            .render(&long, true)
            .unwrap();
        assert!(out.len() > 8 << 20);
    }
}
