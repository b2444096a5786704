//! Pre-tokenizers: cut text into the pieces that BPE merges run within.
//!
//! The GPT-2 regex
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! is hand-written as a scanner, following llama.cpp's
//! `unicode_regex_split_custom_gpt2` (`unicode.cpp`) step for step, so no
//! backtracking regex engine is needed. SmolLM2 (llama.cpp's
//! `LLAMA_VOCAB_PRE_TYPE_SMOLLM`, Hugging Face's
//! `Sequence[Digits(individual_digits), ByteLevel]`) first makes every `\p{N}`
//! character its own piece, then runs the GPT-2 scanner on the text between;
//! the scanner's look-ahead never crosses a digit, so `"a  1"` gives
//! `"a"`, `"  "`, `"1"` where plain GPT-2 gives `"a"`, `" "`, `" 1"`.
//!
//! Llama 3 and Qwen2 have their own scanner ([`llama3`]); DeepSeek and Falcon
//! are sequences of simpler splits ([`staged`]). All of them read character
//! classes from [`class`], so `\p{L}`, `\p{N}` and `\s` mean the same
//! everywhere.

mod llama3;
mod staged;

use unicode_general_category::{get_general_category, GeneralCategory};

use super::spec::PreTokenizer;

/// The character classes the GPT-2 regex distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// `\p{L}`: general category Lu, Ll, Lt, Lm or Lo.
    Letter,
    /// `\p{N}`: general category Nd, Nl or No.
    Number,
    /// `\s`: the Unicode `White_Space` property (what llama.cpp's
    /// `unicode_set_whitespace` and Rust's `char::is_whitespace` both use).
    Space,
    /// Everything else (`[^\s\p{L}\p{N}]`).
    Other,
}

/// Classes of the 128 ASCII characters, so the common case is one load.
const ASCII_CLASS: [Class; 128] = {
    let mut table = [Class::Other; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        table[b] = if c.is_ascii_alphabetic() {
            Class::Letter
        } else if c.is_ascii_digit() {
            Class::Number
        } else if matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ') {
            Class::Space
        } else {
            Class::Other
        };
        b += 1;
    }
    table
};

pub(crate) fn class(c: char) -> Class {
    if c.is_ascii() {
        return ASCII_CLASS[c as usize];
    }
    if c.is_whitespace() {
        return Class::Space;
    }
    use GeneralCategory as G;
    match get_general_category(c) {
        G::UppercaseLetter | G::LowercaseLetter | G::TitlecaseLetter | G::ModifierLetter | G::OtherLetter => {
            Class::Letter
        }
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => Class::Number,
        _ => Class::Other,
    }
}

/// Calls `emit` with each pre-token of `text`, in order; the pieces
/// concatenate to `text` and none is empty.
pub(crate) fn split(pre: PreTokenizer, text: &str, emit: &mut impl FnMut(&str)) {
    match pre {
        PreTokenizer::None => {
            if !text.is_empty() {
                emit(text)
            }
        }
        PreTokenizer::Gpt2 => split_gpt2(text, emit),
        PreTokenizer::Llama3 => llama3::split(text, 3, emit),
        PreTokenizer::Qwen2 => llama3::split(text, 1, emit),
        PreTokenizer::DeepSeekLlm => staged::split_deepseek_llm(text, emit),
        PreTokenizer::DeepSeekCoder => staged::split_deepseek_coder(text, emit),
        PreTokenizer::Falcon => staged::split_falcon(text, emit),
        PreTokenizer::SmolLm => {
            let mut start = 0;
            for (i, c) in text.char_indices() {
                if class(c) == Class::Number {
                    if start < i {
                        split_gpt2(&text[start..i], emit);
                    }
                    let end = i + c.len_utf8();
                    emit(&text[i..end]);
                    start = end;
                }
            }
            if start < text.len() {
                split_gpt2(&text[start..], emit);
            }
        }
    }
}

/// The character starting at byte `pos` of `text`, if any.
#[inline]
fn char_at(text: &str, pos: usize) -> Option<char> {
    text.get(pos..).and_then(|rest| rest.chars().next())
}

#[inline]
fn class_at(text: &str, pos: usize) -> Option<Class> {
    char_at(text, pos).map(class)
}

/// Byte offset just past the run of `want`-class characters starting at `pos`.
#[inline]
fn run_end(text: &str, pos: usize, want: Class) -> usize {
    let mut end = pos;
    for c in text[pos..].chars() {
        if class(c) != want {
            break;
        }
        end += c.len_utf8();
    }
    end
}

