//! Hugging Face folders to gpt-fast files: the tiny fixtures of
//! tools/fixtures/hf_tiny_models.py convert (library and binary) to files the
//! loader accepts, each tensor equal to what the safetensors hold (read here
//! independently), and bad folders fail with an error naming the problem and
//! leave nothing behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use gpt_fast::format::{Arch, DType, ModelFile};
use gpt_fast::import::convert::convert;
use gpt_fast::import::from_hf::HfSource;
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

fn fixture(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf").join(model)
}

/// A fresh, empty folder for one test.
fn tmp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hf_import-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn convert_lib(model: &str, dtype: DType, out_dir: &Path) -> PathBuf {
    let input = fixture(model);
    let out = out_dir.join(format!("{model}-{}.gpt", dtype.name()));
    let source = HfSource::open(&input).unwrap();
    let mut calls = 0;
    convert(&source, &input, &out, dtype, |done, total, _| {
        calls += 1;
        assert!(done <= total);
    })
    .unwrap();
    assert!(calls > 0);
    out
}

/// Every tensor of a safetensors folder (all shards), decoded to f32 here, not by the converter.
fn safetensors_values(dir: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let mut all = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
                Dtype::F16 => data.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                Dtype::BF16 => data.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                other => panic!("fixture dtype {other:?}"),
            };
            all.insert(name, (view.shape().to_vec(), values));
        }
    }
    all
}

/// A tensor of the gpt-fast file as f32, with its `[rows, cols]`.
fn file_tensor(file: &ModelFile, name: &str) -> (usize, usize, Vec<f32>) {
    let info = file.tensor(name).unwrap_or_else(|| panic!("no {name}"));
    let (rows, cols) = (info.rows as usize, info.cols as usize);
    (rows, cols, info.dtype.decode(file.tensor_bytes(info), rows, cols))
}

fn transposed(shape: &[usize], data: &[f32]) -> Vec<f32> {
    let (rows, cols) = (shape[0], shape[1]);
    (0..cols).flat_map(|c| (0..rows).map(move |r| data[r * cols + c])).collect()
}

fn open_verified(path: &Path) -> ModelFile {
    let file = ModelFile::open(path).unwrap();
    file.verify().unwrap();
    file
}

#[test]
fn tiny_llama_f32_tensors_equal_the_checkpoint() {
    let dir = tmp_dir("llama-f32");
    let file = open_verified(&convert_lib("tiny-llama", DType::F32, &dir));
    let h = *file.hparams();
    assert_eq!(h.arch, Arch::Llama);
    assert_eq!((h.n_layers, h.dim, h.n_heads, h.n_kv_heads, h.head_dim), (2, 64, 4, 2, 16));
    assert_eq!((h.ffn_dim, h.vocab_size, h.max_seq_len), (128, 352, 128));
    assert_eq!((h.rope_theta, h.norm_eps, h.tied_embeddings), (50000.0, 1e-5, false));
    let tok = file.tokenizer();
    assert_eq!(tok.tokens.len(), 352);
    assert_eq!(tok.tokens[1], b"<|im_start|>");
    assert_eq!((tok.bos_id, tok.eos_id, tok.add_bos), (Some(1), Some(2), false));
    assert!(tok.chat_template.contains("<|im_start|>"), "chat template from chat_template.jinja");

    let st = safetensors_values(&fixture("tiny-llama"));
    let get = |name: &str| st.get(name).unwrap_or_else(|| panic!("fixture lacks {name}")).1.clone();
    let stacked = |names: &[String]| names.iter().flat_map(|n| get(n)).collect::<Vec<f32>>();
    assert_eq!(file_tensor(&file, "token_embd.weight").2, get("model.embed_tokens.weight"));
    assert_eq!(file_tensor(&file, "output.weight").2, get("lm_head.weight"));
    assert_eq!(file_tensor(&file, "output_norm.weight").2, get("model.norm.weight"));
    for layer in 0..2 {
        let p = format!("model.layers.{layer}");
        let qkv = ["q_proj", "k_proj", "v_proj"].map(|m| format!("{p}.self_attn.{m}.weight"));
        let (rows, cols, data) = file_tensor(&file, &format!("blk.{layer}.attn_qkv.weight"));
        assert_eq!((rows, cols), (64 + 2 * 32, 64));
        assert_eq!(data, stacked(&qkv), "layer {layer}: Q, K, V stacked in order");
        let up = [format!("{p}.mlp.gate_proj.weight"), format!("{p}.mlp.up_proj.weight")];
        assert_eq!(file_tensor(&file, &format!("blk.{layer}.ffn_up.weight")).2, stacked(&up));
        let pairs = [
            ("attn_output.weight", "self_attn.o_proj.weight"),
            ("ffn_down.weight", "mlp.down_proj.weight"),
            ("attn_norm.weight", "input_layernorm.weight"),
            ("ffn_norm.weight", "post_attention_layernorm.weight"),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(file_tensor(&file, &format!("blk.{layer}.{ours}")).2, get(&format!("{p}.{theirs}")), "{ours}");
        }
    }
}

