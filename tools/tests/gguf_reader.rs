//! The GGUF reader on the real SmolLM2 file and on small hand-built files,
//! valid and broken: every broken file must give an error that names the
//! problem, never a panic or a huge allocation.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use gpt_fast::import::gguf::{GgufError, GgufFile, GgufValue};
use gpt_fast_quant::ggml::GgmlType;

// ---------------------------------------------------------------- real file

fn smollm2_path() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fetch-model.sh");
    let out = Command::new(script).output().expect("run tools/fetch-model.sh");
    assert!(out.status.success(), "fetch-model.sh: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gguf-dequant").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn opens_smollm2() {
    let file = GgufFile::open(&smollm2_path()).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.tensors().len(), 272);
    assert_eq!(file.require_str("general.architecture").unwrap(), "llama");
    assert_eq!(file.require_u32("llama.block_count").unwrap(), 30);
    assert_eq!(file.require_u32("llama.embedding_length").unwrap(), 576);
    assert!(file.require_f32("llama.rope.freq_base").unwrap() > 0.0);
    assert_eq!(file.opt_bool("tokenizer.ggml.add_bos_token").unwrap(), Some(false));
    let tokens = file.str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 49152);
    assert_eq!(file.i32_array("tokenizer.ggml.token_type").unwrap().len(), 49152);
    assert!(file.str_array("tokenizer.ggml.merges").unwrap().len() > 40_000);

    let embd = file.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.ty, GgmlType::Q8_0);
    assert_eq!(embd.dims, [576, 49152]);
    assert_eq!(embd.n_elements(), 576 * 49152);
    assert_eq!(embd.n_bytes, 576 * 49152 / 32 * 34);

    let norm = file.tensor("blk.0.attn_norm.weight").unwrap();
    assert_eq!((norm.ty, norm.dims.as_slice()), (GgmlType::F32, &[576u64][..]));
    let values = file.tensor_f32(norm).unwrap();
    assert_eq!(values.len(), 576);
    assert!(values.iter().all(|v| v.is_finite()));
    assert!(values.iter().any(|&v| v != 0.0));

    // The dequant fixtures end with the first blocks of these tensors as read
    // by the gguf Python package: the same bytes must be found at our offsets.
    for (ty, name) in [("Q8_0", "token_embd.weight"), ("Q4_1", "blk.0.attn_q.weight")] {
        let info = file.tensor(name).unwrap();
        let expected = fixture(&format!("{ty}.bin"));
        let expected = &expected[expected.len() - 16 * info.ty.type_size()..];
        assert_eq!(&file.tensor_bytes(info)[..expected.len()], expected, "{name}");
        assert_eq!(info.ty.name(), ty);
    }
    let q = file.tensor("blk.0.attn_q.weight").unwrap();
    let q_values = file.tensor_f32(q).unwrap();
    assert_eq!(q_values.len(), 576 * 576);
    assert!(q_values.iter().all(|v| v.is_finite()));

    // Missing and mistyped keys name the key.
    let err = file.require_u32("llama.no_such_key").unwrap_err().to_string();
    assert!(err.contains("missing metadata key 'llama.no_such_key'"), "{err}");
    let err = file.require_u32("general.architecture").unwrap_err().to_string();
    assert!(err.contains("'general.architecture' is string"), "{err}");
    let err = file.str_array("tokenizer.ggml.token_type").unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.token_type") && err.contains("i32"), "{err}");
    assert!(err.starts_with(&file.path().display().to_string()), "{err}");
}

// ---------------------------------------------------------- synthetic files

/// Writes GGUF files byte by byte, so tests can also write broken ones.
struct Gguf {
    version: u32,
    /// Overrides of the header counts (to claim more than is there).
    n_kv: Option<u64>,
    n_tensors: Option<u64>,
    kv_count: u64,
    kv: Vec<u8>,
    tensor_count: u64,
    infos: Vec<u8>,
    data: Vec<u8>,
}

const STRING: u32 = 8;
const ARRAY: u32 = 9;

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s);
}

