//! Hugging Face import: config.json and tokenizer.json (the input is the two
//! files, split at the first NUL byte) read as `HfSource::open` reads a folder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (config, tokenizer) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(tokenizer) {
        if let Ok(spec) = gpt_fast::import::tokenizer_import::from_hf_tokenizer_json(&json) {
            let _ = gpt_fast::tokenizer::Tokenizer::new(spec);
        }
    }
    let dir = std::env::temp_dir().join(format!("gpt-fast-fuzz-hf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer).unwrap();
    let _ = gpt_fast::import::from_hf::HfSource::open(&dir);
});
