//! Byte-level BPE (GPT-2, SmolLM2, Llama 3, Qwen2, ...) and SentencePiece BPE
//! (Llama 2, Mistral, Gemma, Phi-3) tokenizers, token for token with llama.cpp.
//!
//! Encoding runs in three steps: special tokens' literal text is cut out of
//! the input (`special`); for byte-level BPE the text between is split into
//! pre-tokens by the model's pre-tokenizer (`pretok`) and each pre-token's
//! bytes are merged by BPE rank (`bpe`), with a bounded cache in front for
//! repeated words; for SentencePiece each stretch of text is merged whole by
//! token score (`spm`). Decoding concatenates each token's piece (its
//! bytes; for SentencePiece with `▁` read as a space and `<0xNN>` as that
//! byte); [`StreamDecoder`] does it one token at a time without splitting a
//! UTF-8 character.
//!
//! [`Tokenizer::encode`] adds no BOS/EOS; [`Tokenizer::encode_prompt`] adds
//! them as the spec's `add_bos` / `add_eos` say (llama.cpp's `add_special`).

mod bpe;
mod end_of_generation;
mod pretok;
mod spec;
mod special;
mod spm;
mod stream;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_spm;
mod text_index;

use std::fmt;
use std::sync::{Mutex, TryLockError};

pub use spec::{PreTokenizer, TokenType, TokenizerModel, TokenizerSpec};
pub use stream::Utf8Stream;

use bpe::{MergeScratch, Merges, WordCache};
use special::{Fragment, Special};
use spm::{SpmScratch, SpmVocab};
use text_index::TextIndex;

/// Why a [`TokenizerSpec`] was rejected, or a token id could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenizerError {
    /// The token list and the token-type list differ in length.
    #[error("tokenizer has {tokens} tokens but {types} token types")]
    TypeCountMismatch {
        /// Number of tokens.
        tokens: usize,
        /// Number of token types.
        types: usize,
    },
    /// More tokens than 32-bit ids address.
    #[error("tokenizer has {0} tokens, more than 32-bit ids can address")]
    TooManyTokens(usize),
    /// A special token with no text.
    #[error("{kind} token {id} has empty text")]
    EmptySpecialToken {
        /// The token id.
        id: u32,
        /// Which special token.
        kind: &'static str,
    },
    /// A merge names a token outside the vocabulary.
    #[error("merge #{rank} names token id {id}, but the vocabulary has {n_vocab} tokens")]
    MergeIdOutOfRange {
        /// The merge's index in the merge list.
        rank: usize,
        /// The token id.
        id: u32,
        /// Tokens in the vocabulary.
        n_vocab: usize,
    },
    /// A merge's result is not its two tokens joined.
    #[error("merge #{rank}: token {merged} is not token {left} followed by token {right}")]
    MergeMismatch {
        /// The merge's index in the merge list.
        rank: usize,
        /// The merge's left token.
        left: u32,
        /// The merge's right token.
        right: u32,
        /// The token the merge claims to make.
        merged: u32,
    },
    /// A special token id outside the vocabulary.
    #[error("{role} token id {id} is out of range (vocabulary has {n_vocab} tokens)")]
    SpecialIdOutOfRange {
        /// Which special token (`bos`, `eos`, ...).
        role: &'static str,
        /// The token id.
        id: u32,
        /// Tokens in the vocabulary.
        n_vocab: usize,
    },
    /// BOS or EOS is to be added but the tokenizer has none.
    #[error("add_{role} is set but the tokenizer has no {role} token")]
    MissingSpecialId {
        /// Which special token (`bos`, `eos`, ...).
        role: &'static str,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is out of range (vocabulary has {n_vocab} tokens)")]
    IdOutOfRange {
        /// The token id.
        id: u32,
        /// Tokens in the vocabulary.
        n_vocab: usize,
    },
    /// The scores do not match the tokens.
    #[error("tokenizer has {scores} scores for {tokens} tokens ({model:?} needs {expected})")]
    ScoreCountMismatch {
        /// The tokenizer model.
        model: TokenizerModel,
        /// Number of tokens.
        tokens: usize,
        /// Number of scores.
        scores: usize,
        /// Number of scores the model needs.
        expected: usize,
    },
    /// A SentencePiece tokenizer with merges or a pre-tokenizer (only BPE has them).
    #[error(
        "a SentencePiece tokenizer has no merges and no pre-tokenizer (found {merges} merges, pre-tokenizer {pre:?})"
    )]
    SentencePieceWithMerges {
        /// Number of merges.
        merges: usize,
        /// The pre-tokenizer.
        pre: PreTokenizer,
    },
    /// A byte-level BPE tokenizer without a pre-tokenizer.
    #[error("a byte-level BPE tokenizer needs a pre-tokenizer")]
    ByteLevelWithoutPreTokenizer,
    /// A byte token whose text is not `<0xNN>`.
    #[error("byte token {id} is not of the form <0xNN>")]
    BadByteToken {
        /// The token id.
        id: u32,
    },
}

