//! Matching special tokens' literal text in the input before BPE.
//!
//! Follows llama.cpp's `tokenizer_st_partition`: the special tokens are tried
//! longest text first; each one splits every still-unmatched stretch of text
//! at its leftmost non-overlapping occurrences. Control (and unknown) tokens
//! take part only when the caller parses special tokens; user-defined tokens
//! always do (llama.cpp and Hugging Face `tokenizers` both match them in plain
//! text too).

use super::spec::TokenType;

/// One piece of the partitioned input: a stretch of text or a special token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fragment {
    /// Byte range `start..end` of the input, not yet tokenized.
    Text {
        start: usize,
        end: usize,
    },
    Token(u32),
}

/// A special token to look for.
#[derive(Clone, Debug)]
pub(crate) struct Special {
    pub(crate) id: u32,
    pub(crate) text: String,
    /// Matched only when the caller parses special tokens.
    pub(crate) needs_parse_special: bool,
}

/// The special tokens of a vocabulary, longest text first (ties by id).
/// Tokens whose bytes are not UTF-8 cannot occur in a `&str` and are left out.
pub(crate) fn collect(tokens: &[Vec<u8>], types: &[TokenType]) -> Vec<Special> {
    let mut specials: Vec<Special> = tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter_map(|(id, (bytes, ty))| {
            let needs_parse_special = match ty {
                TokenType::Control | TokenType::Unknown => true,
                TokenType::UserDefined => false,
                _ => return None,
            };
            let text = std::str::from_utf8(bytes).ok()?;
            if text.is_empty() {
                return None;
            }
            Some(Special { id: id as u32, text: text.to_owned(), needs_parse_special })
        })
        .collect();
    specials.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));
    specials
}

/// Splits `text` into `out` (cleared first); `spare` is scratch. Both are
/// reused across calls, so this allocates only while they grow.
pub(crate) fn partition(
    text: &str,
    specials: &[Special],
    parse_special: bool,
    out: &mut Vec<Fragment>,
    spare: &mut Vec<Fragment>,
) {
    out.clear();
    if text.is_empty() {
        return;
    }
    out.push(Fragment::Text { start: 0, end: text.len() });
    for special in specials {
        if special.needs_parse_special && !parse_special {
            continue;
        }
        let needle = special.text.as_str();
        spare.clear();
        let mut found = false;
        for &fragment in out.iter() {
            let Fragment::Text { start, end } = fragment else {
                spare.push(fragment);
                continue;
            };
            let mut from = start;
            while let Some(at) = text[from..end].find(needle) {
                let at = from + at;
                if at > from {
                    spare.push(Fragment::Text { start: from, end: at });
                }
                spare.push(Fragment::Token(special.id));
                from = at + needle.len();
                found = true;
            }
            if from < end {
                spare.push(Fragment::Text { start: from, end });
            }
        }
        if found {
            std::mem::swap(out, spare);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specials(list: &[(&str, TokenType)]) -> Vec<Special> {
        let tokens: Vec<Vec<u8>> = list.iter().map(|(t, _)| t.as_bytes().to_vec()).collect();
        let types: Vec<TokenType> = list.iter().map(|(_, ty)| *ty).collect();
        collect(&tokens, &types)
    }

    fn show(text: &str, fragments: &[Fragment]) -> Vec<String> {
        fragments
            .iter()
            .map(|f| match *f {
                Fragment::Text { start, end } => text[start..end].to_string(),
                Fragment::Token(id) => format!("#{id}"),
            })
            .collect()
    }

    fn run(text: &str, specials: &[Special], parse_special: bool) -> Vec<String> {
        let (mut out, mut spare) = (Vec::new(), Vec::new());
        partition(text, specials, parse_special, &mut out, &mut spare);
        show(text, &out)
    }

    #[test]
    fn control_tokens_only_when_parsing_specials() {
        let sp = specials(&[("<s>", TokenType::Control), ("a", TokenType::Normal), ("<u>", TokenType::UserDefined)]);
        assert_eq!(run("x<s>y<u>z", &sp, true), ["x", "#0", "y", "#2", "z"]);
        assert_eq!(run("x<s>y<u>z", &sp, false), ["x<s>y", "#2", "z"]);
        assert_eq!(run("<s><s>", &sp, true), ["#0", "#0"]);
        assert_eq!(run("", &sp, true), Vec::<String>::new());
    }

    #[test]
    fn longest_token_claims_its_text_first() {
        // llama.cpp's order: "bcd" (longer) is matched before "ab" is tried.
        let sp = specials(&[("ab", TokenType::Control), ("bcd", TokenType::Control)]);
        assert_eq!(run("abcd", &sp, true), ["a", "#1"]);
        assert_eq!(run("abab", &sp, true), ["#0", "#0"]);
    }
}