impl Gguf {
    fn new() -> Self {
        Gguf {
            version: 3,
            n_kv: None,
            n_tensors: None,
            kv_count: 0,
            kv: Vec::new(),
            tensor_count: 0,
            infos: Vec::new(),
            data: Vec::new(),
        }
    }

    /// A key with a value given as its type id and encoded bytes.
    fn kv_raw(mut self, key: &[u8], ty: u32, value: &[u8]) -> Self {
        put_str(&mut self.kv, key);
        put_u32(&mut self.kv, ty);
        self.kv.extend_from_slice(value);
        self.kv_count += 1;
        self
    }

    fn kv_u32(self, key: &str, v: u32) -> Self {
        self.kv_raw(key.as_bytes(), 4, &v.to_le_bytes())
    }

    fn kv_str(self, key: &str, s: &str) -> Self {
        let mut value = Vec::new();
        put_str(&mut value, s.as_bytes());
        self.kv_raw(key.as_bytes(), STRING, &value)
    }

    fn kv_str_array(self, key: &str, items: &[&str]) -> Self {
        let mut value = Vec::new();
        put_u32(&mut value, STRING);
        put_u64(&mut value, items.len() as u64);
        for item in items {
            put_str(&mut value, item.as_bytes());
        }
        self.kv_raw(key.as_bytes(), ARRAY, &value)
    }

    /// A tensor info with an explicit (relative) offset; no data is added.
    fn tensor_info(mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        put_str(&mut self.infos, name.as_bytes());
        put_u32(&mut self.infos, dims.len() as u32);
        for &d in dims {
            put_u64(&mut self.infos, d);
        }
        put_u32(&mut self.infos, ty);
        put_u64(&mut self.infos, offset);
        self.tensor_count += 1;
        self
    }

    /// A tensor and its data, placed at the next 32-byte boundary.
    fn tensor(mut self, name: &str, dims: &[u64], ty: GgmlType, data: &[u8]) -> Self {
        self.data.resize(self.data.len().next_multiple_of(32), 0);
        let offset = self.data.len() as u64;
        self.data.extend_from_slice(data);
        self.tensor_info(name, dims, ty.gguf_id(), offset)
    }

    fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        put_u32(&mut out, self.version);
        put_u64(&mut out, self.n_tensors.unwrap_or(self.tensor_count));
        put_u64(&mut out, self.n_kv.unwrap_or(self.kv_count));
        out.extend_from_slice(&self.kv);
        out.extend_from_slice(&self.infos);
        out.resize(out.len().next_multiple_of(32), 0);
        out.extend_from_slice(&self.data);
        out
    }
}

/// Writes `bytes` to a fresh temporary file and opens it.
fn open_bytes(bytes: &[u8]) -> Result<GgufFile, GgufError> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("gpt-fast-gguf-{}-{n}.gguf", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let result = GgufFile::open(&path);
    // The map (if any) stays valid after unlinking.
    std::fs::remove_file(&path).unwrap();
    result
}

/// Opens `bytes`, expecting an error whose message contains every one of `needles`.
fn expect_error(bytes: &[u8], needles: &[&str]) -> String {
    let err = open_bytes(bytes).expect_err("a broken file opened").to_string();
    for needle in needles {
        assert!(err.contains(needle), "error {err:?} does not mention {needle:?}");
    }
    assert!(!err.contains('\n'), "error is not one line: {err:?}");
    err
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A small valid file: metadata of several types and three tensors.
fn valid() -> Gguf {
    let q8_block: Vec<u8> = [0x00, 0x3c] // d = 1.0
        .into_iter()
        .chain((0..32).map(|i| (i as i8 - 16) as u8))
        .collect();
    Gguf::new()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 2)
        .kv_raw(b"llama.rope.freq_base", 6, &10000f32.to_le_bytes())
        .kv_raw(b"tokenizer.ggml.add_bos_token", 7, &[1])
        .kv_raw(b"big", 10, &(1u64 << 40).to_le_bytes())
        .kv_raw(b"negative", 11, &(-5i64).to_le_bytes())
        .kv_str_array("tokenizer.ggml.tokens", &["a", "b", "<s>"])
        .tensor("norm.weight", &[4], GgmlType::F32, &f32_bytes(&[1.0, -2.0, 0.5, 0.0]))
        .tensor("half", &[2, 1], GgmlType::F16, &[0x00, 0x3c, 0x00, 0xc0])
        .tensor("q8", &[32], GgmlType::Q8_0, &q8_block)
}

