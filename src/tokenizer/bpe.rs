//! Byte-level BPE merges within one pre-token, and the cache in front of them.
//!
//! A pre-token starts as one symbol per byte. Merges apply lowest rank
//! first, ties to the leftmost pair (llama.cpp's `llm_bigram_bpe` order and
//! Hugging Face's), using a min-heap of candidate pairs over a linked list of
//! symbols: each merge pushes at most two new pairs, so a pre-token of n bytes
//! costs O(n log n), never a rescan.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// The merge table: `(left id, right id)` → `(rank, merged id)`.
pub(crate) struct Merges {
    map: HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>,
}

impl Merges {
    /// From merges in rank order; when a pair repeats, its first (lowest)
    /// rank wins, as in llama.cpp's `bpe_ranks.emplace`.
    pub(crate) fn new(merges: &[[u32; 3]]) -> Self {
        let mut map = HashMap::with_capacity_and_hasher(merges.len(), Default::default());
        for (rank, &[left, right, merged]) in merges.iter().enumerate() {
            map.entry(pair_key(left, right)).or_insert((rank as u32, merged));
        }
        Merges { map }
    }

    #[inline]
    fn get(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        self.map.get(&pair_key(left, right)).copied()
    }
}

#[inline]
fn pair_key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// Multiplicative hash for the u64 pair keys (the FxHash step); SipHash
/// would cost more than the merge itself.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// One symbol of the word being merged; a doubly linked list by index.
#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: u32,
    next: u32,
    /// False once merged into its left neighbour.
    alive: bool,
}

const NONE: u32 = u32::MAX;

/// Reusable buffers for [`Bpe::merge_word`]: no allocation once warm.
#[derive(Default)]
pub(crate) struct MergeScratch {
    symbols: Vec<Symbol>,
    /// (rank, left index, left id, right id); ids detect stale entries.
    heap: BinaryHeap<Reverse<(u32, u32, u32, u32)>>,
}

/// Appends the BPE tokens of `word` (a pre-token's bytes) to `out`.
/// `byte_ids[b]` is `u32::MAX` for a byte with no token; no merge names that
/// id, so such a byte stays alone and is dropped.
pub(crate) fn merge_word(
    word: &[u8],
    byte_ids: &[u32; 256],
    merges: &Merges,
    scratch: &mut MergeScratch,
    out: &mut Vec<u32>,
) {
    let symbols = &mut scratch.symbols;
    let heap = &mut scratch.heap;
    symbols.clear();
    heap.clear();
    let n = word.len();
    for (i, &b) in word.iter().enumerate() {
        symbols.push(Symbol {
            id: byte_ids[usize::from(b)],
            prev: if i == 0 { NONE } else { i as u32 - 1 },
            next: if i + 1 == n { NONE } else { i as u32 + 1 },
            alive: true,
        });
    }
    for i in 1..n {
        let (left, right) = (symbols[i - 1].id, symbols[i].id);
        if let Some((rank, _)) = merges.get(left, right) {
            heap.push(Reverse((rank, i as u32 - 1, left, right)));
        }
    }
    while let Some(Reverse((_, li, left, right))) = heap.pop() {
        let l = li as usize;
        let sym = symbols[l];
        // A symbol only grows, so an unchanged id means unchanged content.
        if !sym.alive || sym.id != left || sym.next == NONE {
            continue;
        }
        let r = sym.next as usize;
        if symbols[r].id != right {
            continue;
        }
        let Some((_, merged)) = merges.get(left, right) else { continue };
        let after = symbols[r].next;
        symbols[l].id = merged;
        symbols[l].next = after;
        symbols[r].alive = false;
        if after != NONE {
            symbols[after as usize].prev = li;
        }
        if sym.prev != NONE {
            let p = sym.prev;
            let pid = symbols[p as usize].id;
            if let Some((rank, _)) = merges.get(pid, merged) {
                heap.push(Reverse((rank, p, pid, merged)));
            }
        }
        if after != NONE {
            let aid = symbols[after as usize].id;
            if let Some((rank, _)) = merges.get(merged, aid) {
                heap.push(Reverse((rank, li, merged, aid)));
            }
        }
    }
    // A byte with no token of its own that no merge absorbed is dropped
    // (llama.cpp's and Hugging Face's behaviour without an unknown token).
    let mut i = if n == 0 { NONE } else { 0 };
    while i != NONE {
        let sym = symbols[i as usize];
        if sym.id != NONE {
            out.push(sym.id);
        }
        i = sym.next;
    }
}

/// Bounded, direct-mapped cache from a pre-token's bytes to its tokens.
///
/// Fixed-size slots in flat arrays, allocated once: a lookup or insert never
/// allocates. A colliding insert overwrites the slot; pre-tokens longer than
/// [`KEY_MAX`] bytes or merging to more than [`IDS_MAX`] tokens bypass it.
pub(crate) struct WordCache {
    keys: Vec<u8>,
    key_lens: Vec<u8>,
    ids: Vec<u32>,
    /// 0 = empty slot.
    n_ids: Vec<u8>,
}

pub(crate) const KEY_MAX: usize = 24;
pub(crate) const IDS_MAX: usize = 8;
const SLOTS: usize = 1 << 13;

impl WordCache {
    pub(crate) fn new() -> Self {
        WordCache {
            keys: vec![0; SLOTS * KEY_MAX],
            key_lens: vec![0; SLOTS],
            ids: vec![0; SLOTS * IDS_MAX],
            n_ids: vec![0; SLOTS],
        }
    }

    /// A cache that holds nothing (for a thread that finds the shared one busy).
    pub(crate) fn disabled() -> Self {
        WordCache { keys: Vec::new(), key_lens: Vec::new(), ids: Vec::new(), n_ids: Vec::new() }
    }

    #[inline]
    fn slot(word: &[u8]) -> usize {
        let mut h = PairHasher(word.len() as u64);
        let mut chunks = word.chunks_exact(8);
        for chunk in &mut chunks {
            let mut v = [0u8; 8];
            v.copy_from_slice(chunk);
            h.write_u64(u64::from_le_bytes(v));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        h.write_u64(u64::from_le_bytes(tail));
        (h.finish() >> 32) as usize & (SLOTS - 1)
    }

    /// Appends the cached tokens of `word` to `out`; false on a miss.
    #[inline]
    pub(crate) fn get(&self, word: &[u8], out: &mut Vec<u32>) -> bool {
        if word.len() > KEY_MAX || self.n_ids.is_empty() {
            return false;
        }
        let s = Self::slot(word);
        let n = usize::from(self.n_ids[s]);
        if n == 0 || usize::from(self.key_lens[s]) != word.len() || &self.keys[s * KEY_MAX..][..word.len()] != word {
            return false;
        }
        out.extend_from_slice(&self.ids[s * IDS_MAX..][..n]);
        true
    }

    #[inline]
    pub(crate) fn insert(&mut self, word: &[u8], ids: &[u32]) {
        if word.len() > KEY_MAX || ids.is_empty() || ids.len() > IDS_MAX || self.n_ids.is_empty() {
            return;
        }
        let s = Self::slot(word);
        self.keys[s * KEY_MAX..][..word.len()].copy_from_slice(word);
        self.key_lens[s] = word.len() as u8;
        self.ids[s * IDS_MAX..][..ids.len()].copy_from_slice(ids);
        self.n_ids[s] = ids.len() as u8;
    }
}
