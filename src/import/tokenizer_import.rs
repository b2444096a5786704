//! Tokenizers from GGUF metadata and Hugging Face `tokenizer.json`, as the
//! [`TokenizerSpec`] the model file stores.
//!
//! Both sources write byte-level BPE tokens in GPT-2's printable
//! byte-to-unicode form ("Ġthe" for " the"); this is the one place that form
//! is undone, so the runtime only sees raw bytes. Control, user-defined and
//! unknown tokens are literal text in both sources and are kept as they are,
//! as are SentencePiece tokens ("▁the", "<0x0A>"), which encoding matches as
//! text. Every spec returned has passed [`Tokenizer::new`]'s validation.

use std::collections::HashMap;

use crate::tokenizer::{PreTokenizer, TokenType, Tokenizer, TokenizerError, TokenizerModel, TokenizerSpec};
use serde_json::Value;

use crate::import::gguf::{GgufFile, GgufValue};

/// Why a tokenizer could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("missing {0}")]
    Missing(String),
    #[error("{} is {}, expected {expected}", crate::escape::untrusted(key), crate::escape::untrusted(found))]
    WrongType { key: String, expected: &'static str, found: String },
    #[error(
        "tokenizer model '{0}' is not supported (gpt-fast reads GGUF 'gpt2' (byte-level BPE) and 'llama' (SentencePiece BPE), tokenizer.json 'BPE')"
    )]
    UnsupportedModel(String),
    #[error("pre-tokenizer {0} is not supported (gpt-fast knows GGUF {known}; tokenizer.json ByteLevel and Sequence[Digits(individual_digits), ByteLevel])", known = KNOWN_GGUF_PRE)]
    UnsupportedPreTokenizer(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{key} has {found} entries for {n_tokens} tokens")]
    LengthMismatch { key: &'static str, found: usize, n_tokens: usize },
    #[error("token {id} has type {value}, which is not a GGUF token type (1 to 6)")]
    BadTokenType { id: usize, value: i64 },
    #[error("merge #{rank} \"{}\": {reason}", crate::escape::untrusted(text))]
    BadMerge { rank: usize, text: String, reason: String },
    #[error("token id {0} has no token (ids must be 0..n without gaps)")]
    MissingId(u32),
    #[error("token id {id} is past the {entries} entries of vocab and added_tokens (ids must be 0..n without gaps)")]
    IdPastEntries { id: u32, entries: usize },
    #[error("the imported tokenizer is invalid: {0}")]
    Invalid(#[from] TokenizerError),
}

/// The `tokenizer.ggml.pre` names gpt-fast implements, for error messages.
const KNOWN_GGUF_PRE: &str = "'gpt-2', 'mpt', 'smollm', 'starcoder', 'refact', 'command-r', 'llama-bpe', \
    'qwen2', 'deepseek-llm', 'deepseek-coder', 'falcon'";

/// What a GGUF `tokenizer.ggml.pre` name means: the pre-tokenizer, and
/// whether llama.cpp turns on `ignore_merges` and BOS by default for it.
/// Names are grouped as llama.cpp's `llama_vocab::impl::load` groups them.
fn gguf_pre_tokenizer(name: &str) -> Option<(PreTokenizer, bool)> {
    Some(match name {
        "gpt-2" | "gpt2" | "mpt" => (PreTokenizer::Gpt2, false),
        "smollm" | "starcoder" | "refact" | "command-r" => (PreTokenizer::SmolLm, false),
        "llama-bpe" | "llama3" | "llama-v3" => (PreTokenizer::Llama3, true),
        "qwen2" | "deepseek-r1-qwen" => (PreTokenizer::Qwen2, false),
        "deepseek-llm" => (PreTokenizer::DeepSeekLlm, false),
        "deepseek-coder" => (PreTokenizer::DeepSeekCoder, false),
        "falcon" => (PreTokenizer::Falcon, false),
        _ => return None,
    })
}

/// GGUF `tokenizer.ggml.*` metadata to a spec.
///
/// `tokenizer.ggml.model = "gpt2"` is byte-level BPE and needs a
/// `tokenizer.ggml.pre` that gpt-fast implements (see [`PreTokenizer`] for
/// the names; llama.cpp's `default`, also what it uses when the key is
/// absent, is a different regex set and is refused). `"llama"` is
/// SentencePiece BPE: `tokenizer.ggml.scores` (absent: all 0) rank merges,
/// `tokenizer.ggml.add_space_prefix` defaults to true. Absent `token_type`
/// means all normal. BOS/EOS flags and ids default as llama.cpp's do: BOS
/// added for SentencePiece and Llama 3, ids 1/2/0 for SentencePiece's
/// BOS/EOS/UNK.
pub fn from_gguf(file: &GgufFile) -> Result<TokenizerSpec, ImportError> {
    let model_name = gguf_str(file, "tokenizer.ggml.model")?.ok_or_else(|| missing("tokenizer.ggml.model"))?;
    let model = match model_name {
        "gpt2" => TokenizerModel::ByteLevelBpe,
        "llama" => TokenizerModel::SentencePiece,
        other => return Err(ImportError::UnsupportedModel(crate::escape::untrusted(other))),
    };
    let (pre, llama3_defaults) = match model {
        TokenizerModel::SentencePiece => (PreTokenizer::None, false),
        TokenizerModel::ByteLevelBpe => {
            let pre_name = gguf_str(file, "tokenizer.ggml.pre")?.ok_or_else(|| {
                ImportError::UnsupportedPreTokenizer(
                    "(none: tokenizer.ggml.pre is missing, for which llama.cpp falls back to its 'default' regex set)"
                        .to_string(),
                )
            })?;
            gguf_pre_tokenizer(pre_name).ok_or_else(|| {
                ImportError::UnsupportedPreTokenizer(format!(
                    "'{}' (tokenizer.ggml.pre)",
                    crate::escape::untrusted(pre_name)
                ))
            })?
        }
    };

    let texts = gguf_str_array(file, "tokenizer.ggml.tokens")?.ok_or_else(|| missing("tokenizer.ggml.tokens"))?;
    let n_tokens = texts.len();
    let token_types = match file.get("tokenizer.ggml.token_type") {
        None => vec![TokenType::Normal; n_tokens],
        Some(value) => {
            let items = value.as_array().ok_or_else(|| wrong("tokenizer.ggml.token_type", "an array", value))?;
            if items.len() != n_tokens {
                return Err(ImportError::LengthMismatch {
                    key: "tokenizer.ggml.token_type",
                    found: items.len(),
                    n_tokens,
                });
            }
            items
                .iter()
                .enumerate()
                .map(|(id, v)| {
                    let raw = v.as_i64().ok_or_else(|| wrong("tokenizer.ggml.token_type", "integers", v))?;
                    u8::try_from(raw)
                        .ok()
                        .and_then(TokenType::from_u8)
                        .ok_or(ImportError::BadTokenType { id, value: raw })
                })
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    let spm = model == TokenizerModel::SentencePiece;
    let tokens = texts
        .iter()
        .zip(&token_types)
        .map(|(text, &ty)| if spm { text.as_bytes().to_vec() } else { token_bytes(text, ty) })
        .collect::<Vec<_>>();

    let (merges, scores) = if spm {
        let scores = match file.get("tokenizer.ggml.scores") {
            None => vec![0.0; n_tokens],
            Some(value) => {
                let items = value.as_array().ok_or_else(|| wrong("tokenizer.ggml.scores", "an array", value))?;
                if items.len() != n_tokens {
                    return Err(ImportError::LengthMismatch {
                        key: "tokenizer.ggml.scores",
                        found: items.len(),
                        n_tokens,
                    });
                }
                items
                    .iter()
                    .map(|v| v.as_f32().ok_or_else(|| wrong("tokenizer.ggml.scores", "numbers", v)))
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        (Vec::new(), scores)
    } else {
        // Merges name tokens by their GGUF text; llama.cpp's text-to-id map
        // lets the last of duplicate texts win.
        let by_text: HashMap<&str, u32> = texts.iter().enumerate().map(|(id, t)| (*t, id as u32)).collect();
        let merge_texts =
            gguf_str_array(file, "tokenizer.ggml.merges")?.ok_or_else(|| missing("tokenizer.ggml.merges"))?;
        let merges = merge_texts
            .iter()
            .enumerate()
            .map(|(rank, text)| {
                // llama.cpp splits at the first space after the first byte.
                let split = text.as_bytes().iter().skip(1).position(|&b| b == b' ').map(|i| i + 1);
                let Some(split) = split else {
                    return Err(bad_merge(rank, text, "no space between the two tokens".into()));
                };
                resolve_merge(&by_text, rank, text, &text[..split], &text[split + 1..])
            })
            .collect::<Result<Vec<_>, _>>()?;
        (merges, Vec::new())
    };

    let id = |key: &str, default: Option<u32>| -> Result<Option<u32>, ImportError> {
        match file.get(key) {
            None => Ok(default),
            Some(v) => v.as_u32().map(Some).ok_or_else(|| wrong(key, "a token id", v)),
        }
    };
    let flag = |key: &str, default: bool| -> Result<bool, ImportError> {
        match file.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| wrong(key, "a bool", v)),
        }
    };
    let default_id = |v: u32| if spm { Some(v) } else { None };
    let spec = TokenizerSpec {
        model,
        pre,
        tokens,
        token_types,
        merges,
        scores,
        bos_id: id("tokenizer.ggml.bos_token_id", default_id(1))?,
        eos_id: id("tokenizer.ggml.eos_token_id", default_id(2))?,
        unk_id: id("tokenizer.ggml.unknown_token_id", default_id(0))?,
        pad_id: id("tokenizer.ggml.padding_token_id", None)?,
        add_bos: flag("tokenizer.ggml.add_bos_token", spm || llama3_defaults)?,
        add_eos: flag("tokenizer.ggml.add_eos_token", false)?,
        add_space_prefix: spm && flag("tokenizer.ggml.add_space_prefix", true)?,
        ignore_merges: llama3_defaults,
        chat_template: gguf_str(file, "tokenizer.chat_template")?.unwrap_or_default().to_string(),
    };
    Tokenizer::new(spec.clone())?;
    Ok(spec)
}

/// A ready [`Tokenizer`] from a GGUF's metadata alone (a full model or one of
/// the vocab-only files llama.cpp ships for its tokenizer tests): what
/// [`from_gguf`] gives, validated and indexed.
pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<Tokenizer, ImportError> {
    Ok(Tokenizer::new(from_gguf(file)?)?)
}

/// A Hugging Face `tokenizer.json` to a spec.
///
/// Reads the BPE model's `vocab` and `merges` (`"a b"` strings or `["a", "b"]`
/// pairs), `added_tokens` (`special: true` → control, else user-defined), and
/// the pre-tokenizer: `ByteLevel` alone → [`PreTokenizer::Gpt2`],
/// `Sequence[Digits(individual_digits: true), ByteLevel]` →
/// [`PreTokenizer::SmolLm`]; anything else, a normalizer, `byte_fallback` or
/// `ignore_merges` is refused. A `TemplateProcessing` post-processor's single
/// template sets BOS/EOS and `add_bos` / `add_eos`; other special ids and the
/// chat template live in `tokenizer_config.json`, which the caller reads.
pub fn from_hf_tokenizer_json(json: &Value) -> Result<TokenizerSpec, ImportError> {
    let model = json.get("model").ok_or_else(|| missing("tokenizer.json model"))?;
    let model_type = model.get("type").and_then(Value::as_str).unwrap_or("BPE");
    if model_type != "BPE" {
        return Err(ImportError::UnsupportedModel(crate::escape::untrusted(model_type)));
    }
    for key in ["byte_fallback", "ignore_merges"] {
        if model.get(key).and_then(Value::as_bool) == Some(true) {
            return Err(ImportError::Unsupported(format!("tokenizer.json model.{key} = true is not supported")));
        }
    }
    if let Some(normalizer) = json.get("normalizer").filter(|v| !v.is_null()) {
        return Err(ImportError::Unsupported(format!(
            "tokenizer.json normalizer {} is not supported",
            crate::escape::untrusted(&normalizer.to_string())
        )));
    }
    let pre = hf_pre_tokenizer(json.get("pre_tokenizer").unwrap_or(&Value::Null))?;

    let vocab = model.get("vocab").and_then(Value::as_object).ok_or_else(|| missing("tokenizer.json model.vocab"))?;
    let added_tokens = json.get("added_tokens").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    // Dense ids cannot reach past the number of entries: checked before the
    // table is sized by an id (4294967295 would ask for 137 GB).
    let entries = vocab.len() + added_tokens.len();
    let mut by_id: Vec<Option<(Vec<u8>, TokenType)>> = Vec::new();
    let mut put = |id: u32, entry: (Vec<u8>, TokenType)| {
        let i = id as usize;
        if i >= entries {
            return Err(ImportError::IdPastEntries { id, entries });
        }
        if by_id.len() <= i {
            by_id.resize(i + 1, None);
        }
        by_id[i] = Some(entry);
        Ok(())
    };
    for (text, id) in vocab {
        let id = json_id(id, "tokenizer.json model.vocab")?;
        put(id, (token_bytes(text, TokenType::Normal), TokenType::Normal))?;
    }
    for added in added_tokens {
        let id = json_id(added.get("id").unwrap_or(&Value::Null), "tokenizer.json added_tokens id")?;
        let content = added
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| missing("tokenizer.json added_tokens content"))?;
        let special = added.get("special").and_then(Value::as_bool).unwrap_or(false);
        let ty = if special { TokenType::Control } else { TokenType::UserDefined };
        put(id, (content.as_bytes().to_vec(), ty))?;
    }
    let mut tokens = Vec::with_capacity(by_id.len());
    let mut token_types = Vec::with_capacity(by_id.len());
    for (id, entry) in by_id.into_iter().enumerate() {
        let (bytes, ty) = entry.ok_or(ImportError::MissingId(id as u32))?;
        tokens.push(bytes);
        token_types.push(ty);
    }

    // Hugging Face resolves merges against the model's vocab only.
    let by_text: HashMap<&str, u32> = vocab
        .iter()
        .map(|(text, id)| Ok((text.as_str(), json_id(id, "tokenizer.json model.vocab")?)))
        .collect::<Result<_, ImportError>>()?;
    let merge_list =
        model.get("merges").and_then(Value::as_array).ok_or_else(|| missing("tokenizer.json model.merges"))?;
    let merges = merge_list
        .iter()
        .enumerate()
        .map(|(rank, merge)| {
            let (left, right) = match merge {
                Value::String(s) => s.split_once(' ').ok_or_else(|| bad_merge(rank, s, "no space".into()))?,
                Value::Array(pair) => match pair.as_slice() {
                    [Value::String(a), Value::String(b)] => (a.as_str(), b.as_str()),
                    _ => return Err(bad_merge(rank, &merge.to_string(), "not a pair of strings".into())),
                },
                _ => return Err(bad_merge(rank, &merge.to_string(), "not a string or a pair".into())),
            };
            resolve_merge(&by_text, rank, &format!("{left} {right}"), left, right)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let (bos_id, add_bos, eos_id, add_eos) = hf_template(json.get("post_processor"))?;
    let spec = TokenizerSpec {
        model: TokenizerModel::ByteLevelBpe,
        pre,
        tokens,
        token_types,
        merges,
        scores: Vec::new(),
        bos_id,
        eos_id,
        unk_id: None,
        pad_id: None,
        add_bos,
        add_eos,
        add_space_prefix: false,
        ignore_merges: false,
        chat_template: String::new(),
    };
    Tokenizer::new(spec.clone())?;
    Ok(spec)
}

/// The byte GPT-2's `bytes_to_unicode` maps to `c`. Printable Latin-1 bytes
/// (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) stand for themselves; the other 68 bytes
/// (0..=32, 127..=160, 173) are shifted in order to U+0100..=U+0143.
pub fn unicode_to_byte(c: char) -> Option<u8> {
    let c = u32::from(c);
    match c {
        33..=126 | 161..=172 | 174..=255 => Some(c as u8),
        256..=288 => Some((c - 256) as u8),
        289..=322 => Some((c - 289 + 127) as u8),
        323 => Some(173),
        _ => None,
    }
}

/// The bytes of token `id` from its text: literal for control, user-defined
/// and unknown tokens, byte-level decoded for the rest. A token whose text is
/// not byte-level (Command R has a normal token "\u{200d}") is kept literal:
/// no byte-level pre-token can spell it, so llama.cpp never produces it
/// either, and it decodes to its text.
fn token_bytes(text: &str, ty: TokenType) -> Vec<u8> {
    if matches!(ty, TokenType::Control | TokenType::UserDefined | TokenType::Unknown) {
        return text.as_bytes().to_vec();
    }
    text.chars().map(unicode_to_byte).collect::<Option<Vec<u8>>>().unwrap_or_else(|| text.as_bytes().to_vec())
}

fn resolve_merge(
    by_text: &HashMap<&str, u32>,
    rank: usize,
    text: &str,
    left: &str,
    right: &str,
) -> Result<[u32; 3], ImportError> {
    let find = |part: &str, what: &str| {
        by_text.get(part).copied().ok_or_else(|| bad_merge(rank, text, format!("{what} {part:?} is not a token")))
    };
    Ok([find(left, "left")?, find(right, "right")?, find(&format!("{left}{right}"), "merged")?])
}

fn hf_pre_tokenizer(pre: &Value) -> Result<PreTokenizer, ImportError> {
    let unsupported = || ImportError::UnsupportedPreTokenizer(crate::escape::untrusted(&pre.to_string()));
    let byte_level = |p: &Value| {
        p.get("type").and_then(Value::as_str) == Some("ByteLevel")
            && p.get("add_prefix_space").and_then(Value::as_bool) != Some(true)
            && p.get("use_regex").and_then(Value::as_bool) != Some(false)
    };
    if byte_level(pre) {
        return Ok(PreTokenizer::Gpt2);
    }
    if pre.get("type").and_then(Value::as_str) == Some("Sequence") {
        let steps = pre.get("pretokenizers").and_then(Value::as_array).ok_or_else(unsupported)?;
        if let [digits, last] = steps.as_slice() {
            let individual_digits = digits.get("type").and_then(Value::as_str) == Some("Digits")
                && digits.get("individual_digits").and_then(Value::as_bool) == Some(true);
            if individual_digits && byte_level(last) {
                return Ok(PreTokenizer::SmolLm);
            }
        }
    }
    Err(unsupported())
}

/// BOS and EOS from a `TemplateProcessing` post-processor (possibly inside a
/// `Sequence`): the special token before `$A` in the single-sequence template
/// is BOS, the one after is EOS.
fn hf_template(post: Option<&Value>) -> Result<(Option<u32>, bool, Option<u32>, bool), ImportError> {
    let Some(post) = post.filter(|v| !v.is_null()) else { return Ok((None, false, None, false)) };
    let template = match post.get("type").and_then(Value::as_str) {
        Some("TemplateProcessing") => post,
        Some("Sequence") => {
            let processors = post.get("processors").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            match processors.iter().find(|p| p.get("type").and_then(Value::as_str) == Some("TemplateProcessing")) {
                Some(t) => t,
                None => return Ok((None, false, None, false)),
            }
        }
        _ => return Ok((None, false, None, false)),
    };
    let single = template.get("single").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let special_id = |piece: &Value| -> Result<Option<u32>, ImportError> {
        let Some(name) = piece.get("SpecialToken").and_then(|s| s.get("id")).and_then(Value::as_str) else {
            return Ok(None);
        };
        let ids = template.get("special_tokens").and_then(|s| s.get(name)).and_then(|s| s.get("ids"));
        match ids.and_then(Value::as_array).map(Vec::as_slice) {
            Some([id]) => json_id(id, "tokenizer.json post_processor special_tokens").map(Some),
            _ => Err(ImportError::Unsupported(format!(
                "post_processor special token {name:?} must map to exactly one id"
            ))),
        }
    };
    let mut before = Vec::new();
    let mut after = Vec::new();
    let mut seen_sequence = false;
    for piece in single {
        if piece.get("Sequence").is_some() {
            seen_sequence = true;
        } else if let Some(id) = special_id(piece)? {
            if seen_sequence {
                after.push(id)
            } else {
                before.push(id)
            }
        }
    }
    if before.len() > 1 || after.len() > 1 {
        return Err(ImportError::Unsupported(format!(
            "post_processor template adds {} tokens before and {} after the text (at most one each)",
            before.len(),
            after.len()
        )));
    }
    Ok((before.first().copied(), !before.is_empty(), after.first().copied(), !after.is_empty()))
}

fn json_id(v: &Value, what: &str) -> Result<u32, ImportError> {
    v.as_u64().and_then(|id| u32::try_from(id).ok()).ok_or_else(|| ImportError::WrongType {
        key: what.to_string(),
        expected: "a token id",
        found: v.to_string(),
    })
}

fn missing(key: &str) -> ImportError {
    ImportError::Missing(key.to_string())
}

fn wrong(key: &str, expected: &'static str, found: &GgufValue) -> ImportError {
    ImportError::WrongType { key: key.to_string(), expected, found: found.type_name().to_string() }
}

fn bad_merge(rank: usize, text: &str, reason: String) -> ImportError {
    ImportError::BadMerge { rank, text: text.to_string(), reason }
}

fn gguf_str<'a>(file: &'a GgufFile, key: &str) -> Result<Option<&'a str>, ImportError> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| wrong(key, "a string", v)),
    }
}

fn gguf_str_array<'a>(file: &'a GgufFile, key: &str) -> Result<Option<Vec<&'a str>>, ImportError> {
    let Some(v) = file.get(key) else { return Ok(None) };
    let items = v.as_array().ok_or_else(|| wrong(key, "an array of strings", v))?;
    items
        .iter()
        .map(|item| item.as_str().ok_or_else(|| wrong(key, "an array of strings", item)))
        .collect::<Result<_, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPT-2's `bytes_to_unicode`, written as in the original encoder.py.
    fn bytes_to_unicode() -> Vec<(u8, char)> {
        let mut bs: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
        let mut cs = bs.clone();
        let mut n = 0;
        for b in 0..256 {
            if !bs.contains(&b) {
                bs.push(b);
                cs.push(256 + n);
                n += 1;
            }
        }
        bs.into_iter().zip(cs).map(|(b, c)| (b as u8, char::from_u32(c).unwrap())).collect()
    }

    #[test]
    fn byte_table_inverts_gpt2() {
        let table = bytes_to_unicode();
        assert_eq!(table.len(), 256);
        for (b, c) in table {
            assert_eq!(unicode_to_byte(c), Some(b), "{c:?}");
        }
        assert_eq!(unicode_to_byte('Ġ'), Some(b' '));
        assert_eq!(unicode_to_byte('Ċ'), Some(b'\n'));
        assert_eq!(unicode_to_byte('\u{144}'), None);
        assert_eq!(unicode_to_byte(' '), None);
    }

    fn tiny_json(pre: Value, merges: Value) -> Value {
        // Vocab: the 256 byte-level characters, then "Ġt", "Ġth".
        let mut vocab = serde_json::Map::new();
        for (i, (_, c)) in bytes_to_unicode().into_iter().enumerate() {
            vocab.insert(c.to_string(), i.into());
        }
        vocab.insert("Ġt".into(), 256.into());
        vocab.insert("Ġth".into(), 257.into());
        serde_json::json!({
            "added_tokens": [
                {"id": 258, "content": "<|endoftext|>", "special": true},
                {"id": 259, "content": "<tool>", "special": false}
            ],
            "normalizer": null,
            "pre_tokenizer": pre,
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [258], "tokens": ["<|endoftext|>"]}}},
            "model": {"type": "BPE", "vocab": vocab, "merges": merges}
        })
    }

    #[test]
    fn hf_json_imports() {
        let digits = serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]});
        for merges in [serde_json::json!(["Ġ t", "Ġt h"]), serde_json::json!([["Ġ", "t"], ["Ġt", "h"]])] {
            let spec = from_hf_tokenizer_json(&tiny_json(digits.clone(), merges)).unwrap();
            assert_eq!(spec.pre, PreTokenizer::SmolLm);
            assert_eq!(spec.tokens[256], b" t");
            assert_eq!(spec.tokens[258], b"<|endoftext|>");
            assert_eq!(spec.token_types[258], TokenType::Control);
            assert_eq!(spec.token_types[259], TokenType::UserDefined);
            let table = bytes_to_unicode();
            let id = |b: u8| table.iter().position(|&(x, _)| x == b).unwrap() as u32;
            assert_eq!(spec.merges, [[id(b' '), id(b't'), 256], [256, id(b'h'), 257]]);
            assert_eq!((spec.bos_id, spec.add_bos, spec.eos_id, spec.add_eos), (Some(258), true, None, false));
            let tok = Tokenizer::new(spec).unwrap();
            // User-defined tokens are matched without parse_special too.
            assert_eq!(tok.encode(" the<tool>", false), [257, id(b'e'), 259]);
        }
        let gpt2 = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true});
        assert_eq!(from_hf_tokenizer_json(&tiny_json(gpt2, serde_json::json!([]))).unwrap().pre, PreTokenizer::Gpt2);
    }

    #[test]
    fn hf_json_refuses_what_it_cannot_run() {
        let prefix = serde_json::json!({"type": "ByteLevel", "add_prefix_space": true});
        let err = from_hf_tokenizer_json(&tiny_json(prefix, serde_json::json!([]))).unwrap_err();
        assert!(matches!(err, ImportError::UnsupportedPreTokenizer(_)), "{err}");
        let split = serde_json::json!({"type": "Split", "pattern": {"Regex": "x"}});
        let err = from_hf_tokenizer_json(&tiny_json(split, serde_json::json!([]))).unwrap_err();
        assert!(err.to_string().contains("Split"), "{err}");
        let gpt2 = serde_json::json!({"type": "ByteLevel"});
        let err = from_hf_tokenizer_json(&tiny_json(gpt2, serde_json::json!(["Ġ x"]))).unwrap_err();
        assert!(matches!(err, ImportError::BadMerge { rank: 0, .. }), "{err}");
    }
}
