//! The `gpt-fast` command end to end on a synthetic model: what works, and
//! that each bad input is one clear line and a non-zero exit, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use gpt_fast::format::DType;

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}-{}", std::process::id()))
}

fn model() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = tmp("model.bin");
        let h = gpt_fast::synthetic::config("test-llama").unwrap();
        gpt_fast::synthetic::write(&path, &h, DType::Q8, 9, |_, _| {}).unwrap();
        path
    })
}

fn gpt_fast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpt-fast")).args(args).env_remove("GPT_FAST_ISA").output().unwrap()
}

fn model_arg() -> &'static str {
    model().to_str().unwrap()
}

/// Fails with one line on stderr containing `expect`, exit code `code`.
fn refused(out: &Output, code: i32, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.contains(expect), "'{expect}' not in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    if code == 1 {
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line expected: {stderr}");
    }
}

#[test]
fn run_streams_the_prompt_and_a_continuation() {
    let out = gpt_fast(&["run", model_arg(), "-p", "hello world", "-n", "8", "--temp", "0", "-t", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("hello world") && stdout.len() > "hello world".len(), "{stdout:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("prompt: 2 tokens") || stderr.contains("prompt:"), "{stderr}");
    // Same seed, same text; greedy is deterministic anyway, so sample.
    let sampled =
        |seed: &str| gpt_fast(&["run", model_arg(), "-p", "abc", "-n", "12", "--seed", seed, "--temp", "1.2"]).stdout;
    assert_eq!(sampled("7"), sampled("7"));
}

#[test]
fn run_refuses_bad_inputs() {
    refused(&gpt_fast(&["run", "/nonexistent/m.bin", "-p", "x"]), 1, "/nonexistent/m.bin");
    refused(&gpt_fast(&["run", model_arg(), "-p", ""]), 1, "the prompt is empty");
    let long = "word ".repeat(100);
    refused(&gpt_fast(&["run", model_arg(), "-c", "16", "-p", &long]), 1, "but the context holds 16");
    let bad_utf8 = tmp("bad.txt");
    std::fs::write(&bad_utf8, b"abc\xff\xfe").unwrap();
    refused(&gpt_fast(&["run", model_arg(), "-f", bad_utf8.to_str().unwrap()]), 1, "not valid UTF-8");
    refused(&gpt_fast(&["run", model_arg(), "-f", "/nonexistent/prompt.txt"]), 1, "/nonexistent/prompt.txt");
    refused(&gpt_fast(&["run", model_arg(), "-p", "x", "-n", "0"]), 2, "-n");
    refused(&gpt_fast(&["run", model_arg()]), 1, "no prompt");
    refused(&gpt_fast(&["run", model_arg(), "-p", "x", "--quant", "f32"]), 1, "more precision than the file has");
    refused(&gpt_fast(&["run", model_arg(), "-p", "x", "--top-p", "0"]), 1, "top-p");
    refused(&gpt_fast(&["run", model_arg(), "-p", "x", "-c", "100000"]), 1, "context 100000");
    refused(&gpt_fast(&["run", model_arg(), "-p", "x", "--chat"]), 1, "no chat template");
    let isa = |value: &str| {
        Command::new(env!("CARGO_BIN_EXE_gpt-fast"))
            .args(["run", model_arg(), "-p", "x"])
            .env("GPT_FAST_ISA", value)
            .output()
            .unwrap()
    };
    refused(&isa("sse9"), 1, "unknown instruction set");
    #[cfg(target_arch = "x86_64")]
    refused(&isa("neon"), 1, "does not support");
}

#[test]
fn run_with_no_context_shift_stops_at_the_limit() {
    let out = gpt_fast(&["run", model_arg(), "-p", "ab", "-n", "100", "-c", "16", "--no-context-shift", "--temp", "0"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("context full"));
    // With the shift (the default), generation goes on past the context; with
    // --ignore-eos it runs to -n even if this random model samples its EOS.
    let out = gpt_fast(&["run", model_arg(), "-p", "ab", "-n", "40", "-c", "16", "--temp", "1", "--ignore-eos", "-v"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("generated: 40 tokens"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tokenize_prints_json_ids() {
    let out = gpt_fast(&["tokenize", model_arg(), "abc <|im_end|>"]);
    assert!(out.status.success());
    let ids: Vec<u32> = serde_json_free_parse(&String::from_utf8_lossy(&out.stdout));
    assert!(ids.contains(&258), "{ids:?}"); // <|im_end|> as one control token
    let plain = gpt_fast(&["tokenize", model_arg(), "--no-special", "abc <|im_end|>"]);
    assert!(!serde_json_free_parse(&String::from_utf8_lossy(&plain.stdout)).contains(&258));
}

/// Parses `[1, 2, 3]` without a JSON crate.
fn serde_json_free_parse(s: &str) -> Vec<u32> {
    let s = s.trim();
    assert!(s.starts_with('[') && s.ends_with(']') && s.lines().count() == 1, "{s:?}");
    s[1..s.len() - 1].split(',').filter(|p| !p.trim().is_empty()).map(|p| p.trim().parse().unwrap()).collect()
}

#[test]
fn perplexity_and_bench_print_their_figures() {
    let text = tmp("text.txt");
    std::fs::write(&text, "the quick brown fox jumps over the lazy dog. ".repeat(20)).unwrap();
    let out = gpt_fast(&["perplexity", model_arg(), "-f", text.to_str().unwrap(), "-c", "32"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("PPL = "));
    let out = gpt_fast(&["perplexity", model_arg(), "-f", text.to_str().unwrap(), "-c", "100000"]);
    refused(&out, 1, "at least 100000");
    let out = gpt_fast(&["bench", model_arg(), "-p", "8", "-n", "4", "-r", "2", "--json"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(stdout.starts_with("{\"test\":\"read\""), "the roofline comes first: {stdout}");
    assert!(stdout.contains("\"test\":\"pp8\"") && stdout.contains("\"test\":\"tg4\""), "{stdout}");
    assert!(stdout.contains("gb_per_second") && stdout.contains("\"roofline\":"), "{stdout}");
}
