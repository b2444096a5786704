//! SentencePiece tests on a small hand-made vocabulary. The exact-match tests
//! against llama.cpp's Llama 2 and Phi-3 vocabularies live in
//! `tools/tests/llamacpp_vocab.rs`.

use super::tests::Rng;
use super::*;

/// `<unk>`, `<s>`, `</s>`, the 256 `<0xNN>` byte tokens, then pieces with
/// scores (higher merges first), then a user-defined token.
fn spec() -> TokenizerSpec {
    let mut tokens: Vec<Vec<u8>> = vec![b"<unk>".to_vec(), b"<s>".to_vec(), b"</s>".to_vec()];
    let mut token_types = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
    let mut scores = vec![0.0, 0.0, 0.0];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>").into_bytes());
        token_types.push(TokenType::Byte);
        scores.push(0.0);
    }
    let pieces = [
        ("▁", -1.0),
        ("a", -2.0),
        ("b", -2.0),
        ("c", -2.5),
        ("é", -3.0),
        ("▁a", -1.5),
        ("▁b", -1.6),
        ("ab", -1.2),
        ("bc", -1.2),
        ("abc", -0.5),
        ("▁ab", -0.8),
        ("▁▁", -4.0),
        ("ca", -1.2),
    ];
    for (text, score) in pieces {
        tokens.push(text.as_bytes().to_vec());
        token_types.push(TokenType::Normal);
        scores.push(score);
    }
    tokens.push(b"<tool>".to_vec());
    token_types.push(TokenType::UserDefined);
    scores.push(0.0);
    TokenizerSpec {
        model: TokenizerModel::SentencePiece,
        pre: PreTokenizer::None,
        tokens,
        token_types,
        merges: Vec::new(),
        scores,
        bos_id: Some(1),
        eos_id: Some(2),
        unk_id: Some(0),
        pad_id: None,
        add_bos: true,
        add_eos: false,
        add_space_prefix: true,
        ignore_merges: false,
        chat_template: String::new(),
    }
}

fn id_of(spec: &TokenizerSpec, text: &str) -> u32 {
    spec.tokens.iter().position(|t| t == text.as_bytes()).unwrap() as u32
}

/// The spec of SentencePiece BPE, written the slow, obvious way: merge the
/// highest-scoring adjacent pair whose concatenation is a token (leftmost on
/// ties) until none is left, then spell non-tokens with byte tokens.
/// Characters are used as symbols: the vocabulary has no token text twice.
fn naive(spec: &TokenizerSpec, text: &str, prefix: bool) -> Vec<u32> {
    // llama.cpp gives empty input no fragment at all, so no prefix either.
    if text.is_empty() {
        return Vec::new();
    }
    let escaped = format!("{}{}", if prefix { " " } else { "" }, text).replace(' ', "▁");
    let lookup = |s: &str| spec.tokens.iter().rposition(|t| t == s.as_bytes());
    let mut syms: Vec<String> = escaped.chars().map(String::from).collect();
    loop {
        let mut best: Option<(f32, usize)> = None;
        for i in 0..syms.len().saturating_sub(1) {
            if let Some(id) = lookup(&format!("{}{}", syms[i], syms[i + 1])) {
                let score = spec.scores[id];
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, i));
                }
            }
        }
        let Some((_, i)) = best else { break };
        let right = syms.remove(i + 1);
        syms[i].push_str(&right);
    }
    let mut out = Vec::new();
    for s in syms {
        match lookup(&s) {
            Some(id) => out.push(id as u32),
            None => out.extend(s.bytes().map(|b| 3 + u32::from(b))),
        }
    }
    out
}

#[test]
fn merges_by_score_and_spells_unknown_characters_with_bytes() {
    let spec = spec();
    let tok = Tokenizer::new(spec.clone()).unwrap();
    let t = |s| id_of(&spec, s);
    // "▁abc": "abc" (-0.5) needs "ab" (-1.2) or "bc" (-1.2) first; "▁a"
    // (-1.5) loses to both. The tie between "ab" and "bc" goes left.
    assert_eq!(tok.encode("abc", false), [t("▁"), t("abc")]);
    assert_eq!(tok.encode("ab b", false), [t("▁ab"), t("▁b")]);
    // 'z' has no token: its byte token, 0x7a.
    assert_eq!(tok.encode("za", false), [t("▁"), 3 + 0x7a, t("a")]);
    // A three-byte character becomes three byte tokens.
    assert_eq!(tok.encode("中", false), [t("▁"), 3 + 0xe4, 3 + 0xb8, 3 + 0xad]);
    assert_eq!(tok.encode("", false), Vec::<u32>::new());
    assert_eq!(tok.byte_token(b'z'), Some(3 + 0x7a));
}

