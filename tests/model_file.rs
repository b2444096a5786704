//! The model file: a synthetic model round-trips, and every kind of bad file is
//! refused with its own clear error (library and CLI), never a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use gpt_fast::format::spec::{RawHeader, RawTensorEntry, DIR_ENTRY_BYTES, HEADER_BYTES, HEADER_CRC_START};
use gpt_fast::format::{DType, LoadErrorKind, ModelFile, ModelWriter};

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("model_file-{name}-{}", std::process::id()))
}

fn synthetic(config: &str, dtype: DType, name: &str) -> (PathBuf, Vec<u8>) {
    let path = tmp(name);
    let h = gpt_fast::synthetic::config(config).unwrap();
    gpt_fast::synthetic::write(&path, &h, dtype, 7, |_, _| {}).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

fn header(bytes: &[u8]) -> RawHeader {
    bytemuck::pod_read_unaligned(&bytes[..HEADER_BYTES as usize])
}

/// Applies `edit` to the header and directory, then fixes the header CRC so
/// that the deeper check, not the checksum, is what refuses the file.
fn patched(bytes: &[u8], edit: impl FnOnce(&mut RawHeader, &mut [RawTensorEntry])) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut h = header(&out);
    let dir_start = h.dir_offset as usize;
    let dir_end = dir_start + h.n_tensors as usize * DIR_ENTRY_BYTES as usize;
    let mut entries: Vec<RawTensorEntry> =
        out[dir_start..dir_end].chunks_exact(DIR_ENTRY_BYTES as usize).map(bytemuck::pod_read_unaligned).collect();
    edit(&mut h, &mut entries);
    out[..HEADER_BYTES as usize].copy_from_slice(bytemuck::bytes_of(&h));
    out[dir_start..dir_end].copy_from_slice(bytemuck::cast_slice(&entries));
    let crc = crc32fast::hash(&out[HEADER_CRC_START..h.data_offset as usize]);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    out
}

fn open_bytes(name: &str, bytes: &[u8]) -> Result<ModelFile, gpt_fast::format::LoadError> {
    let path = tmp(name);
    std::fs::write(&path, bytes).unwrap();
    ModelFile::open(&path)
}

/// Runs `gpt-fast info` on the bytes: it must fail with one line, no panic.
fn cli_refuses(name: &str, bytes: &[u8], expect: &str) {
    let path = tmp(&format!("cli-{name}"));
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gpt-fast")).arg("info").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: one line expected: {stderr}");
    assert!(stderr.contains(expect), "{name}: '{expect}' not in: {stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{name}: path not named: {stderr}");
}

#[test]
fn synthetic_models_round_trip() {
    for (config, dtype) in [("test-llama", DType::Q8), ("test-llama", DType::F16), ("test-gpt2", DType::F32)] {
        let (path, _) = synthetic(config, dtype, &format!("rt-{config}-{}", dtype.name()));
        let file = ModelFile::open(&path).unwrap();
        file.verify().unwrap();
        assert_eq!(file.hparams(), &gpt_fast::synthetic::config(config).unwrap());
        assert_eq!(file.weight_dtype(), dtype);
        assert_eq!(file.tokenizer(), &gpt_fast::synthetic::tokenizer(file.hparams().vocab_size));
        for t in file.tensors() {
            assert_eq!(t.offset % 64, 0, "{} misaligned", t.name);
            // The stored values decode back to the generator's, within the dtype's precision.
            let mut want = vec![0f32; (t.rows * t.cols) as usize];
            gpt_fast::synthetic::fill_tensor(&t.name, 7, &mut want);
            let got = t.dtype.decode(file.tensor_bytes(t), t.rows as usize, t.cols as usize);
            let tol = match t.dtype {
                DType::F32 => 0.0,
                DType::F16 => 1e-3,
                DType::Q8 => 0.035 / 127.0,
                other => panic!("the synthetic writer made {other:?}, which it has no encoder for"),
            };
            for (a, b) in want.iter().zip(&got) {
                assert!((a - b).abs() <= tol, "{}: {a} vs {b}", t.name);
            }
        }
    }
}

