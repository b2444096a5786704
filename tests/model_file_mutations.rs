//! Property (issue #18): whatever bytes of a model file are changed, with or
//! without the header CRC recomputed, opening it returns (a model or an
//! error) without panicking, and what opens passes the tokenizer's and the
//! checksums' checks or fails them with an error. The stable-Rust companion
//! of fuzz/'s model_file target.

use std::path::Path;
use std::sync::OnceLock;

use gpt_fast::format::spec::HEADER_CRC_START;
use gpt_fast::format::{DType, ModelFile};
use proptest::prelude::*;

fn original() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mutations-{}", std::process::id()));
        let h = gpt_fast::synthetic::config("test-llama").unwrap();
        gpt_fast::synthetic::write(&path, &h, DType::Q8, 11, |_, _| {}).unwrap();
        std::fs::read(&path).unwrap()
    })
}

fn fix_crc(bytes: &mut [u8]) {
    let data_offset = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
    if let Ok(end) = usize::try_from(data_offset) {
        if (HEADER_CRC_START..=bytes.len()).contains(&end) {
            let crc = crc32fast::hash(&bytes[HEADER_CRC_START..end]);
            bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

/// Where mutations land: mostly the metadata (header, directory, tokenizer),
/// where every count lives; sometimes anywhere.
fn offset() -> impl Strategy<Value = usize> {
    let len = original().len();
    prop_oneof![3 => 0usize..4096, 1 => 0..len]
}

fn value() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u8>().prop_map(u64::from),
        Just(0u64),
        Just(u64::from(u32::MAX)),
        Just(1 << 24),
        Just(u64::MAX),
        any::<u64>()
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_model_files_open_or_fail_cleanly(
        edits in prop::collection::vec((offset(), value(), 1usize..=8), 1..4),
        recompute_crc in any::<bool>(),
        truncate_to in prop::option::weighted(0.1, 0usize..65536),
    ) {
        let mut bytes = original().to_vec();
        for (at, v, width) in edits {
            let end = (at + width).min(bytes.len());
            bytes[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
        }
        if recompute_crc {
            fix_crc(&mut bytes);
        }
        if let Some(len) = truncate_to {
            bytes.truncate(len);
        }
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mutant-{}", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(file) = ModelFile::open(&path) {
            let _ = gpt_fast::tokenizer::Tokenizer::new(file.tokenizer().clone());
            let _ = file.verify();
        }
    }
}
