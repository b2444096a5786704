//! SentencePiece BPE as GGUF stores it (`tokenizer.ggml.model = "llama"`),
//! token for token with llama.cpp's `llm_tokenizer_spm`.
//!
//! A stretch of text (between special tokens) has its spaces replaced by `▁`
//! (with one `▁` put in front when the model adds a space prefix) and starts
//! as one symbol per UTF-8 character. Repeatedly, of the adjacent pairs whose
//! concatenated text is a token, the one whose token has the highest score
//! merges (ties to the leftmost). A final symbol that is not a token, which
//! can only be a single character, is spelled with its bytes' `<0xNN>`
//! tokens. Like the byte-level merger in [`super::bpe`], candidates live in a
//! heap over a linked list of symbols, so nothing is rescanned.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::text_index::TextIndex;

/// `▁` (U+2581), SentencePiece's visible space.
pub(crate) const SPACE_MARK: &str = "\u{2581}";

const NONE: u32 = u32::MAX;

/// One symbol: the bytes `start..start + len` of the escaped text.
#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    /// 0 once merged into its left neighbour.
    len: u32,
    /// The token whose text this symbol is, `NONE` if there is none.
    id: u32,
    prev: u32,
    next: u32,
}

/// A candidate merge. Ordered as llama.cpp's `llm_bigram_spm` queue: higher
/// score first, then the leftmost.
type Candidate = (u32, Reverse<u32>, u32, u32, u32); // (score key, left, right, size, merged id)

/// Reusable buffers: no allocation once warm.
#[derive(Default)]
pub(crate) struct SpmScratch {
    text: Vec<u8>,
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Candidate>,
}

/// An order-preserving map of f32 to u32 (larger score, larger key).
#[inline]
fn score_key(score: f32) -> u32 {
    let bits = score.to_bits();
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// What one encode needs from the tokenizer.
pub(crate) struct SpmVocab<'a> {
    pub(crate) tokens: &'a [Vec<u8>],
    pub(crate) scores: &'a [f32],
    pub(crate) index: &'a TextIndex,
    /// The `<0xNN>` token of each byte (`NONE`: none).
    pub(crate) byte_ids: &'a [u32; 256],
    /// Emitted for a byte without a byte token (llama.cpp would abort).
    pub(crate) unk_id: Option<u32>,
}

impl SpmVocab<'_> {
    /// Appends the tokens of `text` to `out`, with a leading `▁` if
    /// `space_prefix`.
    pub(crate) fn encode(&self, text: &str, space_prefix: bool, scratch: &mut SpmScratch, out: &mut Vec<u32>) {
        let SpmScratch { text: escaped, symbols, heap } = scratch;
        escaped.clear();
        symbols.clear();
        heap.clear();
        if space_prefix {
            escaped.extend_from_slice(SPACE_MARK.as_bytes());
        }
        for &b in text.as_bytes() {
            if b == b' ' {
                escaped.extend_from_slice(SPACE_MARK.as_bytes());
            } else {
                escaped.push(b);
            }
        }
        if escaped.is_empty() {
            return;
        }
        // `escaped` is UTF-8 (`text` with some spaces replaced by `▁`).
        let mut start = 0usize;
        while start < escaped.len() {
            let len = utf8_len(escaped[start]).min(escaped.len() - start);
            let i = symbols.len() as u32;
            let id = self.index.get(self.tokens, &escaped[start..start + len]).unwrap_or(NONE);
            symbols.push(Symbol { start: start as u32, len: len as u32, id, prev: i.wrapping_sub(1), next: i + 1 });
            start += len;
        }
        if let Some(last) = symbols.last_mut() {
            last.next = NONE;
        }
        for i in 1..symbols.len() as u32 {
            self.push_candidate(escaped, symbols, heap, i - 1, i);
        }
        while let Some((_, Reverse(left), right, size, merged)) = heap.pop() {
            let (l, r) = (symbols[left as usize], symbols[right as usize]);
            // A symbol only grows; a changed length means the pair is stale.
            if l.len == 0 || r.len == 0 || l.len + r.len != size {
                continue;
            }
            symbols[left as usize].len = size;
            symbols[left as usize].id = merged;
            symbols[left as usize].next = r.next;
            symbols[right as usize].len = 0;
            if r.next != NONE {
                symbols[r.next as usize].prev = left;
            }
            if l.prev != NONE {
                self.push_candidate(escaped, symbols, heap, l.prev, left);
            }
            if r.next != NONE {
                self.push_candidate(escaped, symbols, heap, left, r.next);
            }
        }
        let mut i = 0u32;
        while i != NONE {
            let sym = symbols[i as usize];
            if sym.id != NONE {
                out.push(sym.id);
            } else {
                for &b in &escaped[sym.start as usize..(sym.start + sym.len) as usize] {
                    match self.byte_ids[usize::from(b)] {
                        NONE => out.extend(self.unk_id),
                        id => out.push(id),
                    }
                }
            }
            i = sym.next;
        }
    }

    #[inline]
    fn push_candidate(
        &self,
        escaped: &[u8],
        symbols: &[Symbol],
        heap: &mut BinaryHeap<Candidate>,
        left: u32,
        right: u32,
    ) {
        let (l, r) = (symbols[left as usize], symbols[right as usize]);
        let size = l.len + r.len;
        let text = &escaped[l.start as usize..(l.start + size) as usize];
        if let Some(id) = self.index.get(self.tokens, text) {
            heap.push((score_key(self.scores[id as usize]), Reverse(left), right, size, id));
        }
    }
}

/// Length of the UTF-8 sequence a lead byte starts (1 for a stray byte).
#[inline]
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

/// The byte a `<0xNN>` byte token stands for.
pub(crate) fn parse_byte_token(text: &[u8]) -> Option<u8> {
    let hex = text.strip_prefix(b"<0x")?.strip_suffix(b">")?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_key_keeps_order() {
        let scores = [f32::NEG_INFINITY, -1000.0, -3.5, -0.0, 0.0, 1e-9, 2.0, f32::INFINITY];
        for w in scores.windows(2) {
            assert!(score_key(w[0]) <= score_key(w[1]), "{w:?}");
        }
        assert!(score_key(-1.0) < score_key(-0.5));
    }

    #[test]
    fn byte_tokens_parse() {
        assert_eq!(parse_byte_token(b"<0x0A>"), Some(10));
        assert_eq!(parse_byte_token(b"<0xff>"), Some(255));
        assert_eq!(parse_byte_token(b"<0x100>"), None);
        assert_eq!(parse_byte_token(b"0x0A"), None);
    }
}
