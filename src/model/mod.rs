//! A model ready to run: the mapped file, its weights at the requested
//! precision, and the kernels for this CPU.

mod attention;
mod forward;
pub mod kv_cache;
mod parallel;
#[doc(hidden)]
pub mod weights;

use std::collections::HashMap;
use std::path::Path;

use gpt_fast_kernels::{Isa, Kernels};

pub use forward::{Forward, ForwardSize, LogitsMode, SeqRun};
pub use gpt_fast_kernels::Role;
pub use kv_cache::KvCache;
pub use weights::Weights;

use crate::format::{DType, HParams, LoadError, ModelFile, TensorRole};
use crate::tokenizer::Tokenizer;

/// Why [`Model::open`] refused a file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The model file could not be opened or is invalid.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A higher precision than the file holds was asked for.
    #[error("{path}: holds {file} weights; running at {wanted} would need more precision than the file has")]
    Precision {
        /// The model file.
        path: String,
        /// The file's weight type.
        file: &'static str,
        /// The weight type asked for.
        wanted: &'static str,
    },
    /// The file's tokenizer is inconsistent.
    #[error("{path}: bad tokenizer: {source}")]
    Tokenizer {
        /// The model file.
        path: String,
        /// What is wrong with it.
        source: crate::tokenizer::TokenizerError,
    },
    /// `GPT_FAST_ISA` names no instruction set.
    #[error("GPT_FAST_ISA={0}: unknown instruction set (expected scalar, avx2, avx512 or neon)")]
    UnknownIsa(String),
    /// `GPT_FAST_ISA` names an instruction set this CPU lacks.
    #[error("GPT_FAST_ISA={0}: this CPU does not support it")]
    IsaUnavailable(&'static str),
}

/// How to open a model.
#[derive(Clone, Copy, Debug, Default)]
pub struct ModelOptions {
    /// Weight type to run; `None` runs the file's own type in place. A lower
    /// precision than the file's is converted at load; a higher one is refused.
    pub quant: Option<DType>,
    /// Instruction set; `None` takes `GPT_FAST_ISA` if set, else the best this CPU has.
    pub isa: Option<Isa>,
    /// Also check every tensor's CRC-32 at open (reads the whole file once:
    /// catches corrupted tensor data, which the header checks cannot see).
    pub verify: bool,
}

/// Chooses the kernels: an explicit choice, else `GPT_FAST_ISA`, else the best.
pub fn select_kernels(isa: Option<Isa>) -> Result<Kernels, ModelError> {
    let isa = match isa {
        Some(isa) => Some(isa),
        None => match std::env::var("GPT_FAST_ISA") {
            Ok(name) if !name.is_empty() => Some(Isa::parse(&name).ok_or(ModelError::UnknownIsa(name))?),
            _ => None,
        },
    };
    match isa {
        Some(isa) => Kernels::for_isa(isa).ok_or(ModelError::IsaUnavailable(isa.name())),
        None => Ok(Kernels::best()),
    }
}

/// Converted tensors, when the run precision differs from the file's. Stored
/// as u64 words so that any element type's alignment holds.
type Converted = HashMap<String, (Vec<u64>, usize)>;

/// A model ready to run, shared read-only by any number of sessions.
///
/// ```
/// # use gpt_fast::{Model, ModelOptions};
/// # let path = std::env::temp_dir().join(format!("gpt-fast-doc-model-{}", std::process::id()));
/// # let h = gpt_fast::synthetic::config("test-llama").unwrap();
/// # gpt_fast::synthetic::write(&path, &h, gpt_fast::format::DType::Q8, 1, |_, _| {}).unwrap();
/// let model = Model::open(&path, ModelOptions::default())?;
/// let ids = model.tokenizer().encode("hello world", false);
/// assert_eq!(model.tokenizer().decode(&ids)?, "hello world");
/// assert!(Model::open("no-such-file.bin".as_ref(), ModelOptions::default()).is_err());
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), gpt_fast::Error>(())
/// ```
pub struct Model {
    file: ModelFile,
    tokenizer: Tokenizer,
    dtype: DType,
    converted: Converted,
    kernels: Kernels,
}

