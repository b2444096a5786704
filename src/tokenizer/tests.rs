//! Tokenizer tests on a small vocabulary trained here, so they need no model
//! file. The exact-match tests against llama.cpp on the real SmolLM2
//! vocabulary live in `tools/tests/tokenizer_fixtures.rs`.

use std::collections::HashMap;

use super::*;

const CORPUS: &str = "The quick brown fox jumps over the lazy dog. Don't panic: the answer is 42, \
    isn't it? I'll say it's 3.14159 and they've said 1,000,000.\n\n    fn main() { println!(\"hello\"); }\n\
    Café au lait, naïve résumé. 日本語のテキスト。 Emoji 😀👍🏽 and ZWJ 👨‍👩‍👧.\r\n\tTabs\tand  spaces   here.";

/// Trains `n_merges` BPE merges on `corpus` (most frequent pair first, ties
/// to the smaller ids) over the 256 byte tokens, then appends two control
/// tokens and one user-defined token.
fn train(pre: PreTokenizer, corpus: &str, n_merges: usize) -> TokenizerSpec {
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut merges = Vec::new();
    let mut words: Vec<Vec<u32>> = Vec::new();
    pretok::split(pre, corpus, &mut |p| words.push(p.bytes().map(u32::from).collect()));
    for _ in 0..n_merges {
        let mut counts: HashMap<(u32, u32), usize> = HashMap::new();
        for w in &words {
            for pair in w.windows(2) {
                *counts.entry((pair[0], pair[1])).or_default() += 1;
            }
        }
        let Some((&(l, r), _)) = counts.iter().max_by_key(|&(&(l, r), &n)| (n, std::cmp::Reverse((l, r)))) else {
            break;
        };
        let merged = tokens.len() as u32;
        tokens.push([tokens[l as usize].clone(), tokens[r as usize].clone()].concat());
        merges.push([l, r, merged]);
        for w in &mut words {
            let mut i = 0;
            while i + 1 < w.len() {
                if w[i] == l && w[i + 1] == r {
                    w[i] = merged;
                    w.remove(i + 1);
                }
                i += 1;
            }
        }
    }
    let mut token_types = vec![TokenType::Normal; tokens.len()];
    for (text, ty) in
        [("<|im_start|>", TokenType::Control), ("<|im_end|>", TokenType::Control), ("<tool>", TokenType::UserDefined)]
    {
        tokens.push(text.as_bytes().to_vec());
        token_types.push(ty);
    }
    let n = tokens.len() as u32;
    TokenizerSpec {
        model: TokenizerModel::ByteLevelBpe,
        pre,
        tokens,
        token_types,
        merges,
        scores: Vec::new(),
        bos_id: Some(n - 3),
        eos_id: Some(n - 2),
        unk_id: None,
        pad_id: None,
        add_bos: false,
        add_eos: false,
        add_space_prefix: false,
        ignore_merges: false,
        chat_template: String::new(),
    }
}

fn tokenizer(pre: PreTokenizer) -> Tokenizer {
    Tokenizer::new(train(pre, CORPUS, 300)).unwrap()
}

/// The spec of BPE: repeatedly merge the lowest-rank adjacent pair, leftmost
/// first. Quadratic, obviously right.
fn naive_bpe(word: &[u8], spec: &TokenizerSpec) -> Vec<u32> {
    let mut ranks: HashMap<(u32, u32), (usize, u32)> = HashMap::new();
    for (rank, &[l, r, m]) in spec.merges.iter().enumerate() {
        ranks.entry((l, r)).or_insert((rank, m));
    }
    let mut syms: Vec<u32> = word.iter().map(|&b| u32::from(b)).collect();
    loop {
        let best = (0..syms.len().saturating_sub(1))
            .filter_map(|i| ranks.get(&(syms[i], syms[i + 1])).map(|&(rank, m)| (rank, i, m)))
            .min();
        let Some((_, i, m)) = best else { return syms };
        syms[i] = m;
        syms.remove(i + 1);
    }
}

/// xorshift64*: enough randomness for property tests, no extra crate.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn merges(tok: &Tokenizer) -> &bpe::Merges {
    match &tok.engine {
        Engine::Bpe { merges, .. } => merges,
        Engine::SentencePiece { .. } => panic!("not a byte-level BPE tokenizer"),
    }
}