#[test]
fn space_prefix_starts_the_text_and_follows_special_tokens() {
    let spec = spec();
    let tok = Tokenizer::new(spec.clone()).unwrap();
    let t = |s| id_of(&spec, s);
    assert_eq!(tok.encode_prompt("a", false), [1, t("▁a")]);
    // After a control token (parsed) and a user-defined one (always), the
    // text gets its own prefix, as in llama.cpp.
    assert_eq!(tok.encode("<s>a", true), [1, t("▁a")]);
    assert_eq!(tok.encode("a<tool>b", false), [t("▁a"), t("<tool>"), t("▁b")]);
    // Unparsed, "<s>" is plain text.
    assert_eq!(tok.encode("<s>", false)[0], t("▁"));
    let mut plain = spec.clone();
    plain.add_space_prefix = false;
    let tok = Tokenizer::new(plain).unwrap();
    assert_eq!(tok.encode("a b", false), [t("a"), t("▁b")]);
}

#[test]
fn decode_reads_marks_and_bytes_and_drops_the_prefix() {
    let spec = spec();
    let tok = Tokenizer::new(spec.clone()).unwrap();
    let t = |s| id_of(&spec, s);
    assert_eq!(tok.token_bytes(t("▁ab")), Some(&b" ab"[..]));
    assert_eq!(tok.token_bytes(3 + 0x0a), Some(&b"\n"[..]));
    assert_eq!(tok.token_bytes(1), Some(&b"<s>"[..]));
    assert_eq!(tok.decode(&[t("▁ab"), t("▁b")]).unwrap(), "ab b");
    // BOS first: its text is kept, the space after it is not the first byte.
    assert_eq!(tok.decode(&[1, t("▁a")]).unwrap(), "<s> a");
    let mut out = String::new();
    let mut dec = StreamDecoder::new();
    for id in [t("▁a"), 3 + 0xe4, 3 + 0xb8, 3 + 0xad] {
        dec.push(&tok, id, &mut out).unwrap();
    }
    dec.finish(&mut out);
    assert_eq!(out, " a中");
}

#[test]
fn random_text_matches_the_naive_reference_and_round_trips() {
    let spec = spec();
    let tok = Tokenizer::new(spec.clone()).unwrap();
    let alphabet = ["a", "b", "c", " ", "  ", "é", "z", "中", "ab", "▁"];
    let mut rng = Rng(0x5eed);
    for _ in 0..3000 {
        let n = rng.below(12);
        let text: String = (0..n).map(|_| alphabet[rng.below(alphabet.len())]).collect();
        let ids = tok.encode(&text, false);
        assert_eq!(ids, naive(&spec, &text, true), "{text:?}");
        // A literal '▁' in the input reads as a space, as in llama.cpp.
        assert_eq!(tok.decode(&ids).unwrap(), text.replace('▁', " "), "{text:?}");
    }
}

#[test]
fn validation_rejects_inconsistent_sentencepiece_specs() {
    let good = spec();
    let mut s = good.clone();
    s.scores.pop();
    assert!(matches!(Tokenizer::new(s), Err(TokenizerError::ScoreCountMismatch { .. })));
    let mut s = good.clone();
    s.merges.push([3, 4, 5]);
    assert!(matches!(Tokenizer::new(s), Err(TokenizerError::SentencePieceWithMerges { .. })));
    let mut s = good.clone();
    s.tokens[10] = b"<0xZZ>".to_vec();
    assert_eq!(Tokenizer::new(s).unwrap_err(), TokenizerError::BadByteToken { id: 10 });
}

/// A Gemma-like vocabulary: EOS `</s>` plus control tokens `<start_of_turn>`
/// and `<end_of_turn>`. A chat turn ends at `<end_of_turn>`, which is not EOS,
/// so generation must stop there too; `<start_of_turn>` is not an end.
#[test]
fn gemma_end_of_turn_ends_generation() {
    let mut spec = spec();
    let start_of_turn = spec.tokens.len() as u32;
    for text in ["<start_of_turn>", "<end_of_turn>"] {
        spec.tokens.push(text.as_bytes().to_vec());
        spec.token_types.push(TokenType::Control);
        spec.scores.push(0.0);
    }
    let end_of_turn = start_of_turn + 1;
    let tok = Tokenizer::new(spec).unwrap();
    assert_eq!(tok.eos_id(), Some(2));
    assert_eq!(tok.end_of_generation_ids(), [2, end_of_turn]);
    assert!(tok.is_end_of_generation(end_of_turn) && tok.is_end_of_generation(2));
    assert!(!tok.is_end_of_generation(start_of_turn) && !tok.is_end_of_generation(1));
    // The id a chat prompt spells the turn end with is the one that stops.
    assert_eq!(tok.encode("<end_of_turn>", true), [end_of_turn]);
}