#[test]
fn tiny_gpt2_f32_tensors_equal_the_checkpoint_conv1d_transposed() {
    let dir = tmp_dir("gpt2-f32");
    let file = open_verified(&convert_lib("tiny-gpt2", DType::F32, &dir));
    let h = *file.hparams();
    assert_eq!(h.arch, Arch::Gpt2);
    assert_eq!((h.n_layers, h.dim, h.n_heads, h.n_kv_heads, h.head_dim), (2, 64, 4, 4, 16));
    assert_eq!((h.ffn_dim, h.vocab_size, h.max_seq_len, h.norm_eps), (256, 384, 64, 1e-5));
    assert!(h.tied_embeddings);
    assert!(file.tensor("output.weight").is_none());
    let tok = file.tokenizer();
    assert_eq!((tok.bos_id, tok.eos_id), (Some(0), Some(0)), "from tokenizer_config.json");

    let st = safetensors_values(&fixture("tiny-gpt2"));
    let get = |name: &str| st.get(name).unwrap_or_else(|| panic!("fixture lacks {name}")).clone();
    assert_eq!(file_tensor(&file, "token_embd.weight").2, get("wte.weight").1);
    assert_eq!(file_tensor(&file, "position_embd.weight").2, get("wpe.weight").1);
    assert_eq!(file_tensor(&file, "output_norm.bias").2, get("ln_f.bias").1);
    for layer in 0..2 {
        let conv1d = [
            ("attn_qkv", "attn.c_attn", 192),
            ("attn_output", "attn.c_proj", 64),
            ("ffn_up", "mlp.c_fc", 256),
            ("ffn_down", "mlp.c_proj", 64),
        ];
        for (ours, theirs, out_dim) in conv1d {
            let (shape, data) = get(&format!("h.{layer}.{theirs}.weight"));
            let (rows, cols, ours_w) = file_tensor(&file, &format!("blk.{layer}.{ours}.weight"));
            assert_eq!((rows, cols), (shape[1], shape[0]), "{ours}: [in, out] becomes [out, in]");
            assert_eq!(rows, out_dim);
            assert_eq!(ours_w, transposed(&shape, &data), "{ours}");
            assert_eq!(
                file_tensor(&file, &format!("blk.{layer}.{ours}.bias")).2,
                get(&format!("h.{layer}.{theirs}.bias")).1
            );
        }
        for (ours, theirs) in [("attn_norm", "ln_1"), ("ffn_norm", "ln_2")] {
            for kind in ["weight", "bias"] {
                let expect = get(&format!("h.{layer}.{theirs}.{kind}")).1;
                assert_eq!(file_tensor(&file, &format!("blk.{layer}.{ours}.{kind}")).2, expect);
            }
        }
    }
}

