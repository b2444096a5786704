//! Pre-tokenizers that are a sequence of regex splits (DeepSeek, Falcon):
//! each stage cuts every piece the previous stage produced, keeping both its
//! matches and the text between them as pieces (Hugging Face's `Split` with
//! `behavior: Isolated`; llama.cpp applies its regex list the same way).
//!
//! Each stage's regex is a hand-written matcher at one position; [`isolate`]
//! runs it leftmost-first over a piece, as a regex search would.

use unicode_general_category::{get_general_category, GeneralCategory};

use super::{char_at, class, split_gpt2, Class};

/// Cuts `text` at the leftmost, non-overlapping matches of `matcher`, which
/// returns the end of a non-empty match starting at the given position.
fn isolate(text: &str, matcher: impl Fn(&str, usize) -> Option<usize>, emit: &mut impl FnMut(&str)) {
    let mut gap_start = 0;
    let mut pos = 0;
    while pos < text.len() {
        match matcher(text, pos).filter(|&end| end > pos) {
            Some(end) => {
                if gap_start < pos {
                    emit(&text[gap_start..pos]);
                }
                emit(&text[pos..end]);
                pos = end;
                gap_start = end;
            }
            None => pos += char_at(text, pos).map_or(1, char::len_utf8),
        }
    }
    if gap_start < text.len() {
        emit(&text[gap_start..]);
    }
}

/// End of the run of characters satisfying `pred` from `pos`.
fn run(text: &str, pos: usize, pred: impl Fn(char) -> bool) -> usize {
    let mut end = pos;
    for c in text[pos..].chars() {
        if !pred(c) {
            break;
        }
        end += c.len_utf8();
    }
    end
}

/// `\s?X+`, with `X` given by `pred`.
fn optional_space_then_run(text: &str, pos: usize, pred: impl Fn(char) -> bool + Copy) -> Option<usize> {
    let c = char_at(text, pos)?;
    if class(c) == Class::Space {
        let after = pos + c.len_utf8();
        let end = run(text, after, pred);
        if end > after {
            return Some(end);
        }
    }
    Some(run(text, pos, pred))
}

/// `[\r\n]`
fn newline(text: &str, pos: usize) -> Option<usize> {
    matches!(text.as_bytes()[pos], b'\r' | b'\n').then_some(pos + 1)
}

/// `[一-龥ࠀ-一가-퟿]+`: U+0800..=U+9FA5 and U+AC00..=U+D7FF (the first two
/// ranges touch at U+4E00).
fn cjk_run(text: &str, pos: usize) -> Option<usize> {
    Some(run(text, pos, |c| matches!(u32::from(c), 0x0800..=0x9FA5 | 0xAC00..=0xD7FF)))
}

fn is_number(c: char) -> bool {
    class(c) == Class::Number
}

/// `\p{P}`: general category Pc, Pd, Ps, Pe, Pi, Pf or Po.
fn is_punctuation(c: char) -> bool {
    use GeneralCategory as G;
    matches!(
        get_general_category(c),
        G::ConnectorPunctuation
            | G::DashPunctuation
            | G::OpenPunctuation
            | G::ClosePunctuation
            | G::InitialPunctuation
            | G::FinalPunctuation
            | G::OtherPunctuation
    )
}

