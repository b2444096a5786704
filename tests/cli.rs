//! The `gpt-fast` command end to end on a synthetic model: what works, and
//! that each bad input is one clear line and a non-zero exit, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
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

/// Fails with one line on stderr containing `expect`, exit code `code`,
/// and nothing on stdout (everything is checked before output starts).
fn refused(out: &Output, code: i32, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "output before the error: {:?}", String::from_utf8_lossy(&out.stdout));
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
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped:     context full"));
    // With the shift (the default), generation goes on past the context; with
    // --ignore-eos it runs to -n even if this random model samples its EOS.
    let out = gpt_fast(&["run", model_arg(), "-p", "ab", "-n", "40", "-c", "16", "--temp", "1", "--ignore-eos", "-v"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(", 40 tokens,") && stderr.contains("stopped:     -n reached"), "{stderr}");
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

#[test]
fn bench_decodes_several_sequences_together() {
    let out = gpt_fast(&["bench", model_arg(), "-p", "0", "-n", "4", "-np", "1,3", "-d", "0,5", "-r", "1", "--json"]);
    let stdout = succeeded(&out);
    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), 4, "tg4 at two depths for 1 and 3 sequences: {stdout}");
    let field = |line: &str, key: &str| -> f64 {
        let at = line.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("{key} in {line}")) + key.len() + 3;
        line[at..].split([',', '}']).next().unwrap().parse().unwrap()
    };
    for (line, (depth, seqs)) in lines.iter().zip([(0.0, 1.0), (0.0, 3.0), (5.0, 1.0), (5.0, 3.0)]) {
        assert!(line.contains("\"test\":\"tg4\""), "{line}");
        assert_eq!((field(line, "depth"), field(line, "sequences")), (depth, seqs), "{line}");
        let (all, one) = (field(line, "tokens_per_second"), field(line, "sequence_tokens_per_second"));
        assert!(all > 0.0 && (one * seqs - all).abs() < 0.01 * all, "{line}");
    }
    let table = succeeded(&gpt_fast(&["bench", model_arg(), "-p", "0", "-n", "2", "--parallel", "2", "-r", "1"]));
    assert!(table.contains("| tg2 x2 |") && table.contains(" a sequence)"), "{table}");
    refused(&gpt_fast(&["bench", model_arg(), "-np", "0"]), 2, "--parallel");
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn succeeded(out: &Output) -> String {
    assert!(out.status.success(), "{}", stderr_of(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf").join(name)
}

#[test]
fn inputs_that_are_not_model_files_say_what_they_are() {
    let dir = tmp("not-a-model");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    refused(&gpt_fast(&["run", d, "-p", "x"]), 1, "is a folder without config.json");
    refused(&gpt_fast(&["info", d]), 1, "is a folder without config.json");
    refused(&gpt_fast(&["run", "/dev/null", "-p", "x"]), 1, "is not a regular file");
    let shard = fixture("tiny-llama/model-00001-of-00002.safetensors");
    refused(&gpt_fast(&["run", shard.to_str().unwrap(), "-p", "x"]), 1, "safetensors file, which holds weights only");
    let gguf = fixture("tiny-llama.gguf");
    refused(&gpt_fast(&["verify", gguf.to_str().unwrap()]), 1, "is a GGUF file; verify checks gpt-fast model files");
    let zip = dir.join("weights.zip");
    std::fs::write(&zip, b"PK\x03\x04 not a model").unwrap();
    refused(&gpt_fast(&["run", zip.to_str().unwrap(), "-p", "x"]), 1, "not a gpt-fast model file, nor a GGUF");
    // Writing: a missing output folder is named, never the temporary file.
    let out = gpt_fast(&["convert", "--synthetic", "test-llama", "-o", "/nonexistent/dir/m.bin"]);
    refused(&out, 1, "the output folder /nonexistent/dir does not exist");
    assert!(!stderr_of(&out).contains("tmp"), "{}", stderr_of(&out));
    refused(&gpt_fast(&["convert", "--synthetic", "test-llama", "-o", d]), 1, "is a folder");
    let json = dir.join("no/such/dir/stats.json");
    refused(&gpt_fast(&["run", model_arg(), "-p", "x", "--json-stats", json.to_str().unwrap()]), 1, "does not exist");
}

#[test]
fn out_of_range_values_are_usage_errors() {
    let m = model_arg();
    for (args, expect) in [
        (&["--temp", "-1"][..], "'--temp <T>'"),
        (&["-n", "18446744073709551615"], "or 1 to 2147483647"),
        (&["-n", "-2"], "takes -1"),
        (&["-c", "100000000"], "--ctx-size"),
        (&["-t", "100000"], "--threads"),
        (&["-t", "-1"], "--threads"),
        (&["-c", "-1"], "--ctx-size"),
        (&["--seed", "-5"], "takes -1 (random)"),
        (&["--repeat-last-n", "-2"], "--repeat-last-n"),
    ] {
        let out = gpt_fast(&[&["run", m, "-p", "x"][..], args].concat());
        refused(&out, 2, expect);
        assert!(!stderr_of(&out).contains("-- -1"), "clap's misleading tip: {}", stderr_of(&out));
    }
    refused(&gpt_fast(&["run", "-p", "x"]), 2, "no model: give MODEL or -m MODEL");
    refused(&gpt_fast(&["run", m, "-m", m, "-p", "x"]), 2, "the model is given twice");
    // -n far beyond the context budgets by the context, not by -n: no huge allocation.
    let out = gpt_fast(&["run", m, "-p", "x", "-n", "1000000000", "-c", "16", "--no-context-shift", "--temp", "0"]);
    assert!(stderr_of(&out).contains("context full"), "{}", stderr_of(&out));
    // More threads than CPUs: a warning, and the run goes on with one per CPU
    // (-t 1000 on 2 cores, spinning workers fighting for them, took minutes).
    let cpus = std::thread::available_parallelism().unwrap().get();
    let out = gpt_fast(&["run", m, "-p", "x", "-n", "2", "-v", "-t", "1000"]);
    succeeded(&out);
    let stderr = stderr_of(&out);
    assert!(stderr.contains(&format!("warning: -t 1000 is more threads than the {cpus} CPUs")), "{stderr}");
    assert!(stderr.contains(&format!(", {cpus} threads,")), "{stderr}");
}

#[test]
fn prompt_files_must_be_regular_and_bounded() {
    refused(&gpt_fast(&["run", model_arg(), "-f", "/dev/zero"]), 1, "not a regular file");
    refused(&gpt_fast(&["run", model_arg(), "-f", env!("CARGO_TARGET_TMPDIR")]), 1, "not a regular file");
    // A sparse file over the limit: refused without reading it all.
    let big = tmp("big.txt");
    std::fs::File::create(&big).unwrap().set_len(257 << 20).unwrap();
    refused(&gpt_fast(&["run", model_arg(), "-f", big.to_str().unwrap()]), 1, "more than 256 MiB");
    std::fs::remove_file(&big).unwrap();
}

#[test]
fn llama_cpp_flags() {
    let m = model_arg();
    let greedy = |extra: &[&str]| {
        let out =
            gpt_fast(&[&["run", "-m", m, "-p", "abc", "-n", "12", "--temp", "0", "--ignore-eos"][..], extra].concat());
        (succeeded(&out), stderr_of(&out))
    };
    let (full, _) = greedy(&[]);
    let continuation = full.strip_prefix("abc").unwrap().trim_end_matches('\n').to_string();
    assert!(!continuation.is_empty());
    // -m and the positional MODEL are the same model.
    assert_eq!(succeeded(&gpt_fast(&["run", m, "-p", "abc", "-n", "12", "--temp", "0", "--ignore-eos"])), full);
    // --no-display-prompt prints the continuation only.
    assert_eq!(greedy(&["--no-display-prompt"]).0, format!("{continuation}\n"));
    // -r: the text stops before the stop string's first appearance.
    let stop: String = continuation.chars().skip(2).take(1).collect();
    let at = continuation.find(&stop).unwrap();
    let (stopped, stderr) = greedy(&["-r", &stop, "--reverse-prompt", "never-there"]);
    assert_eq!(stopped, format!("abc{}\n", &continuation[..at]));
    assert!(stderr.contains("stopped:     stop string"), "{stderr}");
    // -f - reads the prompt from standard input.
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpt-fast"))
        .args(["run", m, "-f", "-", "-n", "12", "--temp", "0", "--ignore-eos"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"abc").unwrap();
    assert_eq!(succeeded(&child.wait_with_output().unwrap()), full);
    // --seed -1 is random, and -v prints the seed it took.
    let (_, stderr) = greedy(&["--seed", "-1", "-v"]);
    assert!(stderr.contains(", seed "), "{stderr}");
    // -n -1: until EOS, or here a full context.
    let out =
        gpt_fast(&["run", m, "-p", "abc", "-n", "-1", "-c", "16", "--no-context-shift", "--temp", "0", "--ignore-eos"]);
    assert!(stderr_of(&out).contains("stopped:     context full"), "{}", stderr_of(&out));
    // "abc" is 2 tokens: 14 more fill the context, and a 15th is sampled from the last.
    assert!(stderr_of(&out).contains(", 15 tokens,"), "{}", stderr_of(&out));
    // --repeat-last-n 0 turns the penalty off; -1 is accepted (the whole context).
    let sampled = |extra: &[&str]| {
        succeeded(&gpt_fast(
            &[&["run", m, "-p", "abc abc abc", "-n", "16", "--seed", "3", "--temp", "1.5"][..], extra].concat(),
        ))
    };
    assert_eq!(sampled(&["--repeat-penalty", "3", "--repeat-last-n", "0"]), sampled(&[]));
    succeeded(&gpt_fast(&["run", m, "-p", "x", "-n", "2", "--repeat-penalty", "1.1", "--repeat-last-n", "-1"]));
    // -ctk is --kv-type.
    let (_, stderr) = greedy(&["-ctk", "f32", "-v"]);
    assert!(stderr.contains("KV cache f32"), "{stderr}");
    let (_, stderr) = greedy(&["--cache-type-k", "f32", "-v"]);
    assert!(stderr.contains("KV cache f32"), "{stderr}");
}

#[test]
fn run_reports_timings_and_why_it_stopped() {
    let json = tmp("stats.json");
    let out =
        gpt_fast(&["run", model_arg(), "-p", "abc", "-n", "5", "--ignore-eos", "--json-stats", json.to_str().unwrap()]);
    succeeded(&out);
    let stderr = stderr_of(&out);
    for line in ["load:", "prompt:", "first token:", "generated:", "total:", "stopped:     -n reached"] {
        assert!(stderr.lines().any(|l| l.starts_with(line)), "no '{line}' in: {stderr}");
    }
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(stats["stop"], "max_tokens");
    assert_eq!(stats["prompt_tokens"], 2); // [260, 99]: see `gpt-fast tokenize`
    assert_eq!(stats["generated_tokens"], 5);
    for key in ["load_ms", "prompt_ms", "first_token_ms", "generate_ms", "total_ms", "generate_tokens_per_second"] {
        assert!(stats[key].as_f64().is_some_and(|v| v >= 0.0), "{key}: {stats}");
    }
}

/// Spawns an endless run and waits for its first output.
fn endless_run() -> (std::process::Child, Vec<u8>) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpt-fast"))
        .args(["run", model_arg(), "-p", "abc", "-n", "-1", "--ignore-eos", "-c", "32", "-t", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = vec![0u8; 64];
    child.stdout.as_mut().unwrap().read_exact(&mut seen).unwrap();
    (child, seen)
}

fn sigint(child: &std::process::Child) {
    signal(child, "INT");
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// Was: SIGINT or SIGTERM during `convert` left its temporary file (56 MB
/// for SmolLM2) beside the output.
#[test]
fn an_interrupted_convert_leaves_no_temporary_file() {
    for name in ["INT", "TERM"] {
        let dir = tmp(&format!("convert-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("model.bin");
        // 1.1 B parameters: long enough to be caught in the middle.
        let child = Command::new(env!("CARGO_BIN_EXE_gpt-fast"))
            .args(["convert", "--synthetic", "tinyllama-1.1b", "-q", "-o", out.to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while std::fs::read_dir(&dir).unwrap().next().is_none() {
            assert!(started.elapsed().as_secs() < 60, "no temporary file appeared");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        signal(&child, name);
        let status = child.wait_with_output().unwrap().status;
        assert_eq!(status.code(), Some(130), "SIG{name}");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "SIG{name} left {left:?}");
    }
}

/// Was: `run` used a file with corrupted tensor data as if it were sound;
/// `--verify` checks every tensor's checksum first.
#[test]
fn verify_flag_refuses_corrupted_tensor_data() {
    let file = gpt_fast::format::ModelFile::open(model()).unwrap();
    let tensor = file.tensor("blk.0.ffn_up.weight").unwrap().clone();
    let mut bytes = std::fs::read(model()).unwrap();
    bytes[tensor.offset as usize + 5] ^= 0x10;
    let corrupt = tmp("corrupt.bin");
    std::fs::write(&corrupt, &bytes).unwrap();
    let corrupt = corrupt.to_str().unwrap();
    let run = ["run", corrupt, "-p", "hi", "-n", "2", "--temp", "0"];
    succeeded(&gpt_fast(&run));
    refused(&gpt_fast(&[&run[..], &["--verify"]].concat()), 1, "blk.0.ffn_up.weight");
    for command in [
        &["perplexity", corrupt, "-f", "Cargo.toml", "-c", "16"][..],
        &["bench", corrupt, "-p", "4", "-n", "2"],
        &["chat", corrupt],
    ] {
        refused(&gpt_fast(&[command, &["--verify"]].concat()), 1, "checksum");
    }
    succeeded(&gpt_fast(&["run", model_arg(), "-p", "hi", "-n", "2", "--verify"]));
    // Was: serve took --verify and ignored it. It listens before the model is
    // loaded (health says when it is ready), so its error follows that line.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_gpt-fast"))
        .args(["serve", corrupt, "--port", "0", "--verify"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > std::time::Duration::from_secs(120) {
            let _ = serve.kill();
            panic!("serve --verify kept serving a corrupted file");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error: ") && stderr.contains("checksum") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn ctrl_c_stops_generation_cleanly() {
    let (child, seen) = endless_run();
    sigint(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopped:     interrupted (Ctrl-C)") && stderr.contains("generated:"), "{stderr}");
    assert_eq!(out.stdout.last(), Some(&b'\n'), "the line is ended");
    assert!(!seen.is_empty());
    // A second SIGINT exits at once, also with 130.
    let (child, _) = endless_run();
    sigint(&child);
    sigint(&child);
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(130));
}

#[test]
fn gguf_and_hf_folders_run_through_the_cache() {
    let cache = tmp("xdg-cache");
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache).unwrap();
    let with_cache = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gpt-fast")).args(args).env("XDG_CACHE_HOME", &cache).output().unwrap()
    };
    let gguf = fixture("tiny-llama.gguf");
    let run = ["run", gguf.to_str().unwrap(), "-p", "hello", "-n", "6", "--temp", "0"];
    let first = with_cache(&run);
    let text = succeeded(&first);
    assert!(
        stderr_of(&first).contains("is a GGUF file; converting it to its own weight types once, into"),
        "{}",
        stderr_of(&first)
    );
    assert!(stderr_of(&first).contains("gpt-fast: converted in "), "{}", stderr_of(&first));
    let entries = || -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(cache.join("gpt-fast"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let cached = entries();
    assert_eq!(cached.len(), 1, "one whole file, no temporary left: {cached:?}");
    assert!(stderr_of(&first).contains(&cached[0]));
    let second = with_cache(&run);
    assert_eq!(succeeded(&second), text);
    assert!(stderr_of(&second).contains("using its conversion to its own weight types"), "{}", stderr_of(&second));
    assert_eq!(entries(), cached, "the second run hits the cache");
    // --quant picks another entry; the other commands take the same sources.
    succeeded(&with_cache(&["info", gguf.to_str().unwrap()]));
    let f16 = with_cache(&[&run[..], &["--quant", "f16"]].concat());
    succeeded(&f16);
    assert_eq!(entries().len(), 2);
    let ids = succeeded(&with_cache(&["tokenize", gguf.to_str().unwrap(), "hello"]));
    assert!(ids.starts_with('['), "{ids}");
    let info = succeeded(&with_cache(&["info", fixture("tiny-llama").to_str().unwrap()]));
    assert!(info.contains("architecture:  llama"), "{info}");
    let bench = with_cache(&["bench", "-m", gguf.to_str().unwrap(), "-p", "4", "-n", "2", "-r", "1", "--json"]);
    succeeded(&bench);
    assert!(stderr_of(&bench).contains("using its conversion to its own weight types"));
}

#[test]
fn info_prints_no_debug_text() {
    let info = succeeded(&gpt_fast(&["info", model_arg()]));
    assert!(!info.contains("Some(") && !info.contains("None") && !info.contains("true"), "{info}");
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let script = succeeded(&gpt_fast(&["completions", shell]));
        assert!(script.contains("gpt-fast") && script.contains("reverse-prompt"), "{shell}: {script}");
    }
    refused(&gpt_fast(&["completions", "cmd.exe"]), 2, "invalid value");
    // Bash completes a subcommand's options (clap_complete alone does not
    // for a hyphenated bin name).
    let script = tmp("completion.bash");
    std::fs::write(&script, gpt_fast(&["completions", "bash"]).stdout).unwrap();
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let shell = format!(
            "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; _gpt__fast gpt-fast '{}' '{}'; echo \"${{COMPREPLY[*]}}\"",
            script.display(),
            words.join(" "),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2]
        );
        String::from_utf8_lossy(&Command::new("bash").args(["-c", &shell]).output().unwrap().stdout).into_owned()
    };
    assert!(complete("gpt-fast run --rev").contains("--reverse-prompt"), "{}", complete("gpt-fast run --rev"));
    assert!(complete("gpt-fast ru").contains("run"));
}

#[test]
fn convert_subcommand_writes_a_model_file() {
    let out_path = tmp("converted.bin");
    let gguf = fixture("tiny-llama.gguf");
    let out = gpt_fast(&["convert", gguf.to_str().unwrap(), "-o", out_path.to_str().unwrap(), "--quant", "f16"]);
    succeeded(&out);
    assert!(stderr_of(&out).contains("wrote "), "{}", stderr_of(&out));
    let info = succeeded(&gpt_fast(&["info", out_path.to_str().unwrap()]));
    assert!(info.contains("weight type:   f16"), "{info}");
    succeeded(&gpt_fast(&["verify", out_path.to_str().unwrap()]));
}

/// A model file without a chat template (and without another format's turn
/// markers) chats in ChatML, and says so.
#[test]
fn chat_without_a_template_falls_back_to_chatml() {
    let out = gpt_fast(&["run", model_arg(), "-p", "x", "--chat", "-n", "2", "--temp", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("has no chat template; using the built-in chatml format"), "{stderr}");
}

/// `chat` checks its model and options before it greets (the REPL itself
/// is driven under a pseudo-terminal in tests/chat_repl.rs).
#[test]
fn chat_refuses_bad_inputs() {
    refused(&gpt_fast(&["chat", "/nonexistent/model.gguf"]), 1, "/nonexistent/model.gguf: No such file");
    refused(&gpt_fast(&["chat", env!("CARGO_TARGET_TMPDIR")]), 1, "is a folder without config.json");
    refused(&gpt_fast(&["chat"]), 2, "no model: give MODEL or -m MODEL");
    refused(&gpt_fast(&["chat", model_arg(), "--temp", "-1"]), 2, "takes a number >= 0");
    refused(&gpt_fast(&["chat", model_arg(), "--top-p", "2"]), 1, "top");
}

/// zsh and fish load their completion scripts and complete a subcommand's
/// option with them. Each shell is skipped, with the reason printed, where it
/// is not installed; `.ci/run` installs both and sets
/// GPT_FAST_REQUIRE_SHELLS=1, so CI never skips.
#[test]
fn zsh_and_fish_load_their_completions() {
    let required = std::env::var_os("GPT_FAST_REQUIRE_SHELLS").is_some();
    let have = |shell: &str| Command::new(shell).arg("-c").arg("exit 0").output().is_ok_and(|o| o.status.success());
    for shell in ["zsh", "fish"] {
        if !have(shell) {
            assert!(!required, "{shell} is not installed but GPT_FAST_REQUIRE_SHELLS is set");
            println!("skipped: {shell} is not installed (apt-get install {shell}; .ci/run does)");
            continue;
        }
        let script = tmp(&format!("completion.{shell}"));
        std::fs::write(&script, succeeded(&gpt_fast(&["completions", shell]))).unwrap();
        let path = script.display();
        // zsh completes only in an interactive shell: one under zpty gets
        // "--rev" and a Tab, and must print the completed option (`timeout`
        // bounds the wait for it).
        let (program, args, expect) = match shell {
            "zsh" => (
                "timeout",
                vec![
                    "60".to_string(),
                    "zsh".into(),
                    "-f".into(),
                    "-c".into(),
                    format!(
                        "zmodload zsh/zpty && zpty z zsh -f -i && \
                     zpty -w z \"autoload -Uz compinit; compinit -u -D; source '{path}'\" && \
                     zpty -w -n z $'gpt-fast run --rev\\t' && zpty -r z out '*--reverse-prompt*' && print completed"
                    ),
                ],
                "completed",
            ),
            _ => (
                "fish",
                vec!["-c".to_string(), format!("source '{path}'; and complete -C 'gpt-fast run --rev'")],
                "--reverse-prompt",
            ),
        };
        let out = Command::new(program).args(&args).env("HOME", env!("CARGO_TARGET_TMPDIR")).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && stderr.is_empty(), "{shell}: {:?} {stderr}", out.status);
        assert!(stdout.contains(expect), "{shell}: '{expect}' not in {stdout}");
    }
}

/// The real SmolLM2-135M-Instruct GGUF (tools/fetch-model.sh fetches it once).
fn smollm2_gguf() -> String {
    let fetched = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/fetch-model.sh")).output().unwrap();
    assert!(fetched.status.success(), "fetch-model.sh: {}", stderr_of(&fetched));
    String::from_utf8(fetched.stdout).unwrap().trim().to_string()
}

/// Was: a run that stopped at EOS after 29 of 32 tokens said nothing. The
/// real model answers "Hi!" in a few tokens and ends its turn: reported as
/// EOS, in the text and the JSON; with --ignore-eos it runs to -n.
#[test]
fn run_reports_a_stop_at_eos() {
    let (gguf, cache, json) = (smollm2_gguf(), tmp("eos-cache"), tmp("eos-stats.json"));
    let run = |extra: &[&str]| {
        let args =
            ["run", &gguf, "--chat", "-p", "Hi!", "-n", "64", "--temp", "0", "--json-stats", json.to_str().unwrap()];
        let mut command = Command::new(env!("CARGO_BIN_EXE_gpt-fast"));
        let out = command.args(args).args(extra).env("XDG_CACHE_HOME", &cache).output().unwrap();
        succeeded(&out);
        let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        (stderr_of(&out), stats)
    };
    let (stderr, stats) = run(&[]);
    assert!(stderr.contains("stopped:     end-of-sequence or end-of-turn token (EOS)"), "{stderr}");
    assert_eq!(stats["stop"], "eos");
    assert!(stats["generated_tokens"].as_u64().is_some_and(|n| (1..64).contains(&n)), "{stats}");
    let (stderr, stats) = run(&["--ignore-eos"]);
    assert!(stderr.contains("stopped:     -n reached"), "{stderr}");
    assert_eq!(stats["stop"], "max_tokens");
    assert_eq!(stats["generated_tokens"], 64);
}

/// The shipped SmolLM2 Q4_1 GGUF through the binary: `convert` without
/// --quant keeps its Q4_1 matrices as q4_1 (its Q8_0 embedding as q8, no
/// note: both are native), `info` says so, and `--quant q8` still converts
/// everything.
#[test]
fn convert_keeps_a_q4_1_gguf_as_q4_1_by_default() {
    let gguf = smollm2_gguf();
    let out = tmp("smollm2-kept.bin");
    let converted = gpt_fast(&["convert", &gguf, "-o", out.to_str().unwrap()]);
    succeeded(&converted);
    assert!(!stderr_of(&converted).contains("note:"), "{}", stderr_of(&converted));
    let info = succeeded(&gpt_fast(&["info", out.to_str().unwrap()]));
    assert!(info.contains("weight type:   q4_1"), "{info}");
    assert!(info.contains("tensor types:  f32 x61 (0.1 MiB), q8 x1 (28.7 MiB), q4_1 x120 ("), "{info}");
    // Q4_1 is 20 bytes per 32 values.
    assert!(info.contains("bits/weight:   f32 32.00, q8 8.50, q4_1 5.00 (whole file "), "{info}");
    for group in ["attn_qkv", "attn_output", "ffn_up", "ffn_down"] {
        let line = info.lines().find(|l| l.contains(&format!("blk.*.{group}.weight"))).unwrap();
        assert!(line.contains(" q4_1 ") && line.contains("x30"), "{line}");
    }
    succeeded(&gpt_fast(&["convert", &gguf, "-o", out.to_str().unwrap(), "--quant", "q8"]));
    let info = succeeded(&gpt_fast(&["info", out.to_str().unwrap()]));
    assert!(info.contains("tensor types:  f32 x61 (0.1 MiB), q8 x121 ("), "{info}");
    std::fs::remove_file(&out).unwrap();
}

/// Progress bars are drawn on a terminal and only there: `convert`, a GGUF
/// converted into the cache by `run`, `perplexity` (with its ETA) and
/// `bench` each draw one on a pseudo-terminal, and none into a pipe.
#[test]
fn progress_bars_on_a_terminal_only() {
    let gguf = fixture("tiny-llama.gguf");
    let text = tmp("progress-text.txt");
    std::fs::write(&text, "the quick brown fox jumps over the lazy dog. ".repeat(20)).unwrap();
    let converted = tmp("progress-converted.bin");
    let cache = tmp("progress-cache");
    let [gguf, text, converted] = [&gguf, &text, &converted].map(|p| p.to_str().unwrap().to_string());
    let commands: [(&[&str], &str); 4] = [
        (&["convert", &gguf, "-o", &converted, "--quant", "f16"], " tensors, "),
        (&["run", &gguf, "-p", "hello", "-n", "2"], " tensors, "),
        (&["perplexity", &gguf, "-f", &text, "-c", "32"], " chunks, "),
        (&["bench", model_arg(), "-p", "8", "-n", "4", "-r", "1"], " tests, "),
    ];
    for (args, bar) in commands {
        let command = || {
            let _ = std::fs::remove_dir_all(&cache);
            let mut command = Command::new(env!("CARGO_BIN_EXE_gpt-fast"));
            command.args(args).env("XDG_CACHE_HOME", &cache).env("TERM", "xterm").env_remove("GPT_FAST_ISA");
            command
        };
        let mut session = rexpect::session::spawn_command(command(), Some(120_000)).unwrap();
        session.exp_regex(&format!(r"{bar}[^\r\n]*ETA")).unwrap_or_else(|e| panic!("{args:?}: no bar: {e}"));
        session.exp_eof().unwrap();
        let status = session.process.wait().unwrap();
        assert!(matches!(status, rexpect::process::wait::WaitStatus::Exited(_, 0)), "{args:?}: {status:?}");
        let piped = command().output().unwrap();
        succeeded(&piped);
        let stderr = stderr_of(&piped);
        assert!(!stderr.contains(bar) && !stderr.contains('\x1b') && !stderr.contains('\r'), "{args:?}: {stderr:?}");
    }
}

/// A GGUF the converter cannot read (here an architecture it does not
/// know) is refused with the reason, after the line saying it was being
/// converted, and leaves nothing in the cache.
#[test]
fn a_gguf_that_cannot_be_converted_says_why() {
    let string = |s: &str| [&(s.len() as u64).to_le_bytes()[..], s.as_bytes()].concat();
    // GGUF v3, no tensors, one key: general.architecture = "bert" (value type 8: string).
    let header = [&b"GGUF"[..], &3u32.to_le_bytes(), &0u64.to_le_bytes(), &1u64.to_le_bytes()].concat();
    let key = [string("general.architecture"), 8u32.to_le_bytes().to_vec(), string("bert")].concat();
    let gguf = tmp("bert.gguf");
    std::fs::write(&gguf, [header, key].concat()).unwrap();
    let cache = tmp("bert-cache");
    let out = Command::new(env!("CARGO_BIN_EXE_gpt-fast"))
        .args(["run", gguf.to_str().unwrap(), "-p", "hi"])
        .env("XDG_CACHE_HOME", &cache)
        .output()
        .unwrap();
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "{:?}", String::from_utf8_lossy(&out.stdout));
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].contains("is a GGUF file; converting it"), "{stderr}");
    assert!(
        lines[1].starts_with("gpt-fast: error: ") && lines[1].contains("unsupported architecture 'bert'"),
        "{stderr}"
    );
    let left = std::fs::read_dir(cache.join("gpt-fast")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "nothing cached");
}
