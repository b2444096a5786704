//! Text from files (GGUF keys, tensor names, token strings, JSON values) shown
//! in error messages: control characters escaped and the length bounded, so a
//! hostile file cannot print megabytes of NULs and terminal escapes. Every
//! error that quotes bytes from a file shows them through [`untrusted`].

use std::fmt::Write;

/// Characters shown before the rest is cut.
pub const MAX_SHOWN_CHARS: usize = 80;

/// `text` with control characters (and the escape character `\`) written as
/// Rust escapes (`\0`, `\n`, `\u{1b}`), cut after [`MAX_SHOWN_CHARS`]
/// characters with a note of how long it was.
pub fn untrusted(text: &str) -> String {
    untrusted_bytes(text.as_bytes())
}

/// As [`untrusted`], for bytes that may not be UTF-8: invalid bytes are shown
/// as `\xNN`.
pub fn untrusted_bytes(bytes: &[u8]) -> String {
    untrusted_up_to(bytes, MAX_SHOWN_CHARS)
}

/// As [`untrusted_bytes`], cut after `max_chars` characters: for messages
/// that are mostly ours and only quote a file (a chat template's errors).
pub fn untrusted_up_to(bytes: &[u8], max_chars: usize) -> String {
    let mut out = String::new();
    let mut shown = 0;
    let mut cut = false;
    'chunks: for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if shown == max_chars {
                cut = true;
                break 'chunks;
            }
            if c.is_control() || c == '\\' || is_invisible(c) {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
            shown += 1;
        }
        for b in chunk.invalid() {
            if shown == max_chars {
                cut = true;
                break 'chunks;
            }
            let _ = write!(out, "\\x{b:02x}");
            shown += 1;
        }
    }
    if cut {
        let _ = write!(out, "... ({} bytes in all)", bytes.len());
    }
    out
}

/// Format characters that change what a terminal shows (bidi overrides,
/// zero-width characters) without being control characters.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_are_escaped_and_long_text_is_cut() {
        assert_eq!(untrusted("llama.block_count"), "llama.block_count");
        assert_eq!(untrusted("a\0b\n\x1b[31m\\"), "a\\u{0}b\\n\\u{1b}[31m\\\\");
        assert_eq!(untrusted("Ġthe ä"), "Ġthe ä");
        assert_eq!(untrusted("x\u{202e}y"), "x\\u{202e}y");
        let long = "\0".repeat(48_978);
        let shown = untrusted(&long);
        assert!(shown.len() < 600 && shown.ends_with("(48978 bytes in all)"), "{shown}");
        assert!(!shown.contains('\0') && !shown.contains('\n'));
        assert_eq!(untrusted_bytes(b"ok\xff\x00"), "ok\\xff\\u{0}");
        assert!(untrusted_bytes(&[0xffu8; 10_000]).ends_with("(10000 bytes in all)"));
    }
}
