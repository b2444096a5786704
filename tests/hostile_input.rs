//! Hostile model files and sizes (issue #18): counts that a file cannot back
//! and sizes above the memory there is are refused with an error before
//! anything is allocated from them. Each test failed (hang, abort or panic)
//! before its fix.

use std::path::{Path, PathBuf};
use std::process::Command;

use gpt_fast::format::spec::{RawHeader, HEADER_BYTES, HEADER_CRC_START};
use gpt_fast::format::{Arch, DType, HParams, LoadErrorKind, ModelFile};
use gpt_fast::model::{Model, ModelOptions};
use gpt_fast::session::{Session, SessionError, SessionOptions};

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hostile-{name}-{}", std::process::id()))
}

fn synthetic(name: &str, h: &HParams) -> PathBuf {
    let path = tmp(name);
    gpt_fast::synthetic::write(&path, h, DType::Q8, 3, |_, _| {}).unwrap();
    path
}

/// Edits the header and recomputes its CRC, so that only the new checks can
/// refuse the file.
fn with_header(bytes: &[u8], edit: impl FnOnce(&mut RawHeader)) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut h: RawHeader = bytemuck::pod_read_unaligned(&out[..HEADER_BYTES as usize]);
    edit(&mut h);
    out[..HEADER_BYTES as usize].copy_from_slice(bytemuck::bytes_of(&h));
    let crc = crc32fast::hash(&out[HEADER_CRC_START..h.data_offset as usize]);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn a_layer_count_the_directory_cannot_hold_is_refused_before_listing_tensors() {
    let h = gpt_fast::synthetic::config("test-llama").unwrap();
    let bytes = std::fs::read(synthetic("layers", &h)).unwrap();
    // Was: 2 GB of tensor names built from the count, then killed.
    for n_layers in [1 << 24, (1 << 24) - 1, 100_000] {
        let path = tmp("layers-mutant");
        std::fs::write(&path, with_header(&bytes, |h| h.n_layers = n_layers)).unwrap();
        match ModelFile::open(&path).err().expect("refused").kind {
            LoadErrorKind::HParams(reason) => assert!(reason.contains("call for"), "{reason}"),
            other => panic!("n_layers {n_layers}: {other}"),
        }
    }
}

/// A Llama whose KV cache is 64 KiB per position in f16: at its header's
/// max_seq_len of 2^24 that is 1 TiB, more than any test machine has.
fn wide_kv_llama() -> HParams {
    HParams {
        arch: Arch::Llama,
        n_layers: 4,
        dim: 64,
        n_heads: 16,
        n_kv_heads: 16,
        head_dim: 256,
        ffn_dim: 64,
        vocab_size: 300,
        max_seq_len: 1 << 24,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        tied_embeddings: true,
        variant: Default::default(),
    }
}

#[test]
fn a_kv_cache_above_available_memory_is_an_error_not_a_panic() {
    let path = synthetic("huge-context", &wide_kv_llama());
    ModelFile::open(&path).unwrap().verify().unwrap();
    let model = Model::open(&path, ModelOptions::default()).unwrap();
    // Was: "allocating the KV cache: Cannot allocate memory" panic, or the
    // cache filled all memory first.
    let options = SessionOptions { context: 1 << 24, threads: 1, ..Default::default() };
    match Session::new(&model, options).err().expect("refused") {
        SessionError::OutOfMemory { context, needed, available } => {
            assert_eq!(context, 1 << 24);
            assert!(needed > 1 << 40 && needed > available, "{needed} {available}");
        }
        other => panic!("{other}"),
    }
    // An explicit cap is honoured too, and named in the message.
    let capped = SessionOptions { context: 4096, threads: 1, max_memory: 1 << 20, ..Default::default() };
    let err = Session::new(&model, capped).err().expect("refused").to_string();
    assert!(err.contains("1.0 MiB available") && err.contains("4096"), "{err}");
    // Within the budget, the same model runs.
    let fits = SessionOptions { context: 64, threads: 1, max_memory: 1 << 30, ..Default::default() };
    let mut session = Session::new(&model, fits).unwrap();
    assert_eq!(session.eval(&[1, 2, 3]).unwrap().len(), 300);
}

#[cfg(unix)]
#[test]
fn the_writer_replaces_only_regular_files_and_cleans_up_after_killed_writers() {
    use gpt_fast::format::WriteError;
    use std::os::unix::fs::FileTypeExt;
    let h = gpt_fast::synthetic::config("test-llama").unwrap();
    let dir = tmp("targets");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |path: &Path| gpt_fast::synthetic::write(path, &h, DType::Q8, 3, |_, _| {});

    // Was: renamed over whatever was there (a device node as root, a symlink).
    let victim = dir.join("victim");
    std::fs::write(&victim, b"keep").unwrap();
    let link = dir.join("link.gpt");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let fifo = dir.join("fifo.gpt");
    let _ = std::fs::remove_file(&fifo);
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let subdir = dir.join("sub.gpt");
    std::fs::create_dir_all(&subdir).unwrap();
    for target in [&link, &fifo, &subdir] {
        let err = write(target).expect_err("refused");
        assert!(matches!(err, WriteError::Target { .. }), "{}: {err}", target.display());
    }
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());

    // A temporary file of a writer that was killed (its pid is gone) is
    // removed by the next write to the same target; a live one's is kept.
    let out = dir.join("model.gpt");
    let stale = dir.join("model.gpt.tmp4194305-0"); // above Linux's pid_max
    let live = dir.join(format!("model.gpt.tmp{}-99", std::process::id()));
    std::fs::write(&stale, b"left by SIGKILL").unwrap();
    std::fs::write(&live, b"in use").unwrap();
    write(&out).unwrap();
    assert!(!stale.exists(), "stale temporary file left");
    assert!(live.exists());
    std::fs::remove_file(&live).unwrap();
    // Nothing but the output remains.
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["fifo.gpt", "link.gpt", "model.gpt", "sub.gpt", "victim"]);
}

