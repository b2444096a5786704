//! The C ABI of gpt-fast (header: `include/gpt_fast.h`, made by cbindgen).
//!
//! Every function returns a [`GfStatus`]; on an error the message is kept
//! per thread and [`gf_last_error`] returns it. No Rust panic crosses the
//! boundary: each call runs under `catch_unwind`, and a panic becomes
//! [`GfStatus::Panic`]. Objects are opaque and freed with their `_free`
//! function; a model must outlive its sessions.
//!
//! `unsafe` is needed here and only here in the crate: C hands over raw
//! pointers, whose validity is the caller's contract (each function's
//! `# Safety`).
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use gpt_fast::{Flow, GenerateParams, Generator, Model, ModelOptions, Sampler, SamplerParams, SessionOptions};

/// What a call did.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GfStatus {
    /// Success.
    Ok = 0,
    /// A required pointer was null, or a string was not UTF-8.
    InvalidArgument = 1,
    /// The model file could not be opened or is invalid.
    Model = 2,
    /// The session refused (context, memory, token ids).
    Session = 3,
    /// Generation could not run (empty or too long prompt, bad settings).
    Generate = 4,
    /// An output buffer is too small; the size needed was written.
    BufferTooSmall = 5,
    /// A bug: a Rust panic, caught at the boundary.
    Panic = 6,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(message: impl Into<Vec<u8>>) {
    let mut bytes = message.into();
    bytes.retain(|&b| b != 0);
    let message = CString::new(bytes).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

/// Runs `body`, turning an error into its status and message and a panic
/// into [`GfStatus::Panic`].
fn guard(body: impl FnOnce() -> Result<(), (GfStatus, String)>) -> GfStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            set_error("");
            GfStatus::Ok
        }
        Ok(Err((status, message))) => {
            set_error(message);
            status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_error(format!("internal error (a bug in gpt-fast): {what}"));
            GfStatus::Panic
        }
    }
}

fn invalid(what: &str) -> (GfStatus, String) {
    (GfStatus::InvalidArgument, what.to_string())
}

/// # Safety
/// `ptr` is null or a NUL-terminated string.
unsafe fn str_arg<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, (GfStatus, String)> {
    if ptr.is_null() {
        return Err(invalid(&format!("{name} is null")));
    }
    // SAFETY: non-null, NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(ptr) }.to_str().map_err(|_| invalid(&format!("{name} is not UTF-8")))
}

/// The message of the last failed call on this thread ("" after a success).
/// Valid until the next call on this thread.
#[no_mangle]
pub extern "C" fn gf_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// An open model (opaque).
pub struct GfModel {
    model: Arc<Model>,
}

/// A conversation on a model (opaque): its KV cache and sampler.
pub struct GfSession {
    // Declared first, so dropped before the model it borrows.
    generator: Generator<'static>,
    sampler: Sampler,
    _model: Arc<Model>,
}

/// Opens a gpt-fast model file. On success `*out` is a model to free with
/// [`gf_model_free`].
///
/// # Safety
/// `path` is a NUL-terminated string; `out` points to writable storage.
#[no_mangle]
pub unsafe extern "C" fn gf_model_open(path: *const c_char, out: *mut *mut GfModel) -> GfStatus {
    guard(|| {
        // SAFETY: the caller's contract.
        let path = unsafe { str_arg(path, "path") }?;
        if out.is_null() {
            return Err(invalid("out is null"));
        }
        let model =
            Model::open(Path::new(path), ModelOptions::default()).map_err(|e| (GfStatus::Model, e.to_string()))?;
        let boxed = Box::into_raw(Box::new(GfModel { model: Arc::new(model) }));
        // SAFETY: `out` is non-null and writable (the caller's contract).
        unsafe { *out = boxed };
        Ok(())
    })
}

/// Frees a model (null is ignored). Its sessions must be freed first.
///
/// # Safety
/// `model` is null or came from [`gf_model_open`] and is not used again.
#[no_mangle]
pub unsafe extern "C" fn gf_model_free(model: *mut GfModel) {
    if !model.is_null() {
        // SAFETY: from `Box::into_raw` in gf_model_open, freed once.
        drop(unsafe { Box::from_raw(model) });
    }
}