#[test]
fn reads_a_valid_file() {
    let file = open_bytes(&valid().build()).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.metadata().len(), 7);
    assert_eq!(file.get("general.architecture").and_then(GgufValue::as_str), Some("llama"));
    assert_eq!(file.require_u32("llama.block_count").unwrap(), 2);
    assert_eq!(file.require_f32("llama.rope.freq_base").unwrap(), 10000.0);
    assert_eq!(file.opt_bool("tokenizer.ggml.add_bos_token").unwrap(), Some(true));
    assert_eq!(file.opt_bool("absent").unwrap(), None);
    assert_eq!(file.get("big").and_then(GgufValue::as_u64), Some(1 << 40));
    assert_eq!(file.get("big").and_then(GgufValue::as_u32), None);
    assert_eq!(file.get("negative").and_then(GgufValue::as_i64), Some(-5));
    assert_eq!(file.get("negative").and_then(GgufValue::as_u64), None);
    assert_eq!(file.str_array("tokenizer.ggml.tokens").unwrap(), ["a", "b", "<s>"]);
    assert_eq!(file.opt_i32_array("absent").unwrap(), None);

    let names: Vec<&str> = file.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["norm.weight", "half", "q8"]);
    assert_eq!(file.data_offset() % 32, 0);
    let norm = file.tensor("norm.weight").unwrap();
    assert_eq!(norm.offset, file.data_offset());
    assert_eq!(file.tensor_f32(norm).unwrap(), [1.0, -2.0, 0.5, 0.0]);
    let half = file.tensor("half").unwrap();
    assert_eq!((half.n_elements(), half.n_bytes), (2, 4));
    assert_eq!(file.tensor_f32(half).unwrap(), [1.0, -2.0]);
    let q8 = file.tensor("q8").unwrap();
    let expected: Vec<f32> = (0..32).map(|i| (i - 16) as f32).collect();
    assert_eq!(file.tensor_f32(q8).unwrap(), expected);
    assert!(file.tensor("absent").is_none());

    // Version 2 has the same layout.
    let mut v2 = valid();
    v2.version = 2;
    assert_eq!(open_bytes(&v2.build()).unwrap().version(), 2);
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = valid().build();
    for len in 0..bytes.len() {
        let err = open_bytes(&bytes[..len]).expect_err("a truncated file opened").to_string();
        let expected = ["bad magic", "truncated", "past the end", "need at least"];
        assert!(expected.iter().any(|e| err.contains(e)), "cut at {len}: {err}");
    }
}

#[test]
fn truncated_tensor_info_names_it() {
    // A last tensor info longer than the smallest possible one, so that the
    // up-front count check passes and the cut is found inside the info.
    let bytes = valid().tensor_info("last", &[32, 1, 1, 1], 0, 64).build();
    let at = bytes.windows(4).position(|w| w == b"last").unwrap() + 4 + 4 + 20;
    expect_error(
        &bytes[..at],
        &["truncated: tensor info 3 ('last') ends at byte", &format!("but the file has {at} bytes")],
    );
    // With a count that cannot fit, the header's count is blamed up front.
    let bytes = valid().build();
    let at = bytes.windows(4).position(|w| w == b"half").unwrap();
    expect_error(&bytes[..at], &["3 tensor infos need at least 72 bytes but only"]);
}