#[test]
fn bpe_matches_naive_reference() {
    let tok = tokenizer(PreTokenizer::Gpt2);
    let mut rng = Rng(7);
    let alphabet = b"the quick brown fox eh ".as_slice();
    let mut scratch = bpe::MergeScratch::default();
    for _ in 0..2000 {
        let len = rng.below(20);
        let word: Vec<u8> = (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect();
        let mut got = Vec::new();
        bpe::merge_word(&word, &tok.byte_ids, merges(&tok), &mut scratch, &mut got);
        assert_eq!(got, naive_bpe(&word, &tok.spec), "{:?}", String::from_utf8_lossy(&word));
    }
}

#[test]
fn merges_apply() {
    let tok = tokenizer(PreTokenizer::Gpt2);
    let ids = tok.encode("the quick brown fox", false);
    assert!(ids.len() < "the quick brown fox".len() / 2, "{ids:?}");
    assert_eq!(tok.decode(&ids).unwrap(), "the quick brown fox");
    assert_eq!(tok.encode("", true), Vec::<u32>::new());
}

#[test]
fn cached_and_uncached_encodings_agree() {
    let tok = tokenizer(PreTokenizer::SmolLm);
    let first = tok.encode(CORPUS, false);
    let second = tok.encode(CORPUS, false);
    assert_eq!(first, second);
    let mut uncached = Vec::new();
    let mut scratch = bpe::MergeScratch::default();
    pretok::split(PreTokenizer::SmolLm, CORPUS, &mut |p| {
        bpe::merge_word(p.as_bytes(), &tok.byte_ids, merges(&tok), &mut scratch, &mut uncached)
    });
    assert_eq!(first, uncached);
}

#[test]
fn special_tokens() {
    let tok = tokenizer(PreTokenizer::SmolLm);
    let n = tok.n_vocab() as u32;
    let (start, end, tool) = (n - 3, n - 2, n - 1);
    let text = "<|im_start|>user\nhi<tool><|im_end|>";
    let parsed = tok.encode(text, true);
    assert_eq!(parsed[0], start);
    assert_eq!(&parsed[parsed.len() - 2..], [tool, end]);
    let plain = tok.encode(text, false);
    assert!(!plain.contains(&start) && !plain.contains(&end));
    // User-defined tokens are matched even without parse_special (llama.cpp).
    assert!(plain.contains(&tool));
    for ids in [parsed, plain] {
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
}

#[test]
fn prompt_adds_bos_and_eos_per_spec() {
    let mut spec = train(PreTokenizer::Gpt2, CORPUS, 50);
    let (bos, eos) = (spec.bos_id.unwrap(), spec.eos_id.unwrap());
    let plain = Tokenizer::new(spec.clone()).unwrap();
    assert_eq!(plain.encode_prompt("hi", true), plain.encode("hi", true));
    spec.add_bos = true;
    spec.add_eos = true;
    let tok = Tokenizer::new(spec).unwrap();
    let ids = tok.encode_prompt("hi", true);
    assert_eq!((ids[0], ids[ids.len() - 1]), (bos, eos));
    assert_eq!(&ids[1..ids.len() - 1], tok.encode("hi", true));
}

#[test]
fn validation_rejects_bad_specs() {
    let good = train(PreTokenizer::Gpt2, CORPUS, 20);
    let n = good.tokens.len();
    let check = |edit: &dyn Fn(&mut TokenizerSpec), want: TokenizerError| {
        let mut spec = good.clone();
        edit(&mut spec);
        assert_eq!(Tokenizer::new(spec).unwrap_err(), want);
    };
    check(
        &|s| {
            s.token_types.pop();
        },
        TokenizerError::TypeCountMismatch { tokens: n, types: n - 1 },
    );
    check(&|s| s.tokens[n - 3].clear(), TokenizerError::EmptySpecialToken { id: n as u32 - 3, kind: "control" });
    check(&|s| s.merges[3][1] = n as u32, TokenizerError::MergeIdOutOfRange { rank: 3, id: n as u32, n_vocab: n });
    let [l, r, m] = good.merges[2];
    check(&|s| s.merges[2] = [r, l, m], TokenizerError::MergeMismatch { rank: 2, left: r, right: l, merged: m });
    check(
        &|s| s.pad_id = Some(n as u32 + 5),
        TokenizerError::SpecialIdOutOfRange { role: "pad", id: n as u32 + 5, n_vocab: n },
    );
    check(
        &|s| {
            s.add_eos = true;
            s.eos_id = None
        },
        TokenizerError::MissingSpecialId { role: "eos" },
    );
}

#[test]
fn bytes_without_a_token_are_dropped() {
    let mut spec = train(PreTokenizer::Gpt2, CORPUS, 20);
    // Byte 0x04 (in no merge) loses its token, as in SmolLM2's vocabulary.
    spec.tokens[4] = b"A".to_vec();
    let tok = Tokenizer::new(spec).unwrap();
    assert_eq!(tok.byte_token(4), None);
    assert_eq!(tok.byte_token(b'A'), Some(u32::from(b'A')));
    let ids = tok.encode("x\u{4}y \u{4}", false);
    assert_eq!(tok.decode(&ids).unwrap(), "xy ");
}

#[test]
fn decode_errors_and_replacement() {
    let tok = tokenizer(PreTokenizer::Gpt2);
    let n = tok.n_vocab() as u32;
    assert_eq!(tok.decode(&[n]), Err(TokenizerError::IdOutOfRange { id: n, n_vocab: n as usize }));
    assert_eq!(
        tok.decode(&[u32::MAX]).unwrap_err(),
        TokenizerError::IdOutOfRange { id: u32::MAX, n_vocab: n as usize }
    );
    assert!(tok.token_bytes(n).is_none());
    // Byte tokens 0xff and a lone continuation byte are not UTF-8.
    assert_eq!(tok.decode(&[u32::from(b'a'), 0xff, 0x80, u32::from(b'b')]).unwrap(), "a\u{fffd}\u{fffd}b");
}

#[test]
fn stream_decoder_holds_back_split_emoji() {
    let tok = tokenizer(PreTokenizer::Gpt2);
    // Byte tokens: the emoji's four bytes arrive as four tokens.
    let ids: Vec<u32> = "a😀".bytes().map(u32::from).collect();
    let mut dec = StreamDecoder::new();
    let mut out = String::new();
    let mut seen = Vec::new();
    for &id in &ids {
        dec.push(&tok, id, &mut out).unwrap();
        seen.push(out.clone());
    }
    assert_eq!(seen, ["a", "a", "a", "a", "a😀"]);
    assert!(dec.push(&tok, tok.n_vocab() as u32, &mut out).is_err());
    // A truncated character is flushed as U+FFFD.
    dec.push(&tok, 0xf0, &mut out).unwrap();
    dec.finish(&mut out);
    assert_eq!(out, "a😀\u{fffd}");
}

/// Random text from pieces that stress the pre-tokenizer and UTF-8 handling.
fn random_text(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "a",
        "The",
        " ",
        "  ",
        "\n",
        "\r\n",
        "\t",
        "'s",
        "'",
        "'LL",
        "1",
        "23",
        ".",
        ",",
        "é",
        "e\u{301}",
        "中文",
        "😀",
        "👨‍👩‍👧",
        "\u{a0}",
        "\u{3000}",
        "٣",
        "שלום",
        "مرحبا",
        "<|im_start|>",
        "<|im_end",
        "<tool>",
        "\u{0}",
        "\u{ffff}",
        "\u{10ffff}",
        "!!",
        "fn",
        "quick",
    ];
    let n = rng.below(24);
    (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect()
}

#[test]
fn random_text_round_trips() {
    for pre in [
        PreTokenizer::Gpt2,
        PreTokenizer::SmolLm,
        PreTokenizer::Llama3,
        PreTokenizer::Qwen2,
        PreTokenizer::DeepSeekLlm,
        PreTokenizer::DeepSeekCoder,
        PreTokenizer::Falcon,
    ] {
        let tok = tokenizer(pre);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let text = random_text(&mut rng);
            for parse_special in [false, true] {
                let ids = tok.encode(&text, parse_special);
                assert_eq!(tok.decode(&ids).unwrap(), text, "{text:?}");
            }
        }
    }
}

#[test]
fn random_bytes_round_trip() {
    let tok = tokenizer(PreTokenizer::SmolLm);
    let mut rng = Rng(12345);
    for _ in 0..3000 {
        let len = rng.below(64);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let text = String::from_utf8_lossy(&bytes);
        let ids = tok.encode(&text, true);
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
}

#[test]
fn random_ids_never_panic_and_stream_equals_decode() {
    let tok = tokenizer(PreTokenizer::Gpt2);
    let n = tok.n_vocab();
    let mut rng = Rng(99);
    for _ in 0..3000 {
        let len = rng.below(16);
        // Mostly valid ids, some just past the end, some huge.
        let ids: Vec<u32> = (0..len)
            .map(|_| match rng.below(10) {
                0 => (n + rng.below(3)) as u32,
                1 => u32::MAX - rng.below(2) as u32,
                _ => rng.below(n) as u32,
            })
            .collect();
        let whole = tok.decode(&ids);
        let mut dec = StreamDecoder::new();
        let mut out = String::new();
        let mut failed = false;
        for &id in &ids {
            failed |= dec.push(&tok, id, &mut out).is_err();
        }
        dec.finish(&mut out);
        assert_eq!(whole.is_err(), failed);
        if let Ok(whole) = whole {
            assert_eq!(out, whole);
        }
    }
}