/// Tokens in the model's vocabulary (the length of every logits array).
///
/// # Safety
/// `model` came from [`gf_model_open`].
#[no_mangle]
pub unsafe extern "C" fn gf_model_n_vocab(model: *const GfModel) -> usize {
    // SAFETY: the caller's contract; null gives 0.
    unsafe { model.as_ref() }.map_or(0, |m| m.model.tokenizer().n_vocab())
}

/// Creates a session of `context` positions (0: the model's trained length,
/// at most 4096) on `threads` threads (0: one per physical core).
///
/// # Safety
/// `model` came from [`gf_model_open`] and outlives the session; `out`
/// points to writable storage.
#[no_mangle]
pub unsafe extern "C" fn gf_session_new(
    model: *const GfModel,
    context: usize,
    threads: usize,
    out: *mut *mut GfSession,
) -> GfStatus {
    guard(|| {
        // SAFETY: the caller's contract.
        let model = unsafe { model.as_ref() }.ok_or_else(|| invalid("model is null"))?;
        if out.is_null() {
            return Err(invalid("out is null"));
        }
        let shared = Arc::clone(&model.model);
        // SAFETY: the `Arc` kept in the session keeps the model alive (and at
        // one address) for as long as the generator borrowing it: the field
        // order drops the generator first.
        let borrowed: &'static Model = unsafe { &*Arc::as_ptr(&shared) };
        let options = SessionOptions { context, threads, ..Default::default() };
        let generator = Generator::new(borrowed, options).map_err(|e| (GfStatus::Session, e.to_string()))?;
        let sampler = Sampler::new(SamplerParams::greedy(), borrowed.tokenizer().n_vocab());
        let session = GfSession { generator, sampler, _model: shared };
        let boxed = Box::into_raw(Box::new(session));
        // SAFETY: `out` is non-null and writable.
        unsafe { *out = boxed };
        Ok(())
    })
}

/// Frees a session (null is ignored).
///
/// # Safety
/// `session` is null or came from [`gf_session_new`] and is not used again.
#[no_mangle]
pub unsafe extern "C" fn gf_session_free(session: *mut GfSession) {
    if !session.is_null() {
        // SAFETY: from `Box::into_raw` in gf_session_new, freed once.
        drop(unsafe { Box::from_raw(session) });
    }
}

/// Forgets the session's conversation.
///
/// # Safety
/// `session` came from [`gf_session_new`].
#[no_mangle]
pub unsafe extern "C" fn gf_session_reset(session: *mut GfSession) -> GfStatus {
    guard(|| {
        // SAFETY: the caller's contract.
        let session = unsafe { session.as_mut() }.ok_or_else(|| invalid("session is null"))?;
        session.generator.reset();
        Ok(())
    })
}

/// Encodes `text` (with BOS as the model wants if `add_bos`; special-token
/// text recognised if `parse_special`) into `tokens[0..capacity]`; `*n_tokens`
/// is the count. If `capacity` is too small, nothing is written but
/// `*n_tokens`, and the status is [`GfStatus::BufferTooSmall`].
///
/// # Safety
/// `model` came from [`gf_model_open`]; `text` is NUL-terminated; `tokens`
/// has room for `capacity` ids (or is null with `capacity` 0); `n_tokens` is writable.
#[no_mangle]
pub unsafe extern "C" fn gf_tokenize(
    model: *const GfModel,
    text: *const c_char,
    add_bos: bool,
    parse_special: bool,
    tokens: *mut u32,
    capacity: usize,
    n_tokens: *mut usize,
) -> GfStatus {
    guard(|| {
        // SAFETY: the caller's contract.
        let model = unsafe { model.as_ref() }.ok_or_else(|| invalid("model is null"))?;
        // SAFETY: the caller's contract.
        let text = unsafe { str_arg(text, "text") }?;
        if n_tokens.is_null() || (tokens.is_null() && capacity > 0) {
            return Err(invalid("tokens or n_tokens is null"));
        }
        let tokenizer = model.model.tokenizer();
        let ids =
            if add_bos { tokenizer.encode_prompt(text, parse_special) } else { tokenizer.encode(text, parse_special) };
        // SAFETY: `n_tokens` is non-null and writable.
        unsafe { *n_tokens = ids.len() };
        if ids.len() > capacity {
            return Err((GfStatus::BufferTooSmall, format!("{} tokens, room for {capacity}", ids.len())));
        }
        if !ids.is_empty() {
            // SAFETY: `tokens` has room for `capacity >= ids.len()` ids.
            unsafe { std::slice::from_raw_parts_mut(tokens, ids.len()) }.copy_from_slice(&ids);
        }
        Ok(())
    })
}