#[test]
fn q8_files_load_and_stay_within_quantization_error() {
    for model in ["tiny-llama", "tiny-gpt2"] {
        let dir = tmp_dir(&format!("{model}-q8"));
        let q8 = open_verified(&convert_lib(model, DType::Q8, &dir));
        let f32_file = open_verified(&convert_lib(model, DType::F32, &dir));
        assert_eq!(q8.weight_dtype(), DType::Q8);
        assert_eq!(q8.hparams(), f32_file.hparams());
        assert_eq!(q8.tokenizer(), f32_file.tokenizer());
        for info in f32_file.tensors() {
            let (rows, cols, exact) = file_tensor(&f32_file, &info.name);
            let (_, _, quant) = file_tensor(&q8, &info.name);
            for (r, (e, q)) in exact.chunks(cols).zip(quant.chunks(cols)).enumerate() {
                // Blocks of 32 share one scale, searched between max|x|/127 and
                // max|x|/119 for the least squared error (quant/src/q8.rs): each
                // value is within about half of the largest step.
                for (block, (eb, qb)) in e.chunks(32).zip(q.chunks(32)).enumerate() {
                    let step = eb.iter().fold(0f32, |m, v| m.max(v.abs())) / 119.0 * 1.02;
                    for (x, y) in eb.iter().zip(qb) {
                        assert!(
                            (x - y).abs() <= step * 0.5 + 1e-3 * step + 1e-7,
                            "{model} {} [{r}/{rows}] block {block}: {x} vs {y}",
                            info.name
                        );
                    }
                }
            }
        }
    }
}

/// The binary writes byte for byte what the library writes.
#[test]
fn binary_converts_both_fixtures_like_the_library() {
    for (model, dtype) in [("tiny-llama", DType::Q8), ("tiny-gpt2", DType::F32)] {
        let dir = tmp_dir(&format!("bin-{model}"));
        let lib_out = convert_lib(model, dtype, &dir);
        let bin_out = dir.join("bin.gpt");
        let out = Command::new(env!("CARGO_BIN_EXE_gpt-fast-convert"))
            .arg(fixture(model))
            .args(["--quant", dtype.name(), "-q", "-o"])
            .arg(&bin_out)
            .output()
            .unwrap();
        assert!(out.status.success(), "{model}: {}", String::from_utf8_lossy(&out.stderr));
        open_verified(&bin_out);
        assert!(std::fs::read(&bin_out).unwrap() == std::fs::read(&lib_out).unwrap(), "{model}: files differ");
    }
}

fn copy_fixture(model: &str, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(fixture(model)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap();
        if !skip.contains(&name) {
            std::fs::copy(&path, to.join(name)).unwrap();
        }
    }
}

/// The folder must fail to open or convert with `expect` (and `names`) in the
/// error, from the library and from the binary (exit 1), and leave the output
/// folder empty: no file, no temporary file.
fn refused(name: &str, input: &Path, expect: &[&str]) {
    let out_dir = tmp_dir(&format!("out-{name}"));
    let out = out_dir.join("model.gpt");
    let err = match HfSource::open(input) {
        Err(e) => e.to_string(),
        Ok(source) => convert(&source, input, &out, DType::Q8, |_, _, _| {}).unwrap_err().to_string(),
    };
    for want in expect {
        assert!(err.contains(want), "{name}: '{want}' not in: {err}");
    }
    let run =
        Command::new(env!("CARGO_BIN_EXE_gpt-fast-convert")).arg(input).arg("-q").arg("-o").arg(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{name}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: one line expected: {stderr}");
    for want in expect {
        assert!(stderr.contains(want), "{name}: '{want}' not in: {stderr}");
    }
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "{name}: left behind {left:?}");
}

#[test]
fn unknown_architecture_is_named() {
    let dir = tmp_dir("bad-arch");
    copy_fixture("tiny-gpt2", &dir, &[]);
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), config.replace("GPT2LMHeadModel", "BertForMaskedLM")).unwrap();
    refused("bad-arch", &dir, &["config.json", "BertForMaskedLM"]);
}