/// The letters DeepSeek LLM's regex lists explicitly (its tokenizer.json's
/// character class, as ranges): the cased letters of Latin, Greek, Cyrillic,
/// Armenian, Georgian, Cherokee, Glagolitic, Coptic and a few more scripts.
const DEEPSEEK_LETTERS: [(u32, u32); 87] = [
    (0x0041, 0x005A),
    (0x0061, 0x007A),
    (0x00B5, 0x00B5),
    (0x00C0, 0x00D6),
    (0x00D8, 0x00F6),
    (0x00F8, 0x01BA),
    (0x01BC, 0x01BF),
    (0x01C4, 0x0293),
    (0x0295, 0x02AF),
    (0x0370, 0x0373),
    (0x0376, 0x0376),
    (0x0377, 0x0377),
    (0x037B, 0x037D),
    (0x037F, 0x037F),
    (0x0386, 0x0386),
    (0x0388, 0x038A),
    (0x038C, 0x038C),
    (0x038E, 0x03A1),
    (0x03A3, 0x03F5),
    (0x03F7, 0x0481),
    (0x048A, 0x052F),
    (0x0531, 0x0556),
    (0x10A0, 0x10C5),
    (0x13A0, 0x13F5),
    (0x13F8, 0x13FD),
    (0x1C90, 0x1CBA),
    (0x1CBD, 0x1CBF),
    (0x1D00, 0x1D2B),
    (0x1D6B, 0x1D77),
    (0x1D79, 0x1D9A),
    (0x1E00, 0x1F15),
    (0x1F18, 0x1F1D),
    (0x1F20, 0x1F45),
    (0x1F48, 0x1F4D),
    (0x1F50, 0x1F57),
    (0x1F59, 0x1F59),
    (0x1F5B, 0x1F5B),
    (0x1F5D, 0x1F5D),
    (0x1F5F, 0x1F7D),
    (0x1F80, 0x1FB4),
    (0x1FB6, 0x1FBC),
    (0x1FBE, 0x1FBE),
    (0x1FC2, 0x1FC4),
    (0x1FC6, 0x1FCC),
    (0x1FD0, 0x1FD3),
    (0x1FD6, 0x1FDB),
    (0x1FE0, 0x1FEC),
    (0x1FF2, 0x1FF4),
    (0x1FF6, 0x1FFC),
    (0x2102, 0x2102),
    (0x2107, 0x2107),
    (0x210A, 0x2113),
    (0x2115, 0x2115),
    (0x2119, 0x211D),
    (0x2124, 0x2124),
    (0x2126, 0x2126),
    (0x2128, 0x2128),
    (0x212A, 0x212D),
    (0x212F, 0x2134),
    (0x2139, 0x2139),
    (0x213C, 0x213F),
    (0x2145, 0x2149),
    (0x214E, 0x214E),
    (0x2183, 0x2183),
    (0x2184, 0x2184),
    (0x2C00, 0x2C7B),
    (0x2C7E, 0x2CE4),
    (0x2CEB, 0x2CEE),
    (0x2CF2, 0x2CF2),
    (0x2CF3, 0x2CF3),
    (0xA640, 0xA66D),
    (0xA680, 0xA69B),
    (0xA722, 0xA76F),
    (0xA771, 0xA787),
    (0xA78B, 0xA78E),
    (0xAB70, 0xABBF),
    (0xFB00, 0xFB06),
    (0xFB13, 0xFB17),
    (0xFF21, 0xFF3A),
    (0xFF41, 0xFF5A),
    (0x10400, 0x1044F),
    (0x104B0, 0x104D3),
    (0x104D8, 0x104FB),
    (0x10C80, 0x10CB2),
    (0x10CC0, 0x10CF2),
    (0x118A0, 0x118DF),
    (0x1E900, 0x1E943),
];

fn is_deepseek_letter(c: char) -> bool {
    let c = u32::from(c);
    let i = DEEPSEEK_LETTERS.partition_point(|&(_, hi)| hi < c);
    DEEPSEEK_LETTERS.get(i).is_some_and(|&(lo, _)| lo <= c)
}

/// DeepSeek LLM's punctuation class `[!-/:-~！-／：-～‘-‟　-。]` (ASCII `:-~`
/// includes the letters, but the letter stage has taken those already).
fn is_deepseek_punct(c: char) -> bool {
    matches!(u32::from(c), 0x21..=0x2F | 0x3A..=0x7E | 0xFF01..=0xFF0F | 0xFF1A..=0xFF5E | 0x2018..=0x201F | 0x3000..=0x3002)
}

/// `\s+$`: the piece's trailing whitespace run (its leftmost match is where
/// that run starts).
fn split_trailing_space(text: &str, emit: &mut impl FnMut(&str)) {
    let mut start = text.len();
    for (i, c) in text.char_indices().rev() {
        if class(c) != Class::Space {
            break;
        }
        start = i;
    }
    if start > 0 {
        emit(&text[..start]);
    }
    if start < text.len() {
        emit(&text[start..]);
    }
}