/// Appends `tokens` to the conversation; `*logits` points to the
/// [`gf_model_n_vocab`] logits after the last one, valid until the next call
/// on this session.
///
/// # Safety
/// `session` came from [`gf_session_new`]; `tokens` holds `n_tokens` ids;
/// `logits` is writable.
#[no_mangle]
pub unsafe extern "C" fn gf_eval(
    session: *mut GfSession,
    tokens: *const u32,
    n_tokens: usize,
    logits: *mut *const f32,
) -> GfStatus {
    guard(|| {
        // SAFETY: the caller's contract.
        let session = unsafe { session.as_mut() }.ok_or_else(|| invalid("session is null"))?;
        if tokens.is_null() || logits.is_null() {
            return Err(invalid("tokens or logits is null"));
        }
        // SAFETY: `tokens` holds `n_tokens` ids.
        let ids = unsafe { std::slice::from_raw_parts(tokens, n_tokens) };
        let out = session.generator.eval(ids).map_err(|e| (GfStatus::Session, e.to_string()))?;
        // SAFETY: `logits` is non-null and writable.
        unsafe { *logits = out.as_ptr() };
        Ok(())
    })
}

/// Appends one token sampled from the last logits (a caller's own decode
/// loop: [`gf_sample`] then this); `*logits` points to the logits after it,
/// valid until the next call on this session. [`gf_eval`] is for prompts:
/// with float weights it sums in the prompt's order, and a generated token
/// fed to it would not give the bits [`gf_generate`] gives it.
///
/// # Safety
/// `session` came from [`gf_session_new`]; `logits` is writable.
#[no_mangle]
pub unsafe extern "C" fn gf_decode(session: *mut GfSession, token: u32, logits: *mut *const f32) -> GfStatus {
    guard(|| {
        // SAFETY: the caller's contract.
        let session = unsafe { session.as_mut() }.ok_or_else(|| invalid("session is null"))?;
        if logits.is_null() {
            return Err(invalid("logits is null"));
        }
        let out = session.generator.decode(token).map_err(|e| (GfStatus::Session, e.to_string()))?;
        // SAFETY: `logits` is non-null and writable.
        unsafe { *logits = out.as_ptr() };
        Ok(())
    })
}

/// Sampling settings (see `gpt_fast::SamplerParams`); [`gf_sampler_default`]
/// fills them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GfSamplerParams {
    /// 0 or less: the most likely token.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p`.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one.
    pub min_p: f32,
    /// Penalty on recently seen tokens; 1 is off.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty sees.
    pub repeat_last_n: usize,
    /// RNG seed.
    pub seed: u64,
}

impl From<GfSamplerParams> for SamplerParams {
    fn from(p: GfSamplerParams) -> Self {
        SamplerParams {
            temperature: p.temperature,
            top_k: p.top_k,
            top_p: p.top_p,
            min_p: p.min_p,
            repeat_penalty: p.repeat_penalty,
            repeat_last_n: p.repeat_last_n,
            seed: p.seed,
        }
    }
}

/// The library's default sampling settings.
#[no_mangle]
pub extern "C" fn gf_sampler_default() -> GfSamplerParams {
    let p = SamplerParams::default();
    GfSamplerParams {
        temperature: p.temperature,
        top_k: p.top_k,
        top_p: p.top_p,
        min_p: p.min_p,
        repeat_penalty: p.repeat_penalty,
        repeat_last_n: p.repeat_last_n,
        seed: p.seed,
    }
}

