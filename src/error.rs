//! The one error type of the public API: every fallible call's error
//! converts into it (`?` works across them), and its message is one line
//! saying what and where.

/// Anything the public API can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening a model file (missing, damaged, another format, an ISA this
    /// CPU lacks, ...).
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// Creating or using a session (context, memory, tokens, saved state).
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    /// Generating text (an empty or too long prompt, bad sampling settings).
    #[error(transparent)]
    Generate(#[from] crate::generate::GenerateError),
    /// Sampling settings out of range ([`crate::SamplerParams::validate`]).
    #[error(transparent)]
    Sampler(#[from] crate::sampler::SamplerError),
    /// Decoding token ids (an id outside the vocabulary).
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
}
