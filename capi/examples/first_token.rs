//! First-token latency in process, warm model, a 16-token prompt: the bare
//! prefill (`Session::eval` of the 16 ids, what the CLI's prompt time is
//! made of), the Rust API's first piece (`Generator::generate`: tokenize,
//! prefill, sample, decode) and the C ABI's (`gf_generate`, called through
//! its `extern "C"` functions as a C program would), in alternating rounds;
//! prints each one's median and their ratios (issue #14's targets: Rust API
//! <= 1.2x the prefill, C ABI <= 1.1x the Rust API).
//!
//!     cargo run --release -p gpt-fast-capi --example first_token -- MODEL [ROUNDS]

use std::ffi::{c_char, c_void, CString};
use std::time::{Duration, Instant};

use gpt_fast::{Flow, GenerateParams, Generator, Model, ModelOptions, SamplerParams, Session, SessionOptions};
use gpt_fast_capi::*;

const TEXT: &str = "The quick brown fox jumps over the lazy dog while the farmer walks his cattle home";
const PROMPT_TOKENS: usize = 16;
const THREADS: usize = 2;
const CONTEXT: usize = 512;

/// The first `PROMPT_TOKENS` tokens of TEXT, as text.
fn prompt(model: &Model) -> Result<String, Box<dyn std::error::Error>> {
    let tokenizer = model.tokenizer();
    let ids = tokenizer.encode_prompt(TEXT, false);
    if ids.len() < PROMPT_TOKENS {
        return Err(format!("the text has {} tokens, fewer than {PROMPT_TOKENS}", ids.len()).into());
    }
    let text = tokenizer.decode(&ids[..PROMPT_TOKENS])?;
    let check = tokenizer.encode_prompt(&text, false).len();
    if check != PROMPT_TOKENS {
        return Err(format!("the prompt re-encodes to {check} tokens").into());
    }
    Ok(text)
}

unsafe extern "C" fn first_piece(_piece: *const c_char, _len: usize, user: *mut c_void) -> i32 {
    // SAFETY: `measure_c` passes a pointer to its `Option<Instant>`.
    let at = unsafe { &mut *(user as *mut Option<Instant>) };
    at.get_or_insert_with(Instant::now);
    1
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: first_token MODEL [ROUNDS]")?;
    let rounds: usize = args.next().map_or(Ok(20), |r| r.parse())?;
    let model = Model::open(path.as_ref(), ModelOptions::default())?;
    let text = prompt(&model)?;
    let ids = model.tokenizer().encode_prompt(&text, false);
    let options = SessionOptions { context: CONTEXT, threads: THREADS, ..Default::default() };
    let mut session = Session::new(&model, options)?;
    let mut generator = Generator::new(&model, options)?;
    let params = GenerateParams { max_tokens: 1, sampler: SamplerParams::greedy(), ..Default::default() };

    let c_path = CString::new(path.as_str())?;
    let c_text = CString::new(text.as_str())?;
    let (mut c_model, mut c_session) = (std::ptr::null_mut(), std::ptr::null_mut());
    let greedy = GfSamplerParams { temperature: 0.0, ..gf_sampler_default() };
    // SAFETY: valid NUL-terminated strings and out pointers.
    unsafe {
        if gf_model_open(c_path.as_ptr(), &mut c_model) != GfStatus::Ok
            || gf_session_new(c_model, CONTEXT, THREADS, &mut c_session) != GfStatus::Ok
        {
            return Err("the C ABI could not open the model".into());
        }
    }

    let (mut prefill, mut rust, mut c) = (Vec::new(), Vec::new(), Vec::new());
    // Round 0 warms caches, pages and the pool; it is not counted.
    for round in 0..=rounds {
        session.reset();
        let start = Instant::now();
        session.eval(&ids)?;
        let t_prefill = start.elapsed();

        generator.reset();
        let start = Instant::now();
        let mut at = None;
        generator.generate(&text, false, &params, |_| {
            at.get_or_insert_with(Instant::now);
            Flow::Stop
        })?;
        let t_rust = at.ok_or("the Rust API produced no piece")? - start;

        let mut at: Option<Instant> = None;
        // SAFETY: the session is live.
        unsafe { gf_session_reset(c_session) };
        let start = Instant::now();
        // SAFETY: the session is live; the callback gets a pointer to `at`,
        // which outlives the call.
        let status = unsafe {
            let user = (&mut at as *mut Option<Instant>).cast();
            gf_generate(c_session, c_text.as_ptr(), 1, &greedy, Some(first_piece), user, std::ptr::null_mut())
        };
        if status != GfStatus::Ok {
            return Err("gf_generate failed".into());
        }
        let t_c = at.ok_or("the C ABI produced no piece")? - start;
        if round > 0 {
            prefill.push(t_prefill);
            rust.push(t_rust);
            c.push(t_c);
        }
    }
    // SAFETY: made above, freed once, session first.
    unsafe {
        gf_session_free(c_session);
        gf_model_free(c_model);
    }
    let (prefill, rust, c) = (median(prefill), median(rust), median(c));
    println!("prompt tokens        {PROMPT_TOKENS} ({rounds} rounds, {THREADS} threads, medians)");
    println!("prefill (Session)    {prefill:.2} ms");
    println!("first piece, Rust    {rust:.2} ms  ({:.3}x the prefill)", rust / prefill);
    println!("first piece, C ABI   {c:.2} ms  ({:.3}x the Rust API)", c / rust);
    Ok(())
}
