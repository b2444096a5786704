//! Hostile checkpoints (issue #18): metadata counts and ids that the file
//! cannot back are refused before anything is sized by them. Each test failed
//! (abort, hang, or gigabytes of memory) before its fix.

use std::path::{Path, PathBuf};

use gpt_fast::format::DType;
use gpt_fast::import::convert::convert;
use gpt_fast::import::from_gguf::GgufSource;
use gpt_fast::import::gguf::{GgufErrorKind, GgufFile, MAX_METADATA_VALUES};
use gpt_fast::import::tokenizer_import::{from_hf_tokenizer_json, ImportError};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf")
}

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hostile-import-{name}-{}", std::process::id()))
}

/// The tiny Llama GGUF with the u32 value of metadata key `key` replaced.
fn gguf_with_u32(key: &str, value: u32) -> PathBuf {
    let mut bytes = std::fs::read(fixtures().join("tiny-llama.gguf")).unwrap();
    let mut needle = (key.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(key.as_bytes());
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("key in the fixture") + needle.len();
    assert_eq!(bytes[at..at + 4], 4u32.to_le_bytes(), "{key} is a u32");
    bytes[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
    let path = tmp(key);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn convert_error(input: &Path) -> String {
    let source = GgufSource::open(input).unwrap();
    let out = tmp("out.gpt");
    let err = convert(&source, input, &out, DType::Q8, |_, _, _| {}).expect_err("refused").to_string();
    assert!(!out.exists(), "nothing written at -o");
    err
}

#[test]
fn huge_gguf_layer_and_ffn_counts_are_refused_before_allocating() {
    // Was: SIGABRT after 5.7 GB of tensor names (block_count) and an abort
    // allocating 77 GB for one tensor (feed_forward_length).
    for (key, value) in [("llama.block_count", 16_777_215), ("llama.feed_forward_length", 16_777_216)] {
        let err = convert_error(&gguf_with_u32(key, value));
        assert!(err.contains("call for") && err.contains("the checkpoint has"), "{key}: {err}");
    }
    // A count that the checkpoint does back still converts.
    let good = fixtures().join("tiny-llama.gguf");
    let source = GgufSource::open(&good).unwrap();
    convert(&source, &good, &tmp("good.gpt"), DType::Q8, |_, _, _| {}).unwrap();
}

#[test]
fn a_byte_array_as_long_as_the_file_is_refused_before_decoding() {
    // One metadata entry: a u8 array of more values than the budget, all
    // present in the file. Was: 32 bytes of memory per file byte (3 GB for a
    // 98 MB file) before any error.
    let count = MAX_METADATA_VALUES + 1;
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes()); // tensors
    bytes.extend_from_slice(&1u64.to_le_bytes()); // metadata entries
    bytes.extend_from_slice(&4u64.to_le_bytes());
    bytes.extend_from_slice(b"blob");
    bytes.extend_from_slice(&9u32.to_le_bytes()); // array
    bytes.extend_from_slice(&0u32.to_le_bytes()); // of u8
    bytes.extend_from_slice(&count.to_le_bytes());
    bytes.resize(bytes.len() + count as usize, 7);
    let path = tmp("u8-array");
    std::fs::write(&path, bytes).unwrap();
    let Err(err) = GgufFile::open(&path) else { panic!("opened") };
    assert!(matches!(err.kind, GgufErrorKind::TooManyValues { .. }), "{err}");
}

#[test]
fn a_tokenizer_json_id_past_its_entries_is_refused_before_sizing_the_table() {
    // Was: an abort allocating 137 GB (resize to id + 1).
    let text = std::fs::read_to_string(fixtures().join("tiny-llama/tokenizer.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    let key = vocab.keys().next().unwrap().clone();
    vocab.insert(key, serde_json::json!(4_294_967_295u64));
    match from_hf_tokenizer_json(&json) {
        Err(ImportError::IdPastEntries { id, .. }) => assert_eq!(id, u32::MAX),
        other => panic!("{other:?}"),
    }
}

#[test]
fn huge_config_json_counts_are_refused_before_allocating() {
    use gpt_fast::import::from_hf::HfSource;
    for (key, value) in [("num_hidden_layers", 16_777_215u32), ("intermediate_size", 16_777_216)] {
        let dir = tmp(&format!("hf-{key}"));
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(fixtures().join("tiny-llama")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        config[key] = serde_json::json!(value);
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let source = HfSource::open(&dir).unwrap();
        let out = tmp("hf-out.gpt");
        let err = convert(&source, &dir, &out, DType::Q8, |_, _, _| {}).expect_err("refused").to_string();
        assert!(err.contains("call for"), "{key}: {err}");
    }
}

#[test]
fn a_garbage_key_is_shown_escaped_and_cut() {
    // A 48,978-byte key of NULs and control bytes followed by an unknown value
    // type. Was: the whole key printed raw, 183 lines of one message.
    let key: Vec<u8> = (0..48_978u32).map(|i| [0u8, b'\n', 0x1b, b'k'][i as usize % 4]).collect();
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&(key.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&key);
    bytes.extend_from_slice(&99u32.to_le_bytes());
    bytes.extend_from_slice(&[0; 8]);
    let path = tmp("garbage-key");
    std::fs::write(&path, bytes).unwrap();
    let Err(err) = GgufFile::open(&path) else { panic!("opened") };
    let message = err.to_string();
    assert!(message.len() < 400, "{} bytes: {message}", message.len());
    assert!(!message.chars().any(char::is_control), "{message:?}");
    assert!(message.contains("unknown value type 99") && message.contains("bytes in all)"), "{message}");
}

#[test]
fn each_flip_of_a_smollm2_metadata_byte_opens_or_is_one_line() {
    // The campaign's GGUF finding: one flipped byte at offset 293 of the
    // SmolLM2 GGUF (inside the key `general.basename`) left `convert` running
    // past 60 s. Every bit of it, through what `convert` does before the
    // tensors (metadata, hyper-parameters, tokenizer import).
    let out = std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/fetch-model.sh"))
        .output()
        .unwrap();
    assert!(out.status.success(), "fetch-model.sh: {}", String::from_utf8_lossy(&out.stderr));
    let model = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let path = tmp("smollm2-flip-293.gguf");
    let mut bytes = std::fs::read(&model).unwrap();
    let original = bytes[293];
    for bit in 0..8 {
        bytes[293] = original ^ (1 << bit);
        std::fs::write(&path, &bytes).unwrap();
        match GgufSource::open(&path) {
            Ok(source) => drop(source),
            Err(e) => {
                let message = e.to_string();
                assert!(message.len() < 400 && !message.chars().any(char::is_control), "bit {bit}: {message:?}");
            }
        }
    }
    std::fs::remove_file(&path).unwrap();
}

#[cfg(unix)]
#[test]
fn a_fifo_given_to_convert_is_refused_without_blocking() {
    // Was: `convert FIFO -o OUT` blocked for ever in open, waiting for a
    // writer. As a GGUF and as the config.json of a Hugging Face folder.
    let fifo_at = |path: &Path| {
        let _ = std::fs::remove_file(path);
        assert!(std::process::Command::new("mkfifo").arg(path).status().unwrap().success());
    };
    let gguf = tmp("fifo.gguf");
    fifo_at(&gguf);
    let folder = tmp("fifo-hf");
    std::fs::create_dir_all(&folder).unwrap();
    for entry in std::fs::read_dir(fixtures().join("tiny-llama")).unwrap() {
        let from = entry.unwrap().path();
        std::fs::copy(&from, folder.join(from.file_name().unwrap())).unwrap();
    }
    fifo_at(&folder.join("config.json"));
    for input in [&gguf, &folder] {
        let out = tmp("fifo-out.gpt");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gpt-fast-convert"))
            .arg(input)
            .arg("-o")
            .arg(&out)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > std::time::Duration::from_secs(60) {
                child.kill().unwrap();
                panic!("{}: convert still blocked after 60 s", input.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{}: {stderr}", input.display());
        assert!(stderr.contains("not a regular file") && stderr.trim_end().lines().count() == 1, "{stderr}");
        assert!(!out.exists(), "nothing written at -o");
    }
    std::fs::remove_dir_all(&folder).unwrap();
    std::fs::remove_file(&gguf).unwrap();
}
