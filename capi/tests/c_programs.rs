//! The C ABI from C: examples/c/generate.c (linked against the static
//! library) and tests/c/error_paths.c (against the shared one), compiled with
//! `cc` against the committed header and run on SmolLM2-135M-Instruct
//! converted to q8. The example's text must be the Rust API's for the same
//! prompt. Then both run under valgrind: no invalid access, no uninitialised
//! read, nothing definitely or indirectly lost, on the happy path and on each
//! error path. Valgrind runs them on the synthetic test-llama model (the same
//! code paths: SmolLM2 took over 9 minutes there). Without valgrind that
//! part is skipped with a note, unless GPT_FAST_REQUIRE_VALGRIND=1 (CI sets
//! it; .ci/run installs valgrind).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gpt_fast::format::DType;
use gpt_fast::{Flow, GenerateParams, Generator, Model, ModelOptions, SamplerParams, SessionOptions};

const PROMPT: &str = "The capital of France is";
const MAX_TOKENS: usize = 12;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The directory cargo put this crate's libraries in (target/<profile>, the
/// parent of the `deps` folder holding this test).
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for lib in ["libgpt_fast_capi.a", "libgpt_fast_capi.so"] {
        assert!(
            dir.join(lib).is_file(),
            "{lib} not found in {}: build it first with `cargo build --profile test -p gpt-fast-capi` (tools/test.sh does)",
            dir.display()
        );
    }
    dir
}

fn compile(source: &Path, library: &str, out: &Path) {
    let lib_dir = library_dir();
    let mut cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cc.args(["-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(workspace().join("capi/include"))
        .arg(source)
        .arg("-o")
        .arg(out);
    match library {
        "static" => cc.arg(lib_dir.join("libgpt_fast_capi.a")),
        _ => cc.arg("-L").arg(&lib_dir).arg("-lgpt_fast_capi").arg(format!("-Wl,-rpath,{}", lib_dir.display())),
    };
    let done = cc.args(["-lpthread", "-ldl", "-lm"]).output().expect("run cc");
    assert!(done.status.success(), "cc {}: {}", source.display(), String::from_utf8_lossy(&done.stderr));
}

fn smollm2_q8() -> PathBuf {
    let out = Command::new(workspace().join("tools/fetch-model.sh")).output().expect("run tools/fetch-model.sh");
    assert!(out.status.success(), "fetch-model.sh: {}", String::from_utf8_lossy(&out.stderr));
    let gguf = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let source = gpt_fast::import::from_gguf::GgufSource::open(&gguf).unwrap();
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("capi-smollm2-q8-{}.bin", std::process::id()));
    gpt_fast::import::convert::convert(&source, &gguf, &path, DType::Q8, |_, _, _| {}).unwrap();
    path
}

fn rust_completion(model: &Path) -> String {
    let model = Model::open(model, ModelOptions::default()).unwrap();
    let mut generator =
        Generator::new(&model, SessionOptions { context: 512, threads: 2, ..Default::default() }).unwrap();
    let params = GenerateParams { max_tokens: MAX_TOKENS, sampler: SamplerParams::greedy(), ..Default::default() };
    let mut text = String::new();
    generator
        .generate(PROMPT, true, &params, |piece| {
            text.push_str(piece);
            Flow::Continue
        })
        .unwrap();
    text
}

fn run(program: &Path, args: &[&str], valgrind: bool) -> Output {
    let mut command = if valgrind {
        let mut v = Command::new("valgrind");
        // Valgrind does not emulate AVX-512; "definite,indirect" leaves out
        // the shared thread pool, alive (still reachable) until exit by design.
        v.env("GPT_FAST_ISA", "avx2").args([
            "--error-exitcode=99",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect",
        ]);
        v.arg(program);
        v
    } else {
        Command::new(program)
    };
    command.args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_c_example_and_the_error_paths_run_clean() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let example = tmp.join(format!("c-generate-{}", std::process::id()));
    let error_paths = tmp.join(format!("c-error-paths-{}", std::process::id()));
    compile(&workspace().join("examples/c/generate.c"), "static", &example);
    compile(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/error_paths.c"), "shared", &error_paths);
    let smollm2 = smollm2_q8();
    let synthetic = tmp.join(format!("c-test-llama-{}.bin", std::process::id()));
    let h = gpt_fast::synthetic::config("test-llama").unwrap();
    gpt_fast::synthetic::write(&synthetic, &h, DType::Q8, 1, |_, _| {}).unwrap();

    let have_valgrind = Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success());
    if !have_valgrind {
        let required = std::env::var_os("GPT_FAST_REQUIRE_VALGRIND").is_some();
        assert!(!required, "GPT_FAST_REQUIRE_VALGRIND is set but valgrind is missing");
        eprintln!("note: valgrind not found, the memory checks are skipped");
    }
    let max = MAX_TOKENS.to_string();
    for (model, valgrind) in [(&smollm2, false), (&synthetic, true)] {
        if valgrind && !have_valgrind {
            continue;
        }
        let model_arg = model.to_str().unwrap();
        let how = if valgrind { "under valgrind" } else { "natively" };

        let done = run(&example, &[model_arg, PROMPT, &max], valgrind);
        assert!(done.status.success(), "generate.c {how}: {:?}\n{}", done.status, text(&done.stderr));
        assert!(text(&done.stderr).contains("most likely next token"), "{}", text(&done.stderr));
        if !valgrind {
            assert_eq!(text(&done.stdout), format!("{PROMPT}{}\n", rust_completion(model)));
        }

        let done = run(&example, &[model_arg, PROMPT, "50", "3"], valgrind);
        assert!(done.status.success(), "generate.c cancelled {how}: {}", text(&done.stderr));
        if !valgrind {
            assert!(text(&done.stderr).contains("stopped by the callback"), "{}", text(&done.stderr));
        }

        let done = run(&example, &["/no/such/model.bin", PROMPT], valgrind);
        assert_eq!(done.status.code(), Some(1), "generate.c, missing model {how}: {}", text(&done.stderr));
        // One line (valgrind adds its own, prefixed with ==pid==).
        let stderr = text(&done.stderr);
        let ours: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("==")).collect();
        assert_eq!(ours.len(), 1, "{stderr}");
        assert!(
            ours[0].starts_with("generate: opening the model:") && ours[0].contains("/no/such/model.bin"),
            "{stderr}"
        );

        let done = run(&error_paths, &[model_arg], valgrind);
        assert!(done.status.success(), "error_paths.c {how}: {:?}\n{}", done.status, text(&done.stderr));
        assert_eq!(text(&done.stdout).lines().count(), 15, "{}", text(&done.stdout));
    }
    for path in [&example, &error_paths, &smollm2, &synthetic] {
        std::fs::remove_file(path).unwrap();
    }
}
