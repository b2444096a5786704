//! The Llama 3 pre-tokenizer regex, hand-written as a scanner:
//!
//! `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//!  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
//!
//! Qwen2 uses the same regex with `\p{N}` (one digit) in place of
//! `\p{N}{1,3}`, so the group size is a parameter. Each alternative is tried
//! in order at the current position, as a backtracking engine would, and the
//! longest match of the first alternative that matches is taken.

use super::{char_at, class, class_at, run_end, Class};

fn is_cr_or_lf(c: char) -> bool {
    c == '\r' || c == '\n'
}

/// Calls `emit` with each pre-token of `text`; digit runs are cut into
/// groups of at most `max_digits` characters.
pub(super) fn split(text: &str, max_digits: usize, emit: &mut impl FnMut(&str)) {
    let bytes = text.as_bytes();
    let mut pos = 0;
    while pos < text.len() {
        let c = char_at(text, pos).unwrap_or_default();
        let after_c = pos + c.len_utf8();
        let c_class = class(c);
        // (?i:'s|'t|'re|'ve|'m|'ll|'d): an ASCII letter's byte is the
        // letter, so comparing bytes is comparing characters.
        if c == '\'' {
            let lower = |i: usize| bytes.get(i).map(u8::to_ascii_lowercase);
            if matches!(lower(pos + 1), Some(b's' | b't' | b'm' | b'd')) {
                emit(&text[pos..pos + 2]);
                pos += 2;
                continue;
            }
            if matches!(
                (lower(pos + 1), lower(pos + 2)),
                (Some(b'r'), Some(b'e')) | (Some(b'v'), Some(b'e')) | (Some(b'l'), Some(b'l'))
            ) {
                emit(&text[pos..pos + 3]);
                pos += 3;
                continue;
            }
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if c_class == Class::Letter {
            let end = run_end(text, pos, Class::Letter);
            emit(&text[pos..end]);
            pos = end;
            continue;
        }
        if !is_cr_or_lf(c) && c_class != Class::Number && class_at(text, after_c) == Some(Class::Letter) {
            let end = run_end(text, after_c, Class::Letter);
            emit(&text[pos..end]);
            pos = end;
            continue;
        }
        // \p{N}{1,3}
        if c_class == Class::Number {
            let mut end = pos;
            for (n, d) in text[pos..].chars().enumerate() {
                if n == max_digits || class(d) != Class::Number {
                    break;
                }
                end += d.len_utf8();
            }
            emit(&text[pos..end]);
            pos = end;
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        let lead = usize::from(c == ' ');
        if class_at(text, pos + lead) == Some(Class::Other) {
            let mut end = run_end(text, pos + lead, Class::Other);
            while matches!(bytes.get(end), Some(b'\r' | b'\n')) {
                end += 1;
            }
            emit(&text[pos..end]);
            pos = end;
            continue;
        }
        // `c` is whitespace from here on. Scan its run once.
        let mut run_end_pos = pos;
        let mut last_start = pos;
        let mut after_last_newline = None;
        for ws in text[pos..].chars() {
            if class(ws) != Class::Space {
                break;
            }
            last_start = run_end_pos;
            run_end_pos += ws.len_utf8();
            if is_cr_or_lf(ws) {
                after_last_newline = Some(run_end_pos);
            }
        }
        let end = if let Some(end) = after_last_newline {
            // \s*[\r\n]+: the greedy \s* gives back up to the last newline.
            end
        } else if last_start > pos && run_end_pos < text.len() {
            // \s+(?!\S): leave the last space to start the next pre-token.
            last_start
        } else {
            // \s+
            run_end_pos
        };
        let end = if end == pos { after_c } else { end };
        emit(&text[pos..end]);
        pos = end;
    }
}

#[cfg(test)]
mod tests {
    fn pieces(max_digits: usize, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        super::split(text, max_digits, &mut |p| out.push(p.to_string()));
        assert_eq!(out.concat(), text);
        out
    }

    #[test]
    fn llama3_rules() {
        let l3 = |t| pieces(3, t);
        assert_eq!(l3("Hello world"), ["Hello", " world"]);
        assert_eq!(l3("I'LL don't"), ["I", "'LL", " don", "'t"]);
        // One non-letter, non-digit character leads a letter run.
        assert_eq!(l3("(normal) _x"), ["(normal", ")", " _", "x"]);
        assert_eq!(l3("_x  y"), ["_x", " ", " y"]);
        assert_eq!(l3("1234567"), ["123", "456", "7"]);
        assert_eq!(l3("a1b"), ["a", "1", "b"]);
        // Punctuation keeps the newlines that follow it.
        assert_eq!(l3("x.\n\ny"), ["x", ".\n\n", "y"]);
        // Whitespace up to its last newline is one piece.
        assert_eq!(l3("a \n \n  b"), ["a", " \n \n", " ", " b"]);
        assert_eq!(l3("a   b"), ["a", "  ", " b"]);
        assert_eq!(l3("a   "), ["a", "   "]);
        assert_eq!(l3("\n ="), ["\n", " ="]);
        assert_eq!(l3("  !"), [" ", " !"]);
        assert_eq!(l3("\t!"), ["\t", "!"]);
    }

    #[test]
    fn qwen2_splits_every_digit() {
        assert_eq!(pieces(1, "x 123"), ["x", " ", "1", "2", "3"]);
    }
}