#[test]
fn perplexity_with_nothing_scored_is_an_error_not_nan() {
    let h = gpt_fast::synthetic::config("test-llama").unwrap();
    let model = Model::open(&synthetic("ppl", &h), ModelOptions::default()).unwrap();
    let tokens: Vec<u32> = (0..40).map(|i| 1 + i % 250).collect();
    let run =
        |context| gpt_fast::perplexity::perplexity(&model, &tokens, context, 16, 1, Default::default(), |_, _, _| {});
    // Was: Ok with PPL = NaN and 0 scored tokens.
    let err = run(2).expect_err("refused");
    assert!(matches!(err, gpt_fast::perplexity::PerplexityError::NothingScored { context: 2 }), "{err}");
    let ok = run(4).unwrap();
    assert!(ok.scored_tokens > 0 && ok.ppl.is_finite());
}

#[test]
fn verify_runs_the_checks_open_runs_and_open_can_verify_checksums() {
    use gpt_fast::format::spec::RawHeader;
    let h = gpt_fast::synthetic::config("test-llama").unwrap();
    let path = synthetic("verify", &h);
    let bytes = std::fs::read(&path).unwrap();
    // A merge whose result is not its two halves joined: the tokenizer
    // section decodes, the header CRC is recomputed, so only the tokenizer's
    // own consistency check (Model::open's) can refuse it.
    let header: RawHeader = bytemuck::pod_read_unaligned(&bytes[..HEADER_BYTES as usize]);
    let section = header.tok_offset as usize;
    let n_tokens = u32::from_le_bytes(bytes[section + 8..section + 12].try_into().unwrap()) as usize;
    let merges = section + 48 + 4 * n_tokens + n_tokens.next_multiple_of(4);
    let mut bad = bytes.clone();
    bad[merges + 8..merges + 12].copy_from_slice(&0u32.to_le_bytes()); // first merge's result: token 0
    let bad = with_header(&bad, |_| {});
    let bad_path = tmp("verify-tokenizer");
    std::fs::write(&bad_path, &bad).unwrap();
    ModelFile::open(&bad_path).unwrap().verify().unwrap(); // checksums alone say OK
    assert!(Model::open(&bad_path, ModelOptions::default()).is_err());
    // Was: "OK" from verify for a file that run refuses.
    let out = Command::new(env!("CARGO_BIN_EXE_gpt-fast")).arg("verify").arg(&bad_path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("merge"), "{stderr}");

    // Corrupted tensor data: open runs normally unless asked to verify.
    let t = ModelFile::open(&path).unwrap().tensor("blk.1.ffn_down.weight").unwrap().clone();
    let mut corrupt = bytes;
    corrupt[t.offset as usize + 3] ^= 0x40;
    let corrupt_path = tmp("verify-data");
    std::fs::write(&corrupt_path, &corrupt).unwrap();
    assert!(Model::open(&corrupt_path, ModelOptions::default()).is_ok());
    let verify = ModelOptions { verify: true, ..Default::default() };
    let err = Model::open(&corrupt_path, verify).err().expect("refused").to_string();
    assert!(err.contains("blk.1.ffn_down.weight") && err.contains("checksum"), "{err}");
}

/// Child half of the SIGBUS test: maps the model named by the variable,
/// says so, waits for a line on stdin, then reads every tensor byte (or
/// raises a SIGBUS that is not about the mapping).
fn sigbus_child() -> Option<()> {
    use std::io::{BufRead, Write};
    let path = std::env::var_os("HOSTILE_SIGBUS_CHILD")?;
    let file = ModelFile::open(Path::new(&path)).unwrap();
    println!("mapped");
    std::io::stdout().flush().unwrap();
    std::io::stdin().lock().read_line(&mut String::new()).unwrap();
    if std::env::var_os("HOSTILE_SIGBUS_RAISE").is_some() {
        // SAFETY: raising a signal in this process; its default action ends it.
        unsafe { libc::raise(libc::SIGBUS) };
    }
    let sum: u64 = file.tensors().iter().map(|t| file.tensor_bytes(t).iter().map(|&b| u64::from(b)).sum::<u64>()).sum();
    println!("survived {sum}");
    std::process::exit(0);
}

#[cfg(target_os = "linux")]
#[test]
fn a_model_file_truncated_while_mapped_ends_the_process_with_a_message() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    if sigbus_child().is_some() {
        return;
    }
    let h = gpt_fast::synthetic::config("test-llama").unwrap();
    let original = std::fs::read(synthetic("sigbus", &h)).unwrap();
    for raise in [false, true] {
        let path = tmp(&format!("sigbus-{raise}"));
        std::fs::write(&path, &original).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "a_model_file_truncated_while_mapped_ends_the_process_with_a_message", "--nocapture"])
            .env("HOSTILE_SIGBUS_CHILD", &path)
            .envs(raise.then_some(("HOSTILE_SIGBUS_RAISE", "1")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("mapped") {
            line.clear();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "child ended before mapping");
        }
        // Truncated under the live mapping (as `cp` over it or a shrinking
        // download would). Was: killed by SIGBUS without a word.
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if raise {
            // A SIGBUS that is not a fault in a model mapping keeps its default action.
            assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{stderr}");
        } else {
            assert_eq!(out.status.code(), Some(gpt_fast::mmap::SIGBUS_EXIT_CODE), "{:?} {stderr}", out.status);
            assert!(stderr.contains("model file changed or truncated while in use"), "{stderr}");
        }
    }
}
