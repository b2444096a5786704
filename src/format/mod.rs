//! The gpt-fast model file (docs/FORMAT.md): spec, validating reader, writer.

mod reader;
pub mod spec;
pub mod temp_files;
mod tokenizer_section;
mod writer;

pub use reader::{LoadError, LoadErrorKind, ModelFile, TensorInfo};
pub use spec::{expected_tensors, Arch, DType, HParams, TensorRole, TensorSpec, Variant};
pub use writer::{write_replacing, ModelWriter, WriteError};
