//! Generation stops at every end-of-generation token (EOS and the chat
//! models' end-of-turn tokens, found by text as llama.cpp's `special_eog_ids`
//! are), and `ignore_eos` bans them all. Before the end-of-generation set only
//! the EOS id stopped generation, so a ChatML `<|im_end|>` that is not the EOS
//! was printed and generation ran on.

use std::path::{Path, PathBuf};
use std::process::Command;

use gpt_fast::format::DType;
use gpt_fast::generate::{Flow, GenerateParams, Generator, StopReason};
use gpt_fast::import::gguf::GgufFile;
use gpt_fast::import::tokenizer_import::tokenizer_from_gguf;
use gpt_fast::model::{Model, ModelOptions};
use gpt_fast::sampler::SamplerParams;
use gpt_fast::session::SessionOptions;

fn fetch(model: &str) -> PathBuf {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/fetch-model.sh"))
        .arg(model)
        .output()
        .expect("run tools/fetch-model.sh");
    assert!(out.status.success(), "fetch-model.sh {model}: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The ids come from the GGUFs' own metadata (`gguf-dump`): SmolLM2's
/// `eos_token_id` is 2, `<|im_end|>`, and `<|endoftext|>` is 0; Gemma 3's
/// `eos_token_id` is 1, `<eos>`, and `<end_of_turn>` is 106.
#[test]
fn real_vocabularies_end_at_eos_and_turn_ends() {
    for (model, eos, eog) in [("smollm2", 2, vec![0, 2]), ("gemma3", 1, vec![1, 106])] {
        let tok = tokenizer_from_gguf(&GgufFile::open(&fetch(model)).unwrap()).unwrap();
        assert_eq!(tok.eos_id(), Some(eos), "{model}");
        assert_eq!(tok.end_of_generation_ids(), eog, "{model}");
    }
}

/// The synthetic test model's vocabulary has EOS `<|endoftext|>` (256) and
/// ChatML's `<|im_start|>` (257) and `<|im_end|>` (258). Sampled nearly
/// uniformly (a high temperature) over many runs, each end token comes up;
/// none may reach the text, with or without `ignore_eos`.
#[test]
fn generation_stops_at_end_of_turn_and_ignore_eos_bans_it() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("eog-{}", std::process::id()));
    let hparams = gpt_fast::synthetic::config("test-llama").unwrap();
    gpt_fast::synthetic::write(&path, &hparams, DType::Q8, 7, |_, _| {}).unwrap();
    let model = Model::open(&path, ModelOptions::default()).unwrap();
    assert_eq!(model.tokenizer().end_of_generation_ids(), [256, 258]);
    let mut stops = Vec::new();
    for ignore_eos in [false, true] {
        for seed in 0..24 {
            let sampler =
                SamplerParams { temperature: 100.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed, ..Default::default() };
            let options = SessionOptions { context: 128, threads: 1, ..Default::default() };
            let mut generator = Generator::new(&model, options).unwrap();
            let params = GenerateParams { max_tokens: 100, sampler, stop: Vec::new(), ignore_eos };
            let mut text = String::new();
            let stats = generator
                .generate("hello", false, &params, |piece| {
                    text.push_str(piece);
                    Flow::Continue
                })
                .unwrap();
            for end in ["<|im_end|>", "<|endoftext|>"] {
                assert!(!text.contains(end), "seed {seed}, ignore_eos {ignore_eos}: {end} in {text:?}");
            }
            if ignore_eos {
                assert_eq!(stats.stop, StopReason::MaxTokens, "seed {seed}");
            }
            stops.push(stats.stop);
        }
    }
    // The runs did meet end tokens (so the checks above were tested).
    assert!(stops.iter().filter(|&&s| s == StopReason::Eos).count() >= 4, "{stops:?}");
    std::fs::remove_file(&path).ok();
}