/// Picks a token from `logits` (`n_logits` == the vocabulary) with `params`
/// into `*token`, and records it as seen (repetition penalty).
///
/// # Safety
/// `session` came from [`gf_session_new`]; `params` points to settings;
/// `logits` holds `n_logits` floats; `token` is writable.
#[no_mangle]
pub unsafe extern "C" fn gf_sample(
    session: *mut GfSession,
    params: *const GfSamplerParams,
    logits: *const f32,
    n_logits: usize,
    token: *mut u32,
) -> GfStatus {
    guard(|| {
        // SAFETY: the caller's contract.
        let session = unsafe { session.as_mut() }.ok_or_else(|| invalid("session is null"))?;
        // SAFETY: the caller's contract.
        let params: SamplerParams = (*unsafe { params.as_ref() }.ok_or_else(|| invalid("params is null"))?).into();
        if logits.is_null() || token.is_null() {
            return Err(invalid("logits or token is null"));
        }
        params.validate().map_err(|e| (GfStatus::InvalidArgument, e.to_string()))?;
        let vocab = session.generator.session().model().tokenizer().n_vocab();
        if n_logits != vocab {
            return Err(invalid(&format!("{n_logits} logits, the vocabulary has {vocab}")));
        }
        // SAFETY: `logits` holds `n_logits` floats.
        let logits = unsafe { std::slice::from_raw_parts(logits, n_logits) };
        session.sampler.set_params(params);
        let picked = session.sampler.sample(logits);
        session.sampler.accept(picked);
        // SAFETY: `token` is non-null and writable.
        unsafe { *token = picked };
        Ok(())
    })
}

/// Called with each piece of generated text (`len` bytes of UTF-8, not
/// NUL-terminated); return 0 to go on, anything else to stop.
pub type GfTokenCallback = Option<unsafe extern "C" fn(piece: *const c_char, len: usize, user: *mut c_void) -> i32>;

/// What a [`gf_generate`] call did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GfGenerateStats {
    /// Tokens evaluated before the first new one.
    pub prompt_tokens: usize,
    /// Seconds to evaluate them and pick the first new token.
    pub prompt_seconds: f64,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Seconds from the first new token to the end.
    pub generate_seconds: f64,
    /// Whether the callback stopped generation.
    pub cancelled: bool,
}

/// Appends `prompt` to the conversation and generates up to `max_tokens`
/// tokens, handing each piece of text to `on_text` (which can stop it).
/// `stats` may be null.
///
/// # Safety
/// `session` came from [`gf_session_new`]; `prompt` is NUL-terminated;
/// `params` points to settings; `stats` is null or writable; `on_text` is
/// null or safe to call with `user`.
#[no_mangle]
pub unsafe extern "C" fn gf_generate(
    session: *mut GfSession,
    prompt: *const c_char,
    max_tokens: usize,
    params: *const GfSamplerParams,
    on_text: GfTokenCallback,
    user: *mut c_void,
    stats: *mut GfGenerateStats,
) -> GfStatus {
    guard(|| {
        // SAFETY: the caller's contract.
        let session = unsafe { session.as_mut() }.ok_or_else(|| invalid("session is null"))?;
        // SAFETY: the caller's contract.
        let prompt = unsafe { str_arg(prompt, "prompt") }?;
        // SAFETY: the caller's contract.
        let sampler = (*unsafe { params.as_ref() }.ok_or_else(|| invalid("params is null"))?).into();
        let params = GenerateParams { max_tokens, sampler, ..Default::default() };
        let result = session.generator.generate(prompt, true, &params, |piece| match on_text {
            // SAFETY: the caller's contract for `on_text` and `user`; `piece`
            // is valid for `len` bytes during the call.
            Some(f) if unsafe { f(piece.as_ptr().cast(), piece.len(), user) } != 0 => Flow::Stop,
            _ => Flow::Continue,
        });
        let done = result.map_err(|e| (GfStatus::Generate, e.to_string()))?;
        // SAFETY: `stats` is null or writable.
        if let Some(out) = unsafe { stats.as_mut() } {
            *out = GfGenerateStats {
                prompt_tokens: done.prompt_tokens,
                prompt_seconds: done.prompt_time.as_secs_f64(),
                generated_tokens: done.generated_tokens,
                generate_seconds: done.generate_time.as_secs_f64(),
                cancelled: done.stop == gpt_fast::StopReason::Cancelled,
            };
        }
        Ok(())
    })
}