/// Reusable buffers for encoding; behind a mutex so `encode` takes `&self`.
struct Scratch {
    cache: WordCache,
    merge: MergeScratch,
    spm: SpmScratch,
    fragments: Vec<Fragment>,
    spare: Vec<Fragment>,
}

impl Scratch {
    fn new(cache: WordCache) -> Self {
        Scratch {
            cache,
            merge: MergeScratch::default(),
            spm: SpmScratch::default(),
            fragments: Vec::new(),
            spare: Vec::new(),
        }
    }
}

/// What each token decodes to, where that differs from its stored text
/// (SentencePiece: `▁` is a space, `<0xNN>` is one byte). Flat, so a lookup
/// is two loads.
#[derive(Clone)]
struct Pieces {
    bytes: Vec<u8>,
    /// End of token `i`'s piece in `bytes`; it starts where `i - 1` ends.
    ends: Vec<u32>,
}

impl Pieces {
    fn sentencepiece(tokens: &[Vec<u8>], types: &[TokenType]) -> Pieces {
        let mut bytes = Vec::with_capacity(tokens.iter().map(Vec::len).sum());
        let mut ends = Vec::with_capacity(tokens.len());
        for (text, &ty) in tokens.iter().zip(types) {
            match ty {
                TokenType::Normal => {
                    let mut rest = &text[..];
                    while let Some(at) = find(rest, spm::SPACE_MARK.as_bytes()) {
                        bytes.extend_from_slice(&rest[..at]);
                        bytes.push(b' ');
                        rest = &rest[at + spm::SPACE_MARK.len()..];
                    }
                    bytes.extend_from_slice(rest);
                }
                TokenType::Byte => bytes.extend(spm::parse_byte_token(text)),
                _ => bytes.extend_from_slice(text),
            }
            ends.push(bytes.len() as u32);
        }
        Pieces { bytes, ends }
    }

    fn get(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.bytes[start..end])
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The model-specific part of encoding.
enum Engine {
    Bpe {
        merges: Merges,
        /// Llama 3's `ignore_merges`: pre-tokens that are tokens as they are.
        whole_words: Option<TextIndex>,
    },
    SentencePiece {
        index: TextIndex,
        pieces: Pieces,
    },
}

impl Engine {
    fn new(spec: &TokenizerSpec) -> Engine {
        match spec.model {
            TokenizerModel::ByteLevelBpe => Engine::Bpe {
                merges: Merges::new(&spec.merges),
                whole_words: spec.ignore_merges.then(|| TextIndex::new(&spec.tokens, |_| true)),
            },
            TokenizerModel::SentencePiece => Engine::SentencePiece {
                index: TextIndex::new(&spec.tokens, |_| true),
                pieces: Pieces::sentencepiece(&spec.tokens, &spec.token_types),
            },
        }
    }
}

/// A validated tokenizer. `Send + Sync`; encoding from several threads at
/// once is correct (a thread that finds the shared cache busy encodes
/// without it).
pub struct Tokenizer {
    spec: TokenizerSpec,
    /// The token of each single byte (`u32::MAX`: none): byte-level BPE
    /// starts every pre-token from these; SentencePiece spells a character
    /// that has no token with them (its `<0xNN>` tokens).
    byte_ids: [u32; 256],
    engine: Engine,
    /// Control, unknown and user-defined tokens, longest text first.
    specials: Vec<Special>,
    /// EOS and the end-of-turn tokens, ascending ([`end_of_generation`]).
    end_of_generation: Vec<u32>,
    scratch: Mutex<Scratch>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.spec.model)
            .field("pre", &self.spec.pre)
            .field("n_vocab", &self.spec.tokens.len())
            .field("n_merges", &self.spec.merges.len())
            .field("n_specials", &self.specials.len())
            .finish_non_exhaustive()
    }
}

