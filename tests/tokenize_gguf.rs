//! `gpt-fast tokenize` on a GGUF reads the tokenizer from the GGUF's metadata
//! (no conversion), so llama.cpp's vocab-only test files work: the ids match
//! the `.gguf.out` that ships with them, after the BOS the model adds.
//! The files come from the llama-cpp-python 0.3.36 sdist that
//! `tools/fetch-llamacpp-src.sh` caches (`tools/test.sh` runs it).

use std::path::{Path, PathBuf};
use std::process::Command;

fn models_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/llama-cpp-python-0.3.36/vendor/llama.cpp/models");
    if dir.join("ggml-vocab-llama-spm.gguf").is_file() {
        Some(dir)
    } else {
        eprintln!("\n*** SKIPPED: llama.cpp test vocabularies not cached; run tools/fetch-llamacpp-src.sh\n");
        None
    }
}

/// The expected ids of `text` in `name`'s `.inp/.out` (first matching case).
fn expected(dir: &Path, name: &str, text: &str) -> Vec<u32> {
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out"))).unwrap();
    let i = inp.split("\n__ggml_vocab_test__\n").position(|t| t == text).unwrap();
    out.lines().nth(i).unwrap().split_whitespace().map(|id| id.parse().unwrap()).collect()
}

fn tokenize(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gpt-fast")).arg("tokenize").args(args).output().unwrap()
}

#[test]
fn tokenize_reads_a_vocab_only_gguf() {
    let Some(dir) = models_dir() else { return };
    // (vocab, its BOS id and whether it adds BOS, from the GGUF's metadata)
    for (name, bos) in [("llama-spm", Some(1)), ("llama-bpe", Some(128000)), ("qwen2", None)] {
        let path = dir.join(format!("ggml-vocab-{name}.gguf"));
        let text = " Hello, world!";
        let out = tokenize(&[path.to_str().unwrap(), text]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let want: Vec<u32> = bos.into_iter().chain(expected(&dir, name, text)).collect();
        let want = format!("[{}]\n", want.iter().map(u32::to_string).collect::<Vec<_>>().join(", "));
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{name}");
    }
}

#[test]
fn an_unsupported_pre_tokenizer_is_one_clear_line() {
    let Some(dir) = models_dir() else { return };
    let out = tokenize(&[dir.join("ggml-vocab-gpt-neox.gguf").to_str().unwrap(), "hi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("tokenizer.ggml.pre is missing"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}
