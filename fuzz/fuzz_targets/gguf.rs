//! The GGUF reader and what the converter builds from it: hyper-parameters,
//! the tokenizer import, the budget check, and the first tensors dequantized.
#![no_main]

use gpt_fast::import::source::Source;
use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;

fuzz_target!(|data: &[u8]| {
    let path = scratch::scratch("gguf", data);
    let Ok(file) = gpt_fast::import::gguf::GgufFile::open(&path) else { return };
    for info in file.tensors().iter().take(4) {
        let _ = file.tensor_f32(info);
    }
    drop(file);
    if let Ok(source) = gpt_fast::import::from_gguf::GgufSource::open(&path) {
        if gpt_fast::import::convert::check_backed(&source, &path).is_ok() {
            let _ = source.tensor("token_embd.weight");
        }
    }
});
