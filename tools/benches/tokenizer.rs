//! Tokenizer throughput on English text with the real SmolLM2 vocabulary.
//!
//! Input: every license text in /usr/share/common-licenses (about 300 KB of
//! English), reported as MB/s of UTF-8 input (encode) or output (decode), one
//! core. `encode_warm` is the steady state (the word cache already holds the
//! text's words); `encode_cold` starts each pass with an empty cache.
//!
//!     cargo bench -p gpt-fast-tools --bench tokenizer

use std::path::PathBuf;
use std::process::Command;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gpt_fast::import::gguf::GgufFile;
use gpt_fast::import::tokenizer_import::from_gguf;
use gpt_fast::tokenizer::{StreamDecoder, Tokenizer};

fn smollm2() -> Tokenizer {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fetch-model.sh");
    let out = Command::new(script).output().expect("run tools/fetch-model.sh");
    assert!(out.status.success(), "fetch-model.sh: {}", String::from_utf8_lossy(&out.stderr));
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let file = GgufFile::open(&path).unwrap();
    Tokenizer::new(from_gguf(&file).unwrap()).unwrap()
}

fn english() -> String {
    let dir = "/usr/share/common-licenses";
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}")).map(|entry| entry.unwrap().path()).collect();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect::<Vec<_>>().join("\n")
}

fn bench(c: &mut Criterion) {
    let tok = smollm2();
    let text = english();
    let ids = tok.encode(&text, false);
    // Check the output before timing it: the text round-trips.
    assert_eq!(tok.decode(&ids).unwrap(), text);
    eprintln!(
        "{} bytes of text, {} tokens ({:.2} bytes/token)",
        text.len(),
        ids.len(),
        text.len() as f64 / ids.len() as f64
    );

    let mut group = c.benchmark_group("tokenizer");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(text.len() as u64));
    let mut out = Vec::with_capacity(ids.len());
    group.bench_function("encode_warm", |b| {
        b.iter(|| {
            out.clear();
            tok.encode_into(&text, false, &mut out);
            assert_eq!(out.len(), ids.len());
        })
    });
    group.bench_function("encode_cold", |b| {
        b.iter_batched(
            || tok.clone(),
            |fresh| {
                out.clear();
                fresh.encode_into(&text, false, &mut out);
                assert_eq!(out.len(), ids.len());
                fresh
            },
            BatchSize::PerIteration,
        )
    });
    let mut decoded = String::with_capacity(text.len());
    group.bench_function("stream_decode", |b| {
        b.iter(|| {
            decoded.clear();
            let mut dec = StreamDecoder::new();
            for &id in &ids {
                dec.push(&tok, id, &mut decoded).unwrap();
            }
            dec.finish(&mut decoded);
            assert_eq!(decoded.len(), text.len());
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
