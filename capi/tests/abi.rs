//! The C functions called as C would call them, on a synthetic model file:
//! the happy path (open, tokenize, eval, sample, generate with a callback
//! that cancels, free) and each error path (a status and a message, no panic).

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;

use gpt_fast_capi::*;

fn last_error() -> String {
    // SAFETY: gf_last_error returns a NUL-terminated string valid until the next call.
    unsafe { CStr::from_ptr(gf_last_error()) }.to_string_lossy().into_owned()
}

unsafe extern "C" fn stop_after_two(_piece: *const c_char, _len: usize, user: *mut c_void) -> i32 {
    // SAFETY: the test passes a pointer to a usize counter.
    let count = unsafe { &mut *(user as *mut usize) };
    *count += 1;
    i32::from(*count >= 2)
}

#[test]
fn the_c_functions_work_and_fail_cleanly() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("capi-{}", std::process::id()));
    let h = gpt_fast::synthetic::config("test-llama").unwrap();
    gpt_fast::synthetic::write(&path, &h, gpt_fast::format::DType::Q8, 1, |_, _| {}).unwrap();
    let c_path = CString::new(path.to_str().unwrap()).unwrap();
    let missing = CString::new("/no/such/model.bin").unwrap();
    // SAFETY: every pointer below is valid as each function's contract asks.
    unsafe {
        let mut model = ptr::null_mut();
        assert_eq!(gf_model_open(missing.as_ptr(), &mut model), GfStatus::Model);
        assert!(last_error().contains("/no/such/model.bin"), "{}", last_error());
        assert_eq!(gf_model_open(ptr::null(), &mut model), GfStatus::InvalidArgument);
        assert_eq!(gf_model_open(c_path.as_ptr(), &mut model), GfStatus::Ok);
        assert_eq!(last_error(), "");
        let vocab = gf_model_n_vocab(model);
        assert_eq!(vocab, h.vocab_size as usize);

        let mut session = ptr::null_mut();
        assert_eq!(gf_session_new(model, 100_000, 2, &mut session), GfStatus::Session);
        assert!(last_error().contains("context"), "{}", last_error());
        assert_eq!(gf_session_new(model, 64, 2, &mut session), GfStatus::Ok);

        let text = CString::new("hello world").unwrap();
        let mut n = 0usize;
        assert_eq!(
            gf_tokenize(model, text.as_ptr(), true, false, ptr::null_mut(), 0, &mut n),
            GfStatus::BufferTooSmall
        );
        let mut ids = vec![0u32; n];
        assert_eq!(gf_tokenize(model, text.as_ptr(), true, false, ids.as_mut_ptr(), n, &mut n), GfStatus::Ok);
        assert_eq!(ids, model_tokenizer_ids(&path, "hello world"));

        let mut logits = ptr::null();
        assert_eq!(gf_eval(session, ids.as_ptr(), ids.len(), &mut logits), GfStatus::Ok);
        let greedy = GfSamplerParams { temperature: 0.0, ..gf_sampler_default() };
        let mut token = 0u32;
        assert_eq!(gf_sample(session, &greedy, logits, vocab, &mut token), GfStatus::Ok);
        let row = std::slice::from_raw_parts(logits, vocab);
        let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(token as usize, best);
        assert_eq!(gf_sample(session, &greedy, logits, vocab - 1, &mut token), GfStatus::InvalidArgument);
        let bad = [u32::MAX];
        assert_eq!(gf_eval(session, bad.as_ptr(), 1, &mut logits), GfStatus::Session);
        assert!(last_error().contains("out of range"), "{}", last_error());

        let mut pieces = 0usize;
        let mut stats = GfGenerateStats::default();
        let prompt = CString::new(" again").unwrap();
        let status = gf_generate(
            session,
            prompt.as_ptr(),
            50,
            &greedy,
            Some(stop_after_two),
            (&mut pieces as *mut usize).cast(),
            &mut stats,
        );
        assert_eq!(status, GfStatus::Ok, "{}", last_error());
        assert!(stats.cancelled && pieces == 2, "{stats:?} after {pieces} pieces");
        assert_eq!(gf_session_reset(session), GfStatus::Ok);
        let empty = CString::new("").unwrap();
        assert_eq!(
            gf_generate(session, empty.as_ptr(), 5, &greedy, None, ptr::null_mut(), ptr::null_mut()),
            GfStatus::Generate
        );

        gf_session_free(session);
        gf_model_free(model);
        gf_session_free(ptr::null_mut());
        gf_model_free(ptr::null_mut());
    }
    std::fs::remove_file(&path).unwrap();
}

fn model_tokenizer_ids(path: &std::path::Path, text: &str) -> Vec<u32> {
    let model = gpt_fast::Model::open(path, gpt_fast::ModelOptions::default()).unwrap();
    model.tokenizer().encode_prompt(text, false)
}

/// A caller's own decode loop (gf_sample, then gf_decode) gets the bits the
/// library's decode gives a generated token, not gf_eval's (prefill) ones:
/// with float weights the two sum in different orders.
#[test]
fn gf_decode_feeds_a_sampled_token_as_decode_does() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("capi-f16-{}", std::process::id()));
    let h = gpt_fast::synthetic::config("test-llama").unwrap();
    gpt_fast::synthetic::write(&path, &h, gpt_fast::format::DType::F16, 3, |_, _| {}).unwrap();
    let model = gpt_fast::Model::open(&path, Default::default()).unwrap();
    let options = gpt_fast::SessionOptions { context: 64, threads: 2, ..Default::default() };
    let prompt = [1u32, 40, 41, 42, 43, 44];
    let greedy = GfSamplerParams { temperature: 0.0, ..gf_sampler_default() };
    let c_path = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: every pointer below is valid as each function's contract asks.
    unsafe {
        let (mut c_model, mut session) = (ptr::null_mut(), ptr::null_mut());
        assert_eq!(gf_model_open(c_path.as_ptr(), &mut c_model), GfStatus::Ok);
        assert_eq!(gf_session_new(c_model, 64, 2, &mut session), GfStatus::Ok);
        let vocab = gf_model_n_vocab(c_model);
        let mut logits = ptr::null();
        assert_eq!(gf_eval(session, prompt.as_ptr(), prompt.len(), &mut logits), GfStatus::Ok);
        let mut decoded = gpt_fast::Session::new(&model, options).unwrap();
        let mut prefilled = gpt_fast::Session::new(&model, options).unwrap();
        assert_eq!(std::slice::from_raw_parts(logits, vocab), decoded.eval(&prompt).unwrap());
        prefilled.eval(&prompt).unwrap();
        let mut differs = false;
        for step in 0..4 {
            let mut token = 0u32;
            assert_eq!(gf_sample(session, &greedy, logits, vocab, &mut token), GfStatus::Ok);
            assert_eq!(gf_decode(session, token, &mut logits), GfStatus::Ok, "{}", last_error());
            let row = std::slice::from_raw_parts(logits, vocab);
            assert_eq!(row, decoded.decode(token).unwrap(), "step {step}: decode's bits");
            differs |= row != prefilled.eval(&[token]).unwrap();
        }
        assert!(differs, "prefill and decode sum f16 in different orders: the test must see it");
        assert_eq!(gf_decode(session, u32::MAX, &mut logits), GfStatus::Session);
        assert!(last_error().contains("out of range"), "{}", last_error());
        assert_eq!(gf_decode(session, 1, ptr::null_mut()), GfStatus::InvalidArgument);
        gf_session_free(session);
        gf_model_free(c_model);
    }
    let _ = std::fs::remove_file(&path);
}
