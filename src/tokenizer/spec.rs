//! The tokenizer as the model file stores it: plain data, no behaviour.
//!
//! The converter fills a [`TokenizerSpec`] from GGUF metadata or a Hugging Face
//! `tokenizer.json`; the format writer serialises it; the loader reads it back
//! and hands it to [`super::Tokenizer`].

/// How text is cut into pre-tokens before byte-level BPE merges run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum PreTokenizer {
    /// The GPT-2 regex (`'s|'t|... | ?\p{L}+| ?\p{N}+|...`).
    Gpt2 = 1,
    /// SmolLM2 (GGUF `tokenizer.ggml.pre = "smollm"`): every digit is its own
    /// pre-token, then the GPT-2 regex.
    SmolLm = 2,
}

impl PreTokenizer {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Gpt2),
            2 => Some(Self::SmolLm),
            _ => None,
        }
    }

    /// Its name in GGUF's `tokenizer.ggml.pre`, for people reading `info`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gpt2 => "gpt-2",
            Self::SmolLm => "smollm",
        }
    }
}

/// The role of a token, with GGUF's numbering (`tokenizer.ggml.token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TokenType {
    Normal = 1,
    Unknown = 2,
    /// Special tokens such as `<|im_start|>`: matched as whole strings in
    /// input text when the caller allows special tokens.
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl TokenType {
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
    pub pre: PreTokenizer,
    /// Raw bytes of every token, indexed by id. Byte-level BPE vocabularies
    /// store tokens in GPT-2's printable byte-to-unicode form ("Ġthe"); the
    /// converter maps them back to the bytes they stand for (" the").
    /// Control tokens hold their literal text ("<|im_start|>").
    pub tokens: Vec<Vec<u8>>,
    /// One per token.
    pub token_types: Vec<TokenType>,
    /// BPE merges by rank (index 0 merges first): the pair of token ids that
    /// merge, and the id of the merged token (whose bytes are the two
    /// concatenated).
    pub merges: Vec<[u32; 3]>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    /// Whether encoding a prompt starts with BOS / ends with EOS.
    pub add_bos: bool,
    pub add_eos: bool,
    /// The model's Jinja chat template, verbatim (may be empty).
    pub chat_template: String,
}