#[test]
fn truncated_files_are_refused() {
    let (_, bytes) = synthetic("test-llama", DType::Q8, "trunc");
    let len = bytes.len();
    for cut in [0, 7, 100, 255, 256, 4000, 4096, len / 2, len - 64, len - 1] {
        let err = open_bytes(&format!("trunc-{cut}"), &bytes[..cut]).err().unwrap();
        assert!(
            matches!(err.kind, LoadErrorKind::TooShort { .. } | LoadErrorKind::Length { .. }),
            "cut at {cut}: {err}"
        );
    }
    cli_refuses("trunc", &bytes[..len / 2], "truncated");
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(open_bytes("longer", &longer).err().unwrap().kind, LoadErrorKind::Length { .. }));
}

/// Version 4 keeps q5_0/q5_1's fifth bits in another order than version 3
/// did: a file with such a tensor is written as version 4, and the same file
/// stamped version 3 is refused (its bits would read as other values).
#[test]
fn q5_tensors_need_version_4() {
    let path = tmp("q5");
    let h = gpt_fast::synthetic::config("test-llama").unwrap();
    let q5 = |t: &gpt_fast::format::TensorSpec| t.name.ends_with("ffn_down.weight");
    let tokenizer = gpt_fast::synthetic::tokenizer(h.vocab_size);
    let typed = |t: &gpt_fast::format::TensorSpec| if q5(t) { DType::Q5_0 } else { DType::Q8 };
    let mut writer = ModelWriter::create_typed(&path, &h, DType::Q8, typed, &tokenizer).unwrap();
    for (i, spec) in writer.tensors().to_vec().iter().enumerate() {
        let (dtype, rows, cols) = (writer.entry_dtype(i), spec.rows as usize, spec.cols as usize);
        let mut bytes = Vec::new();
        if dtype == DType::Q5_0 {
            // No encoder: any bytes of the size do (zero scales).
            bytes.resize(dtype.n_bytes(spec.rows, spec.cols).unwrap() as usize, 0);
        } else {
            dtype.encode(rows, cols, &vec![0.01; rows * cols], &mut bytes);
        }
        writer.write_tensor(&spec.name, &bytes).unwrap();
    }
    writer.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(header(&bytes).version, 4);
    ModelFile::open(&path).unwrap();
    let b = patched(&bytes, |h, _| h.version = 3);
    match open_bytes("q5-v3", &b).err().unwrap().kind {
        LoadErrorKind::Tensor { name, reason, .. } => {
            assert!(name.ends_with("ffn_down.weight") && reason.contains("old order"), "{name}: {reason}")
        }
        other => panic!("q5_0 in version 3: {other:?}"),
    }
    cli_refuses("q5-v3", &b, "fifth bits in the old order");
}

#[test]
fn bad_magic_version_and_checksum_are_refused() {
    let (_, bytes) = synthetic("test-llama", DType::Q8, "magic");
    let mut b = bytes.clone();
    b[0] = b'X';
    assert!(matches!(open_bytes("magic", &b).err().unwrap().kind, LoadErrorKind::BadMagic(_)));
    cli_refuses("magic", &b, "not a gpt-fast model file");
    assert!(matches!(open_bytes("gguf", b"GGUF\x03\0\0\0").err().unwrap().kind, LoadErrorKind::BadMagic(_)));

    let b = patched(&bytes, |h, _| h.version = 5);
    assert!(matches!(open_bytes("version", &b).err().unwrap().kind, LoadErrorKind::Version(5)));
    cli_refuses("version", &b, "unsupported format version 5");
    // Version 3 only widens what a matmul entry's dtype may be: a version 1 file is one.
    assert!(open_bytes("v3", &patched(&bytes, |h, _| h.version = 3)).is_ok());
    // Version 1 has neither version 2's header fields nor its flags; version 2
    // with a flag its tensors are missing for is refused by the tensor check.
    assert_eq!(header(&bytes).version, 1, "a plain Llama is still written as version 1");
    let b = patched(&bytes, |h, _| h.sliding_window = 4);
    assert!(matches!(open_bytes("v1-field", &b).err().unwrap().kind, LoadErrorKind::Header(_)));
    let b = patched(&bytes, |h, _| h.flags |= 1 << 2);
    assert!(matches!(open_bytes("v1-flag", &b).err().unwrap().kind, LoadErrorKind::Header(_)));
    let b = patched(&bytes, |h, _| {
        h.version = 2;
        h.flags |= 1 << 2;
    });
    assert!(matches!(open_bytes("v2-qk-norm", &b).err().unwrap().kind, LoadErrorKind::MissingTensor(_)));

    // A flipped byte anywhere in the header region, directory or tokenizer.
    for at in [20usize, 70, 300, 2000] {
        let mut b = bytes.clone();
        b[at] ^= 0x40;
        let err = open_bytes(&format!("flip-{at}"), &b).err().unwrap();
        assert!(
            matches!(
                err.kind,
                LoadErrorKind::HeaderChecksum { .. } | LoadErrorKind::Length { .. } | LoadErrorKind::Header(_)
            ),
            "flip at {at}: {err}"
        );
    }
    let mut b = bytes.clone();
    b[70] ^= 1;
    cli_refuses("flip", &b, "checksum mismatch");
}

