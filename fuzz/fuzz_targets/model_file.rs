//! The model-file reader, as `Model::open` runs it: header, directory,
//! tokenizer section, then the tokenizer's own consistency checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;

fuzz_target!(|data: &[u8]| {
    let path = scratch::scratch("model", data);
    if let Ok(file) = gpt_fast::format::ModelFile::open(&path) {
        let _ = gpt_fast::tokenizer::Tokenizer::new(file.tokenizer().clone());
        let _ = file.verify();
    }
});