/// The GPT-2 regex over one segment; look-ahead stops at the segment's end.
fn split_gpt2(text: &str, emit: &mut impl FnMut(&str)) {
    let bytes = text.as_bytes();
    let mut pos = 0;
    while pos < text.len() {
        let c = char_at(text, pos).unwrap_or_default();
        // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive, as in the regex).
        if c == '\'' {
            let next = bytes.get(pos + 1).copied();
            if matches!(next, Some(b's' | b't' | b'm' | b'd')) {
                emit(&text[pos..pos + 2]);
                pos += 2;
                continue;
            }
            let pair = (next, bytes.get(pos + 2).copied());
            if matches!(pair, (Some(b'r'), Some(b'e')) | (Some(b'v'), Some(b'e')) | (Some(b'l'), Some(b'l'))) {
                emit(&text[pos..pos + 3]);
                pos += 3;
                continue;
            }
        }
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an ASCII space joins
        // the run that follows it.
        let (lead, run_class) = if c == ' ' { (1, class_at(text, pos + 1)) } else { (0, Some(class(c))) };
        if let Some(run @ (Class::Letter | Class::Number | Class::Other)) = run_class {
            let end = run_end(text, pos + lead, run);
            emit(&text[pos..end]);
            pos = end;
            continue;
        }
        // `\s+(?!\S)|\s+`: a whitespace run followed by a non-space leaves
        // its last character to start the next piece (" word").
        let mut end = pos;
        let mut last_start = pos;
        for ws in text[pos..].chars() {
            if class(ws) != Class::Space {
                break;
            }
            last_start = end;
            end += ws.len_utf8();
        }
        let n_chars_more_than_one = last_start > pos;
        if n_chars_more_than_one && end < text.len() {
            end = last_start;
        }
        if end == pos {
            // Unreachable: `c` is whitespace when no run above matched. Kept
            // so the loop always advances.
            end = pos + c.len_utf8().max(1);
        }
        emit(&text[pos..end]);
        pos = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(pre: PreTokenizer, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        split(pre, text, &mut |p| out.push(p.to_string()));
        assert_eq!(out.concat(), text);
        assert!(out.iter().all(|p| !p.is_empty()));
        out
    }

    fn gpt2(text: &str) -> Vec<String> {
        pieces(PreTokenizer::Gpt2, text)
    }

    fn smol(text: &str) -> Vec<String> {
        pieces(PreTokenizer::SmolLm, text)
    }

    #[test]
    fn classes_follow_general_category() {
        assert_eq!(class('a'), Class::Letter);
        assert_eq!(class('é'), Class::Letter);
        assert_eq!(class('中'), Class::Letter);
        assert_eq!(class('ー'), Class::Letter); // Lm
        assert_eq!(class('٣'), Class::Number); // Arabic-Indic digit, Nd
        assert_eq!(class('½'), Class::Number); // No
        assert_eq!(class('Ⅻ'), Class::Number); // Nl
        assert_eq!(class('\u{a0}'), Class::Space);
        assert_eq!(class('\u{3000}'), Class::Space);
        assert_eq!(class('\u{85}'), Class::Space);
        // Not White_Space, although Python's str.isspace says so.
        assert_eq!(class('\u{1c}'), Class::Other);
        // A combining mark is not \p{L} (char::is_alphabetic says it is).
        assert_eq!(class('\u{301}'), Class::Other);
        assert_eq!(class('😀'), Class::Other);
        assert_eq!(class('\u{200d}'), Class::Other);
    }

    #[test]
    fn words_and_spaces() {
        assert_eq!(gpt2("Hello world"), ["Hello", " world"]);
        assert_eq!(gpt2(""), Vec::<String>::new());
        assert_eq!(gpt2(" "), [" "]);
        assert_eq!(gpt2("a b"), ["a", " b"]);
    }

    #[test]
    fn whitespace_run_gives_back_its_last_char() {
        // \s+(?!\S): the run stops before the space that joins "b".
        assert_eq!(gpt2("a   b"), ["a", "  ", " b"]);
        // At the end there is no \S to give back to.
        assert_eq!(gpt2("a   "), ["a", "   "]);
        // A single non-space whitespace before a word stays alone (\s+).
        assert_eq!(gpt2("a\nb"), ["a", "\n", "b"]);
        assert_eq!(gpt2("a\n\nb"), ["a", "\n", "\n", "b"]);
        assert_eq!(gpt2("a \n b"), ["a", " \n", " b"]);
        assert_eq!(gpt2("x\t\ty"), ["x", "\t", "\t", "y"]);
        assert_eq!(gpt2("\r\n"), ["\r\n"]);
        assert_eq!(gpt2("  !"), [" ", " !"]);
    }

    #[test]
    fn contractions_are_lowercase_only() {
        assert_eq!(gpt2("don't"), ["don", "'t"]);
        assert_eq!(
            gpt2("we're they've I'm you'll he'd it's"),
            ["we", "'re", " they", "'ve", " I", "'m", " you", "'ll", " he", "'d", " it", "'s"]
        );
        assert_eq!(gpt2("I'LL"), ["I", "'", "LL"]);
        assert_eq!(gpt2("'x"), ["'", "x"]);
        assert_eq!(gpt2(" 's"), [" '", "s"]);
        assert_eq!(gpt2("''s"), ["''", "s"]);
    }

    #[test]
    fn numbers_and_punctuation() {
        assert_eq!(gpt2("12345"), ["12345"]);
        assert_eq!(gpt2("pi 3.14"), ["pi", " 3", ".", "14"]);
        assert_eq!(gpt2("a, b!?"), ["a", ",", " b", "!?"]);
        assert_eq!(gpt2("x2"), ["x", "2"]);
        assert_eq!(gpt2("😀😀 👍"), ["😀😀", " 👍"]);
    }

    #[test]
    fn smollm_splits_every_digit() {
        assert_eq!(smol("12345"), ["1", "2", "3", "4", "5"]);
        assert_eq!(smol("pi 3.14"), ["pi", " ", "3", ".", "1", "4"]);
        // The look-ahead stops at the digit: the run keeps all its spaces.
        assert_eq!(smol("a  1"), ["a", "  ", "1"]);
        assert_eq!(gpt2("a  1"), ["a", " ", " 1"]);
        assert_eq!(smol("1,000"), ["1", ",", "0", "0", "0"]);
        assert_eq!(smol("x½y"), ["x", "½", "y"]);
        assert_eq!(smol("Hello world"), ["Hello", " world"]);
    }
}
