//! Real model #2, Gemma 3 270M (Q4_K_M GGUF, fetched by `tools/fetch-model.sh
//! gemma3`), converted to f32: its logits over a 784-token prompt (longer than
//! the 512-position sliding window of its local layers) match transformers'
//! float32 forward pass of the same dequantized weights. The reference
//! (`tests/fixtures/gemma3/logits.json`, from tools/fixtures/gemma3_logits.py)
//! keeps per position transformers' 64 largest logits and max|logit|: each of
//! those 64 must be within 1e-3 x max|logit|, and the argmax must agree.

use std::path::{Path, PathBuf};
use std::process::Command;

use gpt_fast::format::DType;
use gpt_fast::import::from_gguf::GgufSource;
use gpt_fast::model::{Model, ModelOptions};
use gpt_fast::session::{KvType, Session, SessionOptions};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn gemma3_270m_f32_matches_transformers_past_the_window() {
    let out =
        Command::new(root().join("tools/fetch-model.sh")).arg("gemma3").output().expect("run tools/fetch-model.sh");
    assert!(out.status.success(), "fetch-model.sh gemma3: {}", String::from_utf8_lossy(&out.stderr));
    let gguf = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    // f32: the comparison is of the forward pass, not of a requantization (1 GB, removed below).
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gemma3-f32-{}.gpt", std::process::id()));
    let source = GgufSource::open(&gguf).unwrap();
    gpt_fast::import::convert::convert(&source, &gguf, &file, DType::F32, |_, _, _| {}).unwrap();
    let model = Model::open(&file, ModelOptions::default()).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(model.hparams().variant.sliding_window, 512);

    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/gemma3/logits.json")).unwrap())
            .unwrap();
    let ids: Vec<u32> = doc["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert!(ids.len() > 512);
    let vocab = model.hparams().vocab_size as usize;
    let batch = 128;
    let options = SessionOptions { context: 1024, batch, all_logits: true, kv_type: KvType::F32, ..Default::default() };
    let mut session = Session::new(&model, options).unwrap();
    let mut worst = (0f32, 0);
    for (c, chunk) in ids.chunks(batch).enumerate() {
        let logits = session.eval_all(chunk).unwrap();
        for t in 0..chunk.len() {
            let pos = c * batch + t;
            let row = &logits[t * vocab..][..vocab];
            let top_ids = doc["top_ids"][pos].as_array().unwrap();
            let top_values = floats(&doc["top_values"][pos]);
            let max_abs = doc["max_abs"][pos].as_f64().unwrap() as f32;
            for (id, want) in top_ids.iter().zip(&top_values) {
                let got = row[id.as_u64().unwrap() as usize];
                let e = (got - want).abs() / max_abs;
                assert!(e <= 1e-3, "position {pos} token {id}: {got} vs transformers {want} (error {e:e})");
                if e > worst.0 {
                    worst = (e, pos);
                }
            }
            let argmax = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
            assert_eq!(argmax as u64, top_ids[0].as_u64().unwrap(), "position {pos}: argmax");
        }
    }
    println!(
        "gemma3 270m f32: max error / max|logit| over the top 64 of {} positions: {:.2e} (position {})",
        ids.len(),
        worst.0,
        worst.1
    );
}