#[test]
fn missing_tensor_is_named() {
    let dir = tmp_dir("missing-tensor");
    copy_fixture("tiny-gpt2", &dir, &["model.safetensors"]);
    let bytes = std::fs::read(fixture("tiny-gpt2").join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = st.tensors().into_iter().filter(|(n, _)| n != "h.1.mlp.c_fc.weight").collect();
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(kept, &None).unwrap()).unwrap();
    refused("missing-tensor", &dir, &["missing tensor", "h.1.mlp.c_fc.weight"]);
}

#[test]
fn missing_shard_and_tokenizer_are_named() {
    let dir = tmp_dir("no-tokenizer");
    copy_fixture("tiny-llama", &dir, &["tokenizer.json"]);
    refused("no-tokenizer", &dir, &["tokenizer.json", "not found"]);
    let dir = tmp_dir("no-shard");
    copy_fixture("tiny-llama", &dir, &["model-00002-of-00002.safetensors"]);
    refused("no-shard", &dir, &["model-00002-of-00002.safetensors"]);
}

#[test]
fn vocab_mismatch_names_both_sizes() {
    let dir = tmp_dir("vocab");
    copy_fixture("tiny-llama", &dir, &[]);
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), config.replace("\"vocab_size\": 352", "\"vocab_size\": 384")).unwrap();
    refused("vocab", &dir, &["vocab_size 384", "352 tokens"]);
}

#[test]
fn nonexistent_and_unknown_inputs_are_named() {
    let dir = tmp_dir("nonexistent");
    let missing = dir.join("no-such-model");
    refused("nonexistent", &missing, &["no-such-model"]);
    let not_gguf = dir.join("weights.bin");
    std::fs::write(&not_gguf, b"PK\x03\x04 not a model").unwrap();
    let out_dir = tmp_dir("out-not-gguf");
    let run = Command::new(env!("CARGO_BIN_EXE_gpt-fast-convert"))
        .arg(&not_gguf)
        .arg("-q")
        .arg("-o")
        .arg(out_dir.join("m.gpt"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("weights.bin") && stderr.contains("neither"), "{stderr}");
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);
}

/// tiny-llama.gguf was made from tiny-llama/ by llama.cpp's own converter (see
/// tools/fixtures/hf_tiny_models.py), which permutes the Q and K rows for its
/// RoPE: converting either gives the same hyper-parameters, tokenizer and
/// tensors, which shows the GGUF reader undoes the permutation (GQA included).
#[test]
fn llama_cpp_gguf_converts_to_the_same_tensors_as_the_hf_folder() {
    let dir = tmp_dir("gguf-cross");
    let from_hf = open_verified(&convert_lib("tiny-llama", DType::F32, &dir));
    let gguf_out = dir.join("from-gguf.gpt");
    let run = Command::new(env!("CARGO_BIN_EXE_gpt-fast-convert"))
        .arg(fixture("tiny-llama.gguf"))
        .args(["--quant", "f32", "-q", "-o"])
        .arg(&gguf_out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let from_gguf = open_verified(&gguf_out);
    assert_eq!(from_gguf.hparams(), from_hf.hparams());
    let (a, b) = (from_gguf.tokenizer(), from_hf.tokenizer());
    // Token types are left out: llama.cpp assigns its own.
    assert_eq!((a.pre, &a.tokens, &a.merges), (b.pre, &b.tokens, &b.merges));
    assert_eq!((a.bos_id, a.eos_id, a.add_bos, a.add_eos), (b.bos_id, b.eos_id, b.add_bos, b.add_eos));
    assert_eq!(a.chat_template, b.chat_template);
    let names: Vec<_> = from_hf.tensors().iter().map(|t| t.name.clone()).collect();
    assert_eq!(from_gguf.tensors().iter().map(|t| t.name.clone()).collect::<Vec<_>>(), names);
    for name in &names {
        assert_eq!(file_tensor(&from_gguf, name), file_tensor(&from_hf, name), "{name}");
    }
}