#[test]
fn inconsistent_directories_are_refused() {
    let (_, bytes) = synthetic("test-llama", DType::Q8, "dir");
    let tensor_err = |name: &str, b: &[u8]| match open_bytes(name, b).err().unwrap().kind {
        LoadErrorKind::Tensor { reason, .. } => reason,
        other => panic!("{name}: expected a tensor error, got {other}"),
    };

    let b = patched(&bytes, |_, e| e[1].dtype = 99);
    assert!(tensor_err("dtype", &b).contains("unknown dtype 99"));
    cli_refuses("dtype", &b, "unknown dtype 99");

    let b = patched(&bytes, |_, e| {
        e[0].rows = u64::MAX / 2;
        e[0].cols = 1 << 40;
    });
    assert!(tensor_err("overflow", &b).contains("overflows"));

    let b = patched(&bytes, |h, _| h.dim = 0x00FF_FFFF);
    assert!(matches!(
        open_bytes("dim", &b).err().unwrap().kind,
        LoadErrorKind::Tensor { .. } | LoadErrorKind::HParams(_)
    ));
    let b = patched(&bytes, |h, _| h.dim = u32::MAX);
    assert!(matches!(open_bytes("dim-max", &b).err().unwrap().kind, LoadErrorKind::HParams(_)));

    let b = patched(&bytes, |h, e| {
        let last = e.len() - 1;
        e[last].offset = h.file_len + 64;
    });
    assert!(tensor_err("past-end", &b).contains("past the end"));
    cli_refuses("past-end", &b, "past the end");

    let b = patched(&bytes, |_, e| e[2].offset = e[1].offset);
    assert!(tensor_err("overlap", &b).contains("overlaps"));
    cli_refuses("overlap", &b, "overlaps");

    let b = patched(&bytes, |_, e| e[3].offset += 4);
    assert!(tensor_err("misaligned", &b).contains("aligned"));

    let b = patched(&bytes, |_, e| e[0].name[0] = b'X');
    assert!(matches!(open_bytes("renamed", &b).err().unwrap().kind, LoadErrorKind::MissingTensor(_)));

    let b = patched(&bytes, |_, e| e[1].rows += 1);
    assert!(!tensor_err("shape", &b).is_empty());

    let b = patched(&bytes, |h, _| h.tok_len += 1 << 40);
    assert!(matches!(open_bytes("tok", &b).err().unwrap().kind, LoadErrorKind::Header(_)));
}

#[test]
fn verify_catches_corrupt_tensor_data() {
    let (path, mut bytes) = synthetic("test-gpt2", DType::F16, "verify");
    let file = ModelFile::open(&path).unwrap();
    let t = file.tensor("blk.1.ffn_down.weight").unwrap().clone();
    bytes[t.offset as usize + 10] ^= 1;
    // The header is intact, so the file opens; only verify reads the data.
    let bad = open_bytes("verify-bad", &bytes).unwrap();
    assert!(matches!(bad.verify().unwrap_err().kind, LoadErrorKind::TensorChecksum { .. }));
    let out = Command::new(env!("CARGO_BIN_EXE_gpt-fast")).arg("verify").arg(tmp("verify-bad")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("blk.1.ffn_down.weight"));
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_gpt-fast")).args(["info", "/nonexistent/model.bin"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/model.bin") && stderr.contains("No such file"), "{stderr}");
}
