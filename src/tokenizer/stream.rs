//! Incremental UTF-8 decoding of a token stream.
//!
//! A byte-level BPE token can end in the middle of a character (an emoji's
//! four bytes often span two or three tokens). [`Utf8Stream`] emits only
//! complete characters and holds back an incomplete tail until the next bytes
//! arrive; bytes that can never form a character become U+FFFD, one per
//! maximal invalid subpart, exactly as [`String::from_utf8_lossy`] would over
//! the whole stream. It writes into the caller's `String` and keeps at most
//! three pending bytes inline, so it never allocates itself.

/// Streaming UTF-8 decoder over arbitrary byte chunks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Utf8Stream {
    pending: [u8; 4],
    n_pending: usize,
}

impl Utf8Stream {
    /// A stream with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when bytes of an unfinished character are held back.
    pub fn has_pending(&self) -> bool {
        self.n_pending > 0
    }

    /// Decodes `bytes` after whatever was pending, appending every complete
    /// character (or U+FFFD) to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut String) {
        // First finish the held-back character, one byte at a time.
        while self.n_pending > 0 {
            let Some((&b, rest)) = bytes.split_first() else { return };
            let mut buf = self.pending;
            buf[self.n_pending] = b;
            match std::str::from_utf8(&buf[..=self.n_pending]) {
                Ok(s) => {
                    out.push_str(s);
                    self.n_pending = 0;
                    bytes = rest;
                }
                Err(e) if e.error_len().is_none() => {
                    self.pending = buf;
                    self.n_pending += 1;
                    bytes = rest;
                }
                Err(_) => {
                    // `b` cannot continue the held-back prefix: the prefix is
                    // one invalid subpart, and `b` starts afresh below.
                    out.push(char::REPLACEMENT_CHARACTER);
                    self.n_pending = 0;
                }
            }
        }
        let mut chunks = bytes.utf8_chunks().peekable();
        while let Some(chunk) = chunks.next() {
            out.push_str(chunk.valid());
            let invalid = chunk.invalid();
            if invalid.is_empty() {
                continue;
            }
            let incomplete_tail =
                chunks.peek().is_none() && matches!(std::str::from_utf8(invalid), Err(e) if e.error_len().is_none());
            if incomplete_tail {
                self.pending[..invalid.len()].copy_from_slice(invalid);
                self.n_pending = invalid.len();
            } else {
                out.push(char::REPLACEMENT_CHARACTER);
            }
        }
    }

    /// Ends the stream: a held-back incomplete character becomes U+FFFD.
    pub fn finish(&mut self, out: &mut String) {
        if self.n_pending > 0 {
            out.push(char::REPLACEMENT_CHARACTER);
            self.n_pending = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(chunks: &[&[u8]]) -> String {
        let mut dec = Utf8Stream::new();
        let mut out = String::new();
        for c in chunks {
            dec.push(c, &mut out);
        }
        dec.finish(&mut out);
        out
    }

    #[test]
    fn emoji_split_across_chunks() {
        let e = "😀".as_bytes();
        let mut dec = Utf8Stream::new();
        let mut out = String::new();
        dec.push(b"a", &mut out);
        dec.push(&e[..1], &mut out);
        assert_eq!(out, "a");
        assert!(dec.has_pending());
        dec.push(&e[1..3], &mut out);
        assert_eq!(out, "a");
        dec.push(&[e[3], b'b'], &mut out);
        assert_eq!(out, "a😀b");
        assert!(!dec.has_pending());
    }

    #[test]
    fn invalid_bytes_become_replacement() {
        assert_eq!(stream(&[b"a\xffb"]), "a\u{fffd}b");
        // A truncated character followed by a new one.
        assert_eq!(stream(&[b"\xf0\x9f", b"a"]), "\u{fffd}a");
        assert_eq!(stream(&[b"\xe4\xb8"]), "\u{fffd}");
        assert_eq!(stream(&[b"\xc3", b"\xa9"]), "é");
        // Surrogates and overlongs are invalid even when split.
        assert_eq!(stream(&[b"\xed", b"\xa0\x80"]), String::from_utf8_lossy(b"\xed\xa0\x80"));
        assert_eq!(stream(&[b"\xc0", b"\x80"]), String::from_utf8_lossy(b"\xc0\x80"));
    }

    #[test]
    fn matches_lossy_on_every_split() {
        let samples: [&[u8]; 5] = [
            b"h\xc3\xa9llo \xe4\xb8\xad\xf0\x9f\x98\x80!",
            b"\xf0\x9f\x98",
            b"\xe0\x80\x80x",
            b"\xf4\x90\x80\x80",
            b"a\xe2\x82",
        ];
        for s in samples {
            let want = String::from_utf8_lossy(s);
            for i in 0..=s.len() {
                for j in i..=s.len() {
                    assert_eq!(stream(&[&s[..i], &s[i..j], &s[j..]]), want, "{s:?} split at {i},{j}");
                }
            }
        }
    }
}
