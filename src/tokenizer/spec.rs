//! The tokenizer as the model file stores it: plain data, no behaviour.
//!
//! The converter fills a [`TokenizerSpec`] from GGUF metadata or a Hugging Face
//! `tokenizer.json`; the format writer serialises it; the loader reads it back
//! and hands it to [`super::Tokenizer`].

/// How a pre-token's text becomes tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum TokenizerModel {
    /// Byte-level BPE (GPT-2, Llama 3, Qwen2, ...; GGUF `tokenizer.ggml.model
    /// = "gpt2"`): ranked merges over the bytes of each pre-token.
    ByteLevelBpe = 1,
    /// SentencePiece BPE as GGUF stores it (Llama 2, Mistral, Gemma, Phi-3;
    /// `tokenizer.ggml.model = "llama"`): spaces become `▁`, the adjacent pair
    /// whose concatenation is the highest-scoring token merges first, and a
    /// character with no token falls back to `<0xNN>` byte tokens.
    SentencePiece = 2,
}

impl TokenizerModel {
    /// The model of a stored code (`None` for an unknown one).
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::ByteLevelBpe),
            2 => Some(Self::SentencePiece),
            _ => None,
        }
    }
}

/// How text is cut into pre-tokens before byte-level BPE merges run. The
/// names follow llama.cpp's `tokenizer.ggml.pre` values; each variant lists
/// the GGUF names that share its rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum PreTokenizer {
    /// No pre-tokenizer: every stretch of text between special tokens is one
    /// piece (SentencePiece).
    None = 0,
    /// The GPT-2 regex (`'s|'t|... | ?\p{L}+| ?\p{N}+|...`): `gpt-2`, `mpt`.
    Gpt2 = 1,
    /// Every digit is its own pre-token, then the GPT-2 regex: `smollm`,
    /// `starcoder`, `refact`, `command-r`.
    SmolLm = 2,
    /// Llama 3 (`llama-bpe`): case-insensitive contractions, a letter run with
    /// one leading non-letter, digits in groups of up to three, newlines
    /// kept with the whitespace before them.
    Llama3 = 3,
    /// Qwen2 (`qwen2`): the Llama 3 rules with every digit alone.
    Qwen2 = 4,
    /// DeepSeek LLM (`deepseek-llm`): newlines, then explicit letter and
    /// punctuation ranges, trailing whitespace, CJK runs and digit runs, each
    /// split off in turn.
    DeepSeekLlm = 5,
    /// DeepSeek Coder (`deepseek-coder`): newlines, `\s?\p{L}+`, `\s?\p{P}+`,
    /// CJK runs and single digits, each split off in turn.
    DeepSeekCoder = 6,
    /// Falcon (`falcon`): punctuation runs, then the GPT-2 regex, then groups
    /// of three ASCII digits.
    Falcon = 7,
}

impl PreTokenizer {
    /// The pre-tokenizer of a stored code (`None` for an unknown one).
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::None),
            1 => Some(Self::Gpt2),
            2 => Some(Self::SmolLm),
            3 => Some(Self::Llama3),
            4 => Some(Self::Qwen2),
            5 => Some(Self::DeepSeekLlm),
            6 => Some(Self::DeepSeekCoder),
            7 => Some(Self::Falcon),
            _ => None,
        }
    }

    /// Its name in GGUF's `tokenizer.ggml.pre`, for people reading `info`.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gpt2 => "gpt-2",
            Self::SmolLm => "smollm",
            Self::Llama3 => "llama-bpe",
            Self::Qwen2 => "qwen2",
            Self::DeepSeekLlm => "deepseek-llm",
            Self::DeepSeekCoder => "deepseek-coder",
            Self::Falcon => "falcon",
        }
    }
}

/// The role of a token, with GGUF's numbering (`tokenizer.ggml.token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TokenType {
    /// An ordinary piece of text.
    Normal = 1,
    /// The unknown-token placeholder.
    Unknown = 2,
    /// Special tokens such as `<|im_start|>`: matched as whole strings in
    /// input text when the caller allows special tokens.
    Control = 3,
    /// Added to the vocabulary by the model's authors; matched whole, as text.
    UserDefined = 4,
    /// Never produced.
    Unused = 5,
    /// SentencePiece's byte fallback (`<0xNN>`).
    Byte = 6,
}

impl TokenType {
    /// The type of a stored code (`None` for an unknown one).
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Normal),
            2 => Some(Self::Unknown),
            3 => Some(Self::Control),
            4 => Some(Self::UserDefined),
            5 => Some(Self::Unused),
            6 => Some(Self::Byte),
            _ => None,
        }
    }
}

/// Everything needed to encode and decode text for one model.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenizerSpec {
    /// Byte-level BPE or SentencePiece.
    pub model: TokenizerModel,
    /// [`PreTokenizer::None`] for SentencePiece.
    pub pre: PreTokenizer,
    /// Byte-level BPE: the raw bytes of every token, indexed by id. Its
    /// vocabularies store tokens in GPT-2's printable byte-to-unicode form
    /// ("Ġthe"); the converter maps them back to the bytes they stand for
    /// (" the"). SentencePiece: the token's text as the vocabulary has it
    /// ("▁the", "<0x0A>"), since encoding matches that text. Control tokens
    /// hold their literal text ("<|im_start|>") in both.
    pub tokens: Vec<Vec<u8>>,
    /// One per token.
    pub token_types: Vec<TokenType>,
    /// Byte-level BPE merges by rank (index 0 merges first): the pair of
    /// token ids that merge, and the id of the merged token (whose bytes are
    /// the two concatenated). Empty for SentencePiece.
    pub merges: Vec<[u32; 3]>,
    /// SentencePiece: one score per token; of the adjacent pairs whose
    /// concatenation is a token, the highest-scoring merges first. Empty for
    /// byte-level BPE.
    pub scores: Vec<f32>,
    /// Beginning of sequence.
    pub bos_id: Option<u32>,
    /// End of sequence.
    pub eos_id: Option<u32>,
    /// Unknown token.
    pub unk_id: Option<u32>,
    /// Padding token.
    pub pad_id: Option<u32>,
    /// Whether encoding a prompt starts with BOS / ends with EOS.
    pub add_bos: bool,
    /// See `add_bos`.
    pub add_eos: bool,
    /// SentencePiece: a space is put before text that starts the input or
    /// follows a special token (`tokenizer.ggml.add_space_prefix`), and
    /// [`super::Tokenizer::decode`] drops it again.
    pub add_space_prefix: bool,
    /// Byte-level BPE: a pre-token that is itself a token is that token,
    /// whatever the merges would make of it (Llama 3; Hugging Face's
    /// `ignore_merges`).
    pub ignore_merges: bool,
    /// The model's Jinja chat template, verbatim (may be empty).
    pub chat_template: String,
}
