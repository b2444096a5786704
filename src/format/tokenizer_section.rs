//! The tokenizer section of the model file: [`TokenizerSpec`] to bytes and back
//! (docs/FORMAT.md, "Tokenizer section").

use crate::tokenizer::{PreTokenizer, TokenType, TokenizerModel, TokenizerSpec};

const FIXED_BYTES: usize = 48;
const FLAG_ADD_BOS: u32 = 1;
const FLAG_ADD_EOS: u32 = 2;
const FLAG_ADD_SPACE_PREFIX: u32 = 4;
const FLAG_IGNORE_MERGES: u32 = 8;
const KNOWN_FLAGS: u32 = FLAG_ADD_BOS | FLAG_ADD_EOS | FLAG_ADD_SPACE_PREFIX | FLAG_IGNORE_MERGES;

fn opt_id(id: Option<u32>) -> i32 {
    id.map_or(-1, |v| v as i32)
}

/// Serialises `spec`; fails if a count does not fit the format's u32 fields.
pub fn encode(spec: &TokenizerSpec) -> Result<Vec<u8>, String> {
    let n_tokens = u32::try_from(spec.tokens.len()).map_err(|_| "too many tokens")?;
    if spec.token_types.len() != spec.tokens.len() {
        return Err(format!("{} token types for {} tokens", spec.token_types.len(), spec.tokens.len()));
    }
    let n_merges = u32::try_from(spec.merges.len()).map_err(|_| "too many merges")?;
    let token_bytes_len: usize = spec.tokens.iter().map(Vec::len).sum();
    let token_bytes_len = u32::try_from(token_bytes_len).map_err(|_| "token bytes exceed 4 GiB")?;
    let template_len = u32::try_from(spec.chat_template.len()).map_err(|_| "chat template exceeds 4 GiB")?;
    // Scores are stored for SentencePiece only (one per token), so a
    // byte-level file is byte for byte what version-1 writers produced.
    let want_scores = if spec.model == TokenizerModel::SentencePiece { spec.tokens.len() } else { 0 };
    if spec.scores.len() != want_scores {
        return Err(format!("{} scores for {} tokens of a {:?} tokenizer", spec.scores.len(), want_scores, spec.model));
    }
    for id in [spec.bos_id, spec.eos_id, spec.unk_id, spec.pad_id].into_iter().flatten() {
        if id >= n_tokens || id > i32::MAX as u32 {
            return Err(format!("special id {id} out of range for {n_tokens} tokens"));
        }
    }

    let mut out = Vec::new();
    let mut put = |v: u32| out.extend_from_slice(&v.to_le_bytes());
    put(spec.model as u32);
    put(spec.pre as u32);
    put(n_tokens);
    put(n_merges);
    for id in [spec.bos_id, spec.eos_id, spec.unk_id, spec.pad_id] {
        put(opt_id(id) as u32);
    }
    put((u32::from(spec.add_bos) * FLAG_ADD_BOS)
        | (u32::from(spec.add_eos) * FLAG_ADD_EOS)
        | (u32::from(spec.add_space_prefix) * FLAG_ADD_SPACE_PREFIX)
        | (u32::from(spec.ignore_merges) * FLAG_IGNORE_MERGES));
    put(template_len);
    put(token_bytes_len);
    put(0);
    let mut end = 0u32;
    for t in &spec.tokens {
        end += t.len() as u32;
        out.extend_from_slice(&end.to_le_bytes());
    }
    out.extend(spec.token_types.iter().map(|&t| t as u8));
    out.resize(out.len().next_multiple_of(4), 0);
    for m in &spec.merges {
        for v in m {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    for s in &spec.scores {
        out.extend_from_slice(&s.to_le_bytes());
    }
    for t in &spec.tokens {
        out.extend_from_slice(t);
    }
    out.extend_from_slice(spec.chat_template.as_bytes());
    Ok(out)
}

/// A bounds-checked little-endian cursor; every read names what it was reading.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            format!("{what} needs {n} bytes at offset {} but the section has {}", self.pos, self.bytes.len())
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn array_len(n: u32, elem: usize, what: &str) -> Result<usize, String> {
        (n as usize).checked_mul(elem).ok_or_else(|| format!("{what}: size overflows"))
    }
}

fn decode_id(raw: u32, n_tokens: u32, what: &str) -> Result<Option<u32>, String> {
    match raw as i32 {
        -1 => Ok(None),
        id if id >= 0 && (id as u32) < n_tokens => Ok(Some(id as u32)),
        id => Err(format!("{what} id {id} is out of range for {n_tokens} tokens")),
    }
}

/// Parses and validates a tokenizer section.
pub fn decode(bytes: &[u8]) -> Result<TokenizerSpec, String> {
    let mut c = Cursor { bytes, pos: 0 };
    let model_raw = c.u32("model")?;
    let model = TokenizerModel::from_u32(model_raw).ok_or_else(|| format!("unknown tokenizer model {model_raw}"))?;
    let pre_raw = c.u32("pre-tokenizer")?;
    let pre = PreTokenizer::from_u32(pre_raw).ok_or_else(|| format!("unknown pre-tokenizer {pre_raw}"))?;
    let n_tokens = c.u32("n_tokens")?;
    let n_merges = c.u32("n_merges")?;
    let bos_id = decode_id(c.u32("bos")?, n_tokens, "bos")?;
    let eos_id = decode_id(c.u32("eos")?, n_tokens, "eos")?;
    let unk_id = decode_id(c.u32("unk")?, n_tokens, "unk")?;
    let pad_id = decode_id(c.u32("pad")?, n_tokens, "pad")?;
    let flags = c.u32("flags")?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(format!("unknown tokenizer flags {flags:#x}"));
    }
    let template_len = c.u32("chat template length")? as usize;
    let token_bytes_len = c.u32("token bytes length")?;
    c.u32("reserved")?;
    debug_assert_eq!(c.pos, FIXED_BYTES);

    let ends = c.take(Cursor::array_len(n_tokens, 4, "token offsets")?, "token offsets")?;
    let types = c.take(n_tokens as usize, "token types")?;
    let pad = types.len().next_multiple_of(4) - types.len();
    c.take(pad, "padding")?;
    let merges_raw = c.take(Cursor::array_len(n_merges, 12, "merges")?, "merges")?;
    let n_scores = if model == TokenizerModel::SentencePiece { n_tokens } else { 0 };
    let scores_raw = c.take(Cursor::array_len(n_scores, 4, "scores")?, "scores")?;
    let blob = c.take(token_bytes_len as usize, "token bytes")?;
    let template = c.take(template_len, "chat template")?;
    if c.pos != bytes.len() {
        return Err(format!("{} unexpected bytes after the chat template", bytes.len() - c.pos));
    }

    let mut tokens = Vec::with_capacity(n_tokens as usize);
    let mut start = 0usize;
    for (i, e) in ends.chunks_exact(4).enumerate() {
        let end = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) as usize;
        if end < start || end > blob.len() {
            return Err(format!("token {i} ends at {end}, outside [{start}, {}]", blob.len()));
        }
        tokens.push(blob[start..end].to_vec());
        start = end;
    }
    if start != blob.len() {
        return Err(format!("token bytes hold {} bytes but tokens use {start}", blob.len()));
    }
    let token_types = types
        .iter()
        .enumerate()
        .map(|(i, &t)| TokenType::from_u8(t).ok_or_else(|| format!("token {i} has unknown type {t}")))
        .collect::<Result<Vec<_>, _>>()?;
    let merges = merges_raw
        .chunks_exact(12)
        .enumerate()
        .map(|(rank, m)| {
            let v = |k: usize| u32::from_le_bytes([m[4 * k], m[4 * k + 1], m[4 * k + 2], m[4 * k + 3]]);
            let merge = [v(0), v(1), v(2)];
            if merge.iter().any(|&id| id >= n_tokens) {
                return Err(format!("merge {rank} {merge:?} has an id out of range for {n_tokens} tokens"));
            }
            Ok(merge)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let scores = scores_raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let chat_template = String::from_utf8(template.to_vec()).map_err(|_| "chat template is not UTF-8".to_string())?;
    Ok(TokenizerSpec {
        model,
        pre,
        tokens,
        token_types,
        merges,
        scores,
        bos_id,
        eos_id,
        unk_id,
        pad_id,
        add_bos: flags & FLAG_ADD_BOS != 0,
        add_eos: flags & FLAG_ADD_EOS != 0,
        add_space_prefix: flags & FLAG_ADD_SPACE_PREFIX != 0,
        ignore_merges: flags & FLAG_IGNORE_MERGES != 0,
        chat_template,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> TokenizerSpec {
        TokenizerSpec {
            model: TokenizerModel::ByteLevelBpe,
            pre: PreTokenizer::SmolLm,
            tokens: vec![b"a".to_vec(), b"b".to_vec(), b"ab".to_vec(), b"<|end|>".to_vec()],
            token_types: vec![TokenType::Normal, TokenType::Normal, TokenType::Normal, TokenType::Control],
            merges: vec![[0, 1, 2]],
            scores: Vec::new(),
            bos_id: None,
            eos_id: Some(3),
            unk_id: None,
            pad_id: Some(3),
            add_bos: false,
            add_eos: true,
            add_space_prefix: false,
            ignore_merges: false,
            chat_template: "{{ x }}".into(),
        }
    }

    fn sample_spm() -> TokenizerSpec {
        TokenizerSpec {
            model: TokenizerModel::SentencePiece,
            pre: PreTokenizer::None,
            tokens: vec![b"<s>".to_vec(), "▁a".as_bytes().to_vec(), b"<0x0A>".to_vec()],
            token_types: vec![TokenType::Control, TokenType::Normal, TokenType::Byte],
            merges: Vec::new(),
            scores: vec![0.0, -1.5, 0.0],
            bos_id: Some(0),
            eos_id: None,
            unk_id: None,
            pad_id: None,
            add_bos: true,
            add_eos: false,
            add_space_prefix: true,
            ignore_merges: false,
            chat_template: String::new(),
        }
    }

    #[test]
    fn round_trips() {
        for spec in [sample(), sample_spm()] {
            assert_eq!(decode(&encode(&spec).unwrap()).unwrap(), spec);
        }
        let mut llama3 = sample();
        llama3.pre = PreTokenizer::Llama3;
        llama3.ignore_merges = true;
        assert_eq!(decode(&encode(&llama3).unwrap()).unwrap(), llama3);
    }

    /// A byte-level section as the first writers laid it out (no scores, no
    /// new flags), written by hand: files from before SentencePiece still load.
    #[test]
    fn version_one_layout_still_loads() {
        let mut bytes = Vec::new();
        for v in [1u32, 2, 4, 1, u32::MAX, 3, u32::MAX, 3, 2, 7, 11, 0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        for end in [1u32, 2, 4, 11] {
            bytes.extend_from_slice(&end.to_le_bytes());
        }
        bytes.extend_from_slice(&[1, 1, 1, 3]);
        for v in [0u32, 1, 2] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(b"abab<|end|>{{ x }}");
        assert_eq!(decode(&bytes).unwrap(), sample());
        assert_eq!(encode(&sample()).unwrap(), bytes);
    }

    #[test]
    fn every_truncation_is_an_error() {
        for spec in [sample(), sample_spm()] {
            let bytes = encode(&spec).unwrap();
            for len in 0..bytes.len() {
                assert!(decode(&bytes[..len]).is_err(), "truncated at {len}");
            }
        }
    }

    #[test]
    fn scores_must_match_the_model() {
        let mut spec = sample_spm();
        spec.scores.pop();
        assert!(encode(&spec).unwrap_err().contains("scores"));
        let mut spec = sample();
        spec.scores = vec![0.0; 4];
        assert!(encode(&spec).unwrap_err().contains("scores"));
    }

    #[test]
    fn out_of_range_ids_are_refused() {
        let mut bytes = encode(&sample()).unwrap();
        bytes[20..24].copy_from_slice(&7u32.to_le_bytes()); // eos = 7 of 4 tokens
        assert!(decode(&bytes).unwrap_err().contains("eos id 7"));
        let mut spec = sample();
        spec.merges[0][2] = 9;
        assert!(decode(&encode(&spec).unwrap()).unwrap_err().contains("merge 0"));
    }
}
