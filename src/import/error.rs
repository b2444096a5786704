//! The converter's errors: each one line, naming the input and what is wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {reason}")]
    Input { path: PathBuf, reason: String },
    #[error("{path}: missing tensor '{}'", crate::escape::untrusted(name))]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor '{}': {reason}", crate::escape::untrusted(name))]
    Tensor { path: PathBuf, name: String, reason: String },
    #[error(transparent)]
    Write(#[from] crate::format::WriteError),
}