#[test]
fn corrupted_bytes_never_panic() {
    let bytes = valid().build();
    // A fixed xorshift sequence: flip one to three bytes per trial.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let mut corrupt = bytes.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() % corrupt.len() as u64) as usize;
            corrupt[at] = next() as u8;
        }
        if let Ok(file) = open_bytes(&corrupt) {
            for info in file.tensors() {
                let _ = file.tensor_f32(info);
            }
        }
    }
}

#[test]
fn bad_magic() {
    let mut bytes = valid().build();
    bytes[..4].copy_from_slice(b"PK\x03\x04");
    expect_error(&bytes, &["bad magic 'PK\\x03\\x04'", "not a GGUF file"]);
    expect_error(b"", &["bad magic ''"]);
}

#[test]
fn unsupported_versions() {
    for version in [0, 1, 4, u32::MAX] {
        let mut file = valid();
        file.version = version;
        expect_error(&file.build(), &[&format!("unsupported GGUF version {version} ")]);
    }
    let mut file = valid();
    file.version = 3u32.swap_bytes();
    expect_error(&file.build(), &["big-endian"]);
}

#[test]
fn error_names_the_path() {
    let mut file = valid();
    file.version = 1;
    let err = open_bytes(&file.build()).unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with(&err.path.display().to_string()), "{message}");
    assert!(message.contains(".gguf: unsupported GGUF version 1"), "{message}");
}

