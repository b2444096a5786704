//! Token text to token id, for the lookups that go by text rather than by
//! merge pair: SentencePiece's "is this concatenation a token?" and Llama 3's
//! whole-word check.
//!
//! Open addressing over ids only; the text stays in the spec's token list, so
//! the index costs 8 bytes per slot instead of a copy of every token.

/// A hash index of token texts. Built once; lookups never allocate.
pub(crate) struct TextIndex {
    /// Token id per slot, `EMPTY` when free. Length is a power of two, at
    /// least twice the number of tokens, so probe runs stay short.
    slots: Vec<u32>,
    /// The hash of the slot's text, to skip most byte comparisons.
    hashes: Vec<u32>,
}

const EMPTY: u32 = u32::MAX;

/// FNV-1a over the bytes, folded to 32 bits: cheap for the short keys (one
/// to a few dozen bytes) tokens are.
#[inline]
fn hash(text: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in text {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ (h >> 29)
}

impl TextIndex {
    /// Indexes every token for which `include(id)` holds; when two have the
    /// same text the later id wins (llama.cpp's `token_to_id` map).
    pub(crate) fn new(tokens: &[Vec<u8>], include: impl Fn(usize) -> bool) -> Self {
        let n = tokens.len().max(1);
        let cap = (2 * n).next_power_of_two();
        let mut index = TextIndex { slots: vec![EMPTY; cap], hashes: vec![0; cap] };
        for (id, text) in tokens.iter().enumerate() {
            if !include(id) {
                continue;
            }
            let h = hash(text);
            let mask = cap - 1;
            let mut s = h as usize & mask;
            loop {
                let slot = index.slots[s];
                if slot == EMPTY {
                    index.slots[s] = id as u32;
                    index.hashes[s] = h as u32;
                    break;
                }
                if index.hashes[s] == h as u32 && tokens[slot as usize] == *text {
                    index.slots[s] = id as u32;
                    break;
                }
                s = (s + 1) & mask;
            }
        }
        index
    }

    /// The id of the token whose text is `text`. `tokens` must be the list
    /// the index was built from.
    #[inline]
    pub(crate) fn get(&self, tokens: &[Vec<u8>], text: &[u8]) -> Option<u32> {
        let h = hash(text);
        let mask = self.slots.len() - 1;
        let mut s = h as usize & mask;
        loop {
            let slot = self.slots[s];
            if slot == EMPTY {
                return None;
            }
            if self.hashes[s] == h as u32 && tokens[slot as usize] == text {
                return Some(slot);
            }
            s = (s + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_included_token_and_nothing_else() {
        let tokens: Vec<Vec<u8>> =
            (0..1000u32).map(|i| format!("t{i}").into_bytes()).chain([b"dup".to_vec(), b"dup".to_vec()]).collect();
        let index = TextIndex::new(&tokens, |id| id != 7);
        for (id, t) in tokens.iter().enumerate().take(1000) {
            assert_eq!(index.get(&tokens, t), if id == 7 { None } else { Some(id as u32) });
        }
        assert_eq!(index.get(&tokens, b"dup"), Some(1001));
        assert_eq!(index.get(&tokens, b"t1000"), None);
        assert_eq!(index.get(&tokens, b""), None);
        let empty = TextIndex::new(&[], |_| true);
        assert_eq!(empty.get(&[], b"x"), None);
    }
}