impl Model {
    /// Maps and validates a gpt-fast model file (header, tensor directory,
    /// tokenizer; every tensor's CRC too with `verify`) and picks the kernels.
    pub fn open(path: &Path, options: ModelOptions) -> Result<Self, ModelError> {
        let kernels = select_kernels(options.isa)?;
        let file = ModelFile::open(path)?;
        if options.verify {
            file.verify()?;
        }
        let file_dtype = file.weight_dtype();
        let dtype = options.quant.unwrap_or(file_dtype);
        if dtype.precision() > file_dtype.precision() {
            return Err(ModelError::Precision {
                path: path.display().to_string(),
                file: file_dtype.name(),
                wanted: dtype.name(),
            });
        }
        let mut converted = Converted::new();
        if options.quant.is_some() {
            let mut bytes = Vec::new();
            for spec in crate::format::expected_tensors(file.hparams()) {
                let info = file.tensor(&spec.name).expect("validated tensor list");
                // A file may mix types (a GGUF's kept as they are): only the others are converted.
                if spec.role != TensorRole::Matmul || info.dtype == dtype {
                    continue;
                }
                let (rows, cols) = (info.rows as usize, info.cols as usize);
                let values = info.dtype.decode(file.tensor_bytes(info), rows, cols);
                dtype.encode(rows, cols, &values, &mut bytes);
                let mut words = vec![0u64; bytes.len().div_ceil(8)];
                bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
                converted.insert(spec.name, (words, bytes.len()));
            }
        }
        let tokenizer = Tokenizer::new(file.tokenizer().clone())
            .map_err(|source| ModelError::Tokenizer { path: path.display().to_string(), source })?;
        Ok(Self { file, tokenizer, dtype, converted, kernels })
    }

    /// The model's shape and variant.
    pub fn hparams(&self) -> &HParams {
        self.file.hparams()
    }

    /// The model's tokenizer (text to ids and back).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The mapped file.
    #[doc(hidden)]
    pub fn file(&self) -> &ModelFile {
        &self.file
    }

    /// The weight type the model runs at (of most of its matmul weights: a
    /// GGUF's types kept as they are may mix).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Whether the weights were converted at load (the file held another type).
    pub fn converted_at_load(&self) -> bool {
        !self.converted.is_empty()
    }

    /// The kernels chosen for this CPU.
    #[doc(hidden)]
    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// Typed views of every weight.
    pub fn weights(&self) -> Weights<'_> {
        weights::build(self.hparams(), |name| {
            let info = self.file.tensor(name).expect("validated tensor list");
            let (rows, cols) = (info.rows as usize, info.cols as usize);
            match self.converted.get(name) {
                Some((words, len)) => (self.dtype, rows, cols, &bytemuck::cast_slice::<u64, u8>(words)[..*len]),
                None => (info.dtype, rows, cols, self.file.tensor_bytes(info)),
            }
        })
    }

    /// The weights a decoded token reads, in order: every layer's matrices
    /// and the output head (the embedding table gives one row a token).
    pub fn per_token_weights(&self) -> Vec<&[u8]> {
        let w = self.weights();
        let mut parts: Vec<&[u8]> = w
            .layers
            .iter()
            .flat_map(|l| [l.attn_qkv.w.data, l.attn_output.w.data, l.ffn_up.w.data, l.ffn_down.w.data])
            .collect();
        parts.push(w.lm_head.data);
        parts
    }

    /// Bytes of weights read per decoded token (for GB/s figures).
    pub fn weight_bytes(&self) -> u64 {
        self.per_token_weights().iter().map(|p| p.len() as u64).sum()
    }
}