impl Clone for Tokenizer {
    fn clone(&self) -> Self {
        // Validated already; only the caches are rebuilt.
        Tokenizer {
            spec: self.spec.clone(),
            byte_ids: self.byte_ids,
            engine: Engine::new(&self.spec),
            specials: self.specials.clone(),
            end_of_generation: self.end_of_generation.clone(),
            scratch: Mutex::new(Scratch::new(WordCache::new())),
        }
    }
}

fn is_special(ty: TokenType) -> bool {
    matches!(ty, TokenType::Control | TokenType::UserDefined)
}

impl Tokenizer {
    /// Validates `spec`: one type per token, ids that fit in u32, every merge
    /// in range with merged bytes equal to left bytes followed by right bytes,
    /// non-empty control and user-defined tokens, BOS/EOS/UNK/PAD ids in range
    /// and present when `add_bos` / `add_eos` need them.
    ///
    /// A byte without a single-byte token is allowed: real vocabularies lack
    /// some (SmolLM2 has none for 21 bytes, among them 0x04, 0x1d and 0xf5 to
    /// 0xff). Such a byte is dropped when it ends up alone after merging, as
    /// llama.cpp and Hugging Face `tokenizers` (without `unk`) both do; see
    /// [`Self::byte_token`].
    pub fn new(spec: TokenizerSpec) -> Result<Tokenizer, TokenizerError> {
        let n_vocab = spec.tokens.len();
        if spec.token_types.len() != n_vocab {
            return Err(TokenizerError::TypeCountMismatch { tokens: n_vocab, types: spec.token_types.len() });
        }
        if n_vocab > u32::MAX as usize {
            return Err(TokenizerError::TooManyTokens(n_vocab));
        }
        for (id, (bytes, &ty)) in spec.tokens.iter().zip(&spec.token_types).enumerate() {
            if bytes.is_empty() && is_special(ty) {
                let kind = if ty == TokenType::Control { "control" } else { "user-defined" };
                return Err(TokenizerError::EmptySpecialToken { id: id as u32, kind });
            }
        }
        let want_scores = if spec.model == TokenizerModel::SentencePiece { n_vocab } else { 0 };
        if spec.scores.len() != want_scores {
            return Err(TokenizerError::ScoreCountMismatch {
                model: spec.model,
                tokens: n_vocab,
                scores: spec.scores.len(),
                expected: want_scores,
            });
        }
        let mut byte_ids = [u32::MAX; 256];
        match spec.model {
            TokenizerModel::ByteLevelBpe => {
                if spec.pre == PreTokenizer::None {
                    return Err(TokenizerError::ByteLevelWithoutPreTokenizer);
                }
                // The last non-special token of each single byte, as
                // llama.cpp's text-to-id map (last id wins) would find it.
                for (id, (bytes, &ty)) in spec.tokens.iter().zip(&spec.token_types).enumerate() {
                    if let [b] = bytes[..] {
                        if !is_special(ty) {
                            byte_ids[usize::from(b)] = id as u32;
                        }
                    }
                }
            }
            TokenizerModel::SentencePiece => {
                if !spec.merges.is_empty() || spec.pre != PreTokenizer::None {
                    return Err(TokenizerError::SentencePieceWithMerges { merges: spec.merges.len(), pre: spec.pre });
                }
                // llama.cpp's `byte_to_token`: the `<0xNN>` token, else the
                // token whose text is that single byte.
                let mut single = [u32::MAX; 256];
                for (id, (bytes, &ty)) in spec.tokens.iter().zip(&spec.token_types).enumerate() {
                    if ty == TokenType::Byte {
                        let b = spm::parse_byte_token(bytes).ok_or(TokenizerError::BadByteToken { id: id as u32 })?;
                        byte_ids[usize::from(b)] = id as u32;
                    } else if let [b] = bytes[..] {
                        single[usize::from(b)] = id as u32;
                    }
                }
                for (id, single) in byte_ids.iter_mut().zip(single) {
                    if *id == u32::MAX {
                        *id = single;
                    }
                }
            }
        }
        for (rank, &[left, right, merged]) in spec.merges.iter().enumerate() {
            for id in [left, right, merged] {
                if id as usize >= n_vocab {
                    return Err(TokenizerError::MergeIdOutOfRange { rank, id, n_vocab });
                }
            }
            let (l, r, m) = (&spec.tokens[left as usize], &spec.tokens[right as usize], &spec.tokens[merged as usize]);
            if m.len() != l.len() + r.len() || !m.starts_with(l) || !m.ends_with(r) {
                return Err(TokenizerError::MergeMismatch { rank, left, right, merged });
            }
        }
        let roles = [("bos", spec.bos_id), ("eos", spec.eos_id), ("unk", spec.unk_id), ("pad", spec.pad_id)];
        for (role, id) in roles {
            if let Some(id) = id {
                if id as usize >= n_vocab {
                    return Err(TokenizerError::SpecialIdOutOfRange { role, id, n_vocab });
                }
            }
        }
        if spec.add_bos && spec.bos_id.is_none() {
            return Err(TokenizerError::MissingSpecialId { role: "bos" });
        }
        if spec.add_eos && spec.eos_id.is_none() {
            return Err(TokenizerError::MissingSpecialId { role: "eos" });
        }
        Ok(Tokenizer {
            byte_ids,
            engine: Engine::new(&spec),
            specials: special::collect(&spec.tokens, &spec.token_types),
            end_of_generation: end_of_generation::ids(&spec.tokens, spec.eos_id),
            scratch: Mutex::new(Scratch::new(WordCache::new())),
            spec,
        })
    }

