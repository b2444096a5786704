//! The tokenizer of a Hugging Face folder: `tokenizer.json`, completed from the
//! files transformers reads beside it.

use std::path::Path;

use crate::tokenizer::{TokenType, TokenizerSpec};
use serde_json::Value;

use super::{input_error, read_json, require_json};
use crate::import::tokenizer_import::from_hf_tokenizer_json;
use crate::import::ConvertError;

/// `tokenizer.json`, completed from the files transformers reads beside it.
///
/// The vocabulary, merges and pre-tokenizer come from `tokenizer.json` alone.
/// Where it does not say:
/// - special tokens (bos/eos/unk/pad): `tokenizer_config.json`'s `bos_token`,
///   … (a string or `{"content": …}`; what `AutoTokenizer` reports), else the
///   ids in `generation_config.json`, else in `config.json` (the first, if a list);
/// - add BOS/EOS: a `TemplateProcessing` post-processor in `tokenizer.json`
///   decides (what a fast tokenizer runs); without one, `tokenizer_config.json`'s
///   `add_bos_token` / `add_eos_token` (default false);
/// - the chat template: `tokenizer_config.json`'s `chat_template` (a string, or a
///   list of named templates: `default`), else `chat_template.jinja` (transformers 5).
pub(super) fn read_tokenizer(dir: &Path, config: &Value) -> Result<TokenizerSpec, ConvertError> {
    let tok_path = dir.join("tokenizer.json");
    let tok_json = require_json(&tok_path)?;
    let mut spec = from_hf_tokenizer_json(&tok_json).map_err(|e| input_error(&tok_path, e.to_string()))?;

    let tc_path = dir.join("tokenizer_config.json");
    let tok_config = read_json(&tc_path)?.unwrap_or(Value::Null);
    let gen_path = dir.join("generation_config.json");
    let gen_config = read_json(&gen_path)?.unwrap_or(Value::Null);
    let config_path = dir.join("config.json");

    let n_tokens = spec.tokens.len();
    for (role, slot) in
        [("bos", &mut spec.bos_id), ("eos", &mut spec.eos_id), ("unk", &mut spec.unk_id), ("pad", &mut spec.pad_id)]
    {
        if slot.is_some() {
            continue;
        }
        let token_key = format!("{role}_token");
        if let Some(content) = special_content(tok_config.get(&token_key)) {
            let id = find_token(&spec.tokens, &spec.token_types, content).ok_or_else(|| {
                input_error(&tc_path, format!("{token_key} '{content}' is not in tokenizer.json's vocabulary"))
            })?;
            *slot = Some(id);
            continue;
        }
        let id_key = format!("{role}_token_id");
        for (path, json) in [(&gen_path, &gen_config), (&config_path, config)] {
            let value = match json.get(&id_key) {
                Some(Value::Array(ids)) => ids.first(),
                other => other,
            };
            let Some(value) = value.filter(|v| !v.is_null()) else { continue };
            let id = value
                .as_u64()
                .filter(|&id| id < n_tokens as u64)
                .ok_or_else(|| input_error(path, format!("{id_key} = {value} is not a token id below {n_tokens}")))?;
            *slot = Some(id as u32);
            break;
        }
    }

    if !has_template_processing(tok_json.get("post_processor")) {
        spec.add_bos = tok_config.get("add_bos_token").and_then(Value::as_bool).unwrap_or(false);
        spec.add_eos = tok_config.get("add_eos_token").and_then(Value::as_bool).unwrap_or(false);
    }

    if spec.chat_template.is_empty() {
        spec.chat_template = match tok_config.get("chat_template") {
            Some(Value::String(t)) => t.clone(),
            Some(Value::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            _ => {
                let path = dir.join("chat_template.jinja");
                match crate::mmap::read_regular_to_string(&path, super::MAX_JSON_BYTES) {
                    Ok(t) => t,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                    Err(e) => return Err(input_error(&path, e.to_string())),
                }
            }
        };
    }
    Ok(spec)
}

/// A special token's text in tokenizer_config.json: `"<s>"` or `{"content": "<s>", …}`.
fn special_content(value: Option<&Value>) -> Option<&str> {
    match value? {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content").and_then(Value::as_str),
        _ => None,
    }
}

/// The id of the token whose bytes are `content`, a control token first.
fn find_token(tokens: &[Vec<u8>], types: &[TokenType], content: &str) -> Option<u32> {
    let matches = |i: &usize| tokens[*i] == content.as_bytes();
    let control = (0..tokens.len()).filter(matches).find(|&i| types.get(i) == Some(&TokenType::Control));
    control.or_else(|| (0..tokens.len()).find(matches)).map(|i| i as u32)
}

fn has_template_processing(post: Option<&Value>) -> bool {
    let Some(post) = post else { return false };
    match post.get("type").and_then(Value::as_str) {
        Some("TemplateProcessing") => true,
        Some("Sequence") => post
            .get("processors")
            .and_then(Value::as_array)
            .is_some_and(|ps| ps.iter().any(|p| has_template_processing(Some(p)))),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_processing_detected_in_sequences() {
        let v: Value = serde_json::from_str(
            r#"{"type": "Sequence", "processors": [{"type": "ByteLevel"}, {"type": "TemplateProcessing"}]}"#,
        )
        .unwrap();
        assert!(has_template_processing(Some(&v)));
        let v: Value = serde_json::from_str(r#"{"type": "ByteLevel"}"#).unwrap();
        assert!(!has_template_processing(Some(&v)));
        assert!(!has_template_processing(None));
    }
}