/// DeepSeek LLM: `[\r\n]`, `\s?[letters]+`, `\s?[punctuation]+`, `\s+$`,
/// `[CJK]+`, `\p{N}+`.
pub(super) fn split_deepseek_llm(text: &str, emit: &mut impl FnMut(&str)) {
    isolate(text, newline, &mut |a| {
        isolate(a, |t, p| optional_space_then_run(t, p, is_deepseek_letter), &mut |b| {
            isolate(b, |t, p| optional_space_then_run(t, p, is_deepseek_punct), &mut |c| {
                split_trailing_space(c, &mut |d| {
                    isolate(d, cjk_run, &mut |e| isolate(e, |t, p| Some(run(t, p, is_number)), emit))
                })
            })
        })
    });
}

/// DeepSeek Coder: `[\r\n]`, `\s?\p{L}+`, `\s?\p{P}+`, `[CJK]+`, `\p{N}`.
pub(super) fn split_deepseek_coder(text: &str, emit: &mut impl FnMut(&str)) {
    let is_letter = |c| class(c) == Class::Letter;
    isolate(text, newline, &mut |a| {
        isolate(a, |t, p| optional_space_then_run(t, p, is_letter), &mut |b| {
            isolate(b, |t, p| optional_space_then_run(t, p, is_punctuation), &mut |c| {
                isolate(c, cjk_run, &mut |d| {
                    isolate(d, |t, p| char_at(t, p).filter(|&ch| is_number(ch)).map(|ch| p + ch.len_utf8()), emit)
                })
            })
        })
    });
}

/// Falcon: `[\p{P}$+<=>^~|`]+`, then the GPT-2 regex, then `[0-9]{3}`.
pub(super) fn split_falcon(text: &str, emit: &mut impl FnMut(&str)) {
    let falcon_punct = |c: char| is_punctuation(c) || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|' | '`');
    isolate(text, |t, p| Some(run(t, p, falcon_punct)), &mut |a| {
        split_gpt2(a, &mut |b| isolate(b, three_ascii_digits, emit))
    });
}

/// `[0-9][0-9][0-9]`
fn three_ascii_digits(text: &str, pos: usize) -> Option<usize> {
    let digits = text.as_bytes().get(pos..pos + 3)?;
    digits.iter().all(u8::is_ascii_digit).then_some(pos + 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(split: fn(&str, &mut dyn FnMut(&str)), text: &str) -> Vec<String> {
        let mut out = Vec::new();
        split(text, &mut |p| out.push(p.to_string()));
        assert_eq!(out.concat(), text);
        assert!(out.iter().all(|p| !p.is_empty()));
        out
    }

    fn llm(text: &str) -> Vec<String> {
        collect(|t, e| split_deepseek_llm(t, &mut |p| e(p)), text)
    }

    fn coder(text: &str) -> Vec<String> {
        collect(|t, e| split_deepseek_coder(t, &mut |p| e(p)), text)
    }

    fn falcon(text: &str) -> Vec<String> {
        collect(|t, e| split_falcon(t, &mut |p| e(p)), text)
    }

    #[test]
    fn deepseek_letter_table_is_sorted() {
        assert!(DEEPSEEK_LETTERS.windows(2).all(|w| w[0].1 < w[1].0));
        assert!(is_deepseek_letter('a') && is_deepseek_letter('µ') && is_deepseek_letter('Ж'));
        assert!(!is_deepseek_letter('×') && !is_deepseek_letter('中') && !is_deepseek_letter('1'));
    }

    #[test]
    fn deepseek_llm_stages() {
        assert_eq!(llm("Hello world\n"), ["Hello", " world", "\n"]);
        assert_eq!(llm("x  !!"), ["x", " ", " !!"]);
        assert_eq!(llm("中文abc 123"), ["中文", "abc", " ", "123"]);
        assert_eq!(llm("a   "), ["a", "   "]);
    }

    #[test]
    fn deepseek_coder_stages() {
        assert_eq!(coder("fn x() 42"), ["fn", " x", "()", " ", "4", "2"]);
        assert_eq!(coder("a\r\nb"), ["a", "\r", "\n", "b"]);
    }

    #[test]
    fn falcon_stages() {
        assert_eq!(falcon("a, b!? 12345"), ["a", ",", " b", "!?", " ", "123", "45"]);
        assert_eq!(falcon("x+=1"), ["x", "+=", "1"]);
    }
}