    /// The spec this tokenizer was built from (what the model file stores).
    pub fn spec(&self) -> &TokenizerSpec {
        &self.spec
    }

    /// Tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.spec.tokens.len()
    }

    /// The beginning-of-sequence token, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.spec.bos_id
    }

    /// The end-of-sequence token, if the model has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.spec.eos_id
    }

    /// The tokens generation stops at, ascending: EOS and the chat models'
    /// end-of-turn tokens (`<end_of_turn>`, `<|eot_id|>`, `<|im_end|>`, ...),
    /// found by their text as llama.cpp finds its end-of-generation tokens.
    pub fn end_of_generation_ids(&self) -> &[u32] {
        &self.end_of_generation
    }

    /// Whether generation stops at `id` ([`Self::end_of_generation_ids`]).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.binary_search(&id).is_ok()
    }

    /// The bytes token `id` decodes to (a control token's literal text; for
    /// SentencePiece, `▁` read as a space and `<0xNN>` as its byte), or
    /// `None` when `id` is out of range.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        match &self.engine {
            Engine::SentencePiece { pieces, .. } => pieces.get(id),
            Engine::Bpe { .. } => self.spec.tokens.get(id as usize).map(Vec::as_slice),
        }
    }

    /// The token of `byte`: byte-level BPE's single-byte token, or
    /// SentencePiece's `<0xNN>` byte-fallback token; `None` if the
    /// vocabulary has none, in which case byte-level BPE drops that byte
    /// unless a merge absorbs it.
    pub fn byte_token(&self, byte: u8) -> Option<u32> {
        Some(self.byte_ids[usize::from(byte)]).filter(|&id| id != u32::MAX)
    }

    /// The role of token `id` (`None` out of range).
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.spec.token_types.get(id as usize).copied()
    }

    /// Tokens of `text`, without BOS/EOS. With `parse_special`, the literal
    /// text of control tokens (`<|im_start|>`) becomes those tokens;
    /// user-defined tokens are matched either way, as llama.cpp does.
    /// `decode(encode(text)) == text` unless `text` has a byte the vocabulary
    /// cannot spell (see [`Self::byte_token`]).
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_into(text, parse_special, &mut out);
        out
    }

    /// [`Self::encode`], appending to `out`. Allocates only while `out` or the
    /// internal buffers grow, so a warm tokenizer encoding into a reused
    /// buffer does not allocate.
    pub fn encode_into(&self, text: &str, parse_special: bool, out: &mut Vec<u32>) {
        let mut guard;
        let mut uncached;
        let scratch: &mut Scratch = match self.scratch.try_lock() {
            Ok(g) => {
                guard = g;
                &mut guard
            }
            Err(TryLockError::Poisoned(p)) => {
                guard = p.into_inner();
                &mut guard
            }
            Err(TryLockError::WouldBlock) => {
                uncached = Scratch::new(WordCache::disabled());
                &mut uncached
            }
        };
        let Scratch { cache, merge, spm, fragments, spare } = scratch;
        special::partition(text, &self.specials, parse_special, fragments, spare);
        match &self.engine {
            Engine::Bpe { merges, whole_words } => {
                for &fragment in fragments.iter() {
                    match fragment {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text { start, end } => {
                            pretok::split(self.spec.pre, &text[start..end], &mut |piece| {
                                let word = piece.as_bytes();
                                if let Some(id) = whole_words.as_ref().and_then(|w| w.get(&self.spec.tokens, word)) {
                                    out.push(id);
                                    return;
                                }
                                if cache.get(word, out) {
                                    return;
                                }
                                let first = out.len();
                                bpe::merge_word(word, &self.byte_ids, merges, merge, out);
                                cache.insert(word, &out[first..]);
                            });
                        }
                    }
                }
            }
            Engine::SentencePiece { index, .. } => {
                let vocab = SpmVocab {
                    tokens: &self.spec.tokens,
                    scores: &self.spec.scores,
                    index,
                    byte_ids: &self.byte_ids,
                    unk_id: self.spec.unk_id,
                };
                // llama.cpp: the space prefix goes before the first stretch
                // of text and before every stretch that follows a special
                // token.
                let mut after_special = true;
                for &fragment in fragments.iter() {
                    match fragment {
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                        Fragment::Text { start, end } => {
                            let prefix = self.spec.add_space_prefix && after_special;
                            vocab.encode(&text[start..end], prefix, spm, out);
                            after_special = false;
                        }
                    }
                }
            }
        }
    }

    /// Tokens of a prompt: BOS if the spec's `add_bos`, then
    /// [`Self::encode`], then EOS if `add_eos`.
    pub fn encode_prompt(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        self.encode_prompt_into(text, parse_special, &mut out);
        out
    }

    /// [`Self::encode_prompt`], appending to `out`.
    pub fn encode_prompt_into(&self, text: &str, parse_special: bool, out: &mut Vec<u32>) {
        if let (true, Some(bos)) = (self.spec.add_bos, self.spec.bos_id) {
            out.push(bos);
        }
        self.encode_into(text, parse_special, out);
        if let (true, Some(eos)) = (self.spec.add_eos, self.spec.eos_id) {
            out.push(eos);
        }
    }

    /// The text of `ids`: their pieces ([`Self::token_bytes`]) concatenated
    /// (control tokens as their literal text), invalid UTF-8 replaced by
    /// U+FFFD. With `add_space_prefix`, the space the encoder put in front is
    /// dropped from the first token, as llama.cpp's `detokenize` does.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let piece = self.bytes_or_err(id)?;
            let piece = match piece {
                [b' ', rest @ ..] if i == 0 && self.spec.add_space_prefix => rest,
                _ => piece,
            };
            bytes.extend_from_slice(piece);
        }
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    fn bytes_or_err(&self, id: u32) -> Result<&[u8], TokenizerError> {
        self.token_bytes(id).ok_or(TokenizerError::IdOutOfRange { id, n_vocab: self.n_vocab() })
    }
}

/// Decodes generated tokens one at a time into complete UTF-8 characters.
///
/// ```ignore
/// let mut dec = StreamDecoder::new();
/// let mut text = String::new();
/// for id in ids { dec.push(&tokenizer, id, &mut text)?; }
/// dec.finish(&mut text);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamDecoder {
    utf8: Utf8Stream,
}

impl StreamDecoder {
    /// A decoder with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends to `out` every character that token `id` completes; bytes of
    /// an unfinished character are held back. An out-of-range id is an error
    /// and changes nothing.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32, out: &mut String) -> Result<(), TokenizerError> {
        let bytes = tokenizer.bytes_or_err(id)?;
        self.utf8.push(bytes, out);
        Ok(())
    }

    /// Ends the stream: an unfinished character becomes U+FFFD.
    pub fn finish(&mut self, out: &mut String) {
        self.utf8.finish(out);
    }
}
