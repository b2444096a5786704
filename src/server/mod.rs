//! `gpt-fast serve`: an OpenAI-compatible HTTP server. [`request`] parses and
//! checks bodies (no HTTP needed, so it is fuzzed on its own); with the
//! `server` feature, [`engine`] schedules requests over KV cache slots on one
//! thread that owns the model, and [`http`] carries them over HTTP.

#[cfg(feature = "server")]
pub mod engine;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod metrics;
pub mod request;
