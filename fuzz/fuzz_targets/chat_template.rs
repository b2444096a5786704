//! The chat-template renderer on arbitrary input: a model file's template is
//! untrusted text, and `run --chat` compiles and renders it. The input is the
//! template source up to the first NUL, then the conversation: turns
//! separated by NUL, each `role` SOH `content`. Compiling and rendering must
//! return (Ok or a one-line error), never panic or run away.
#![no_main]

use std::sync::Arc;

use gpt_fast::chat::{ChatTemplate, Message, SpecialTokens};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (source, conversation) = text.split_once('\0').unwrap_or((&text, ""));
    let messages: Vec<Message> = conversation
        .split('\0')
        .filter(|turn| !turn.is_empty())
        .map(|turn| {
            let (role, content) = turn.split_once('\x01').unwrap_or(("user", turn));
            Message::new(role, content)
        })
        .collect();
    let tokens = SpecialTokens { bos: Some("<s>".into()), eos: Some("</s>".into()), ..Default::default() };
    let clock = Arc::new(|| chrono::NaiveDate::from_ymd_opt(2026, 1, 2).unwrap().and_hms_opt(3, 4, 5).unwrap());
    let Ok(template) = ChatTemplate::with_clock(source, tokens, clock) else { return };
    for add_generation_prompt in [false, true] {
        if let Err(err) = template.render(&messages, add_generation_prompt) {
            assert!(!err.to_string().contains('\n'), "error is not one line: {err}");
        }
    }
});