#[test]
fn huge_string_length() {
    let mut value = Vec::new();
    put_u64(&mut value, 1 << 60);
    value.extend_from_slice(b"short");
    let file = Gguf::new().kv_raw(b"general.name", STRING, &value);
    expect_error(&file.build(), &["truncated: metadata key 'general.name' ends at byte 1152921504606847"]);

    // A huge key length.
    let mut bytes = Gguf::new().kv_u32("k", 1).build();
    bytes[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_error(&bytes, &["truncated: metadata entry 0 ends at byte"]);
}

#[test]
fn huge_counts() {
    let mut value = Vec::new();
    put_u32(&mut value, STRING);
    put_u64(&mut value, 1 << 60);
    let file = Gguf::new().kv_raw(b"tokenizer.ggml.tokens", ARRAY, &value);
    expect_error(&file.build(), &["metadata key 'tokenizer.ggml.tokens'", "1152921504606846976 strings need at least"]);

    let mut file = valid();
    file.n_kv = Some(u64::MAX);
    expect_error(&file.build(), &["18446744073709551615 metadata entries need at least"]);
    let mut file = valid();
    file.n_tensors = Some(1 << 62);
    expect_error(&file.build(), &["tensor infos need at least"]);
}

#[test]
fn array_nesting_is_bounded() {
    // `depth` nested arrays: an array of an array of … of one u8.
    let nested = |depth: usize| {
        let mut value = vec![7u8];
        let mut ty = 0u32;
        for _ in 0..depth {
            let mut outer = Vec::new();
            put_u32(&mut outer, ty);
            put_u64(&mut outer, 1);
            outer.extend_from_slice(&value);
            value = outer;
            ty = ARRAY;
        }
        Gguf::new().kv_raw(b"nested", ARRAY, &value).build()
    };
    let file = open_bytes(&nested(4)).unwrap();
    let mut value = file.get("nested").unwrap();
    for _ in 0..3 {
        value = &value.as_array().unwrap()[0];
    }
    assert_eq!(value.as_array().unwrap(), [GgufValue::U8(7)]);
    expect_error(&nested(5), &["metadata key 'nested': arrays nested deeper than 4"]);
    expect_error(&nested(10_000), &["nested deeper than 4"]);
}

#[test]
fn bad_values() {
    let file = Gguf::new().kv_raw(b"k", 13, &[0; 8]);
    expect_error(&file.build(), &["metadata key 'k': unknown value type 13"]);
    let mut value = Vec::new();
    put_u32(&mut value, 99);
    put_u64(&mut value, 1);
    let file = Gguf::new().kv_raw(b"arr", ARRAY, &value);
    expect_error(&file.build(), &["metadata key 'arr': unknown value type 99"]);
    let file = Gguf::new().kv_raw(b"flag", 7, &[2]);
    expect_error(&file.build(), &["metadata key 'flag': bool byte is 2"]);
    let file = Gguf::new().kv_raw(b"bad\xffkey", 4, &[0; 4]);
    expect_error(&file.build(), &["metadata entry 0: string is not UTF-8"]);
    let mut value = Vec::new();
    put_str(&mut value, b"\xc3\x28");
    let file = Gguf::new().kv_raw(b"name", STRING, &value);
    expect_error(&file.build(), &["metadata key 'name': string is not UTF-8"]);
    let file = Gguf::new().kv_u32("k", 1).kv_u32("k", 2);
    expect_error(&file.build(), &["duplicate metadata key 'k'"]);
}

#[test]
fn alignment() {
    let file = valid().kv_u32("general.alignment", 3);
    expect_error(&file.build(), &["general.alignment 3 is not a power of two"]);
    let file = valid().kv_str("general.alignment", "32");
    expect_error(&file.build(), &["general.alignment is string, expected u32"]);
    // A larger alignment moves the data section.
    let data = f32_bytes(&[1.0; 8]);
    let file = Gguf::new().kv_u32("general.alignment", 64).tensor_info("t", &[8], 0, 0);
    let mut bytes = file.build();
    bytes.resize(bytes.len().next_multiple_of(64), 0);
    bytes.extend_from_slice(&data);
    let opened = open_bytes(&bytes).unwrap();
    assert_eq!(opened.data_offset() % 64, 0);
    assert_eq!(opened.tensor_f32(&opened.tensors()[0]).unwrap(), [1.0; 8]);
    let file = valid().tensor_info("late", &[1], 0, 16);
    expect_error(&file.build(), &["tensor 'late': data offset 16 is not a multiple of the alignment 32"]);
}

#[test]
fn bad_tensors() {
    let file = valid().tensor_info("blk.0.attn_q.weight", &[32], 99, 0);
    let err = expect_error(&file.build(), &[]);
    assert!(err.ends_with(": unknown tensor type 99 for tensor 'blk.0.attn_q.weight'"), "{err}");
    let file = valid().tensor_info("grid", &[256], 16, 0);
    expect_error(&file.build(), &["unsupported tensor type IQ2_XXS (16) for tensor 'grid'"]);

    let file = valid().tensor_info("beyond", &[1024], 0, 256);
    expect_error(&file.build(), &["tensor 'beyond': data at bytes", "past the end of the file"]);
    let file = valid().tensor_info("far", &[1], 0, u64::MAX - 31);
    expect_error(&file.build(), &["tensor 'far'", "past the end"]);

    let file = valid().tensor_info("huge", &[1 << 32, 1 << 32], 0, 0);
    expect_error(&file.build(), &["tensor 'huge': dims [4294967296, 4294967296] overflow"]);
    let file = valid().tensor_info("f32huge", &[1 << 62], 0, 0);
    expect_error(&file.build(), &["tensor 'f32huge'"]);
    let file = valid().tensor_info("5d", &[1, 1, 1, 1, 1], 0, 0);
    expect_error(&file.build(), &["tensor '5d' has 5 dimensions (at most 4)"]);
    let file = valid().tensor_info("ragged", &[33, 2], GgmlType::Q8_0.gguf_id(), 0);
    expect_error(&file.build(), &["tensor 'ragged': rows of 33 elements are not whole Q8_0 blocks of 32"]);

    let file = valid().tensor_info("norm.weight", &[4], 0, 0);
    expect_error(&file.build(), &["duplicate tensor 'norm.weight'"]);
    let file = valid().tensor_info("alias", &[2], 0, 0);
    expect_error(&file.build(), &["tensors 'norm.weight' and 'alias' overlap"]);
    let file = valid().tensor_info("bad\u{0}name\u{fffd}", &[0], 0, 0);
    // Odd but valid UTF-8 names are fine, and empty tensors take no room.
    assert!(open_bytes(&file.build()).is_ok());
}
