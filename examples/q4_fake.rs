//! Scores a candidate layout for gpt-fast's own q4 before any kernel exists
//! (#13, docs/FORMAT.md "q4_kr"): every matrix of an f32 model is encoded
//! and decoded back to f32 (the embedding and head as q8, as `--quant q4`
//! stores them), and the result written as an f32 model for `gpt-fast
//! perplexity`. It also prints the relative squared error of the 4-bit
//! matrices.
//!
//!     cargo run --release --example q4_fake -- IN.gpt OUT.gpt CANDIDATE
//!
//! CANDIDATE, for rows that are not whole 256-value super-blocks (Q4_K on
//! the others): `q4` (Q4_1, 5 bits), `q4_0` (Q4_0), `row` (q4_kr: Q4_K's
//! sub-blocks under a scale per row), `split` (Q4_K on the whole super-blocks,
//! Q4_0 on the rest of the row); `rowall` (q4_kr on every matrix), `f32`.
use std::path::Path;

use gpt_fast::format::{DType, ModelFile, ModelWriter, TensorRole};
use gpt_fast_quant::kquant::q4_k::quantize_shared;
use rayon::prelude::*;

fn roundtrip(d: DType, rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
    let mut bytes = Vec::new();
    d.encode(rows, cols, x, &mut bytes);
    d.decode(&bytes, rows, cols)
}

fn columns(x: &[f32], cols: usize, r: std::ops::Range<usize>) -> Vec<f32> {
    x.chunks_exact(cols).flat_map(|row| row[r.clone()].iter().copied()).collect()
}

fn shared_rows(x: &[f32], cols: usize, group: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    out.par_chunks_exact_mut(cols).zip(x.par_chunks_exact(cols)).for_each(|(o, row)| {
        for (o, g) in o.chunks_mut(group).zip(row.chunks(group)) {
            quantize_shared(g).dequantize(o);
        }
    });
    out
}

fn fake(candidate: &str, name: &str, rows: usize, cols: usize, x: &[f32]) -> Result<Vec<f32>, String> {
    if matches!(name, "token_embd.weight" | "output.weight") {
        return Ok(roundtrip(DType::Q8, rows, cols, x));
    }
    let whole = cols.is_multiple_of(256);
    Ok(match candidate {
        "q4" if whole => roundtrip(DType::Q4_K, rows, cols, x),
        "q4" => roundtrip(DType::Q4_1, rows, cols, x),
        "q4_0" if whole => roundtrip(DType::Q4_K, rows, cols, x),
        "q4_0" => roundtrip(DType::Q4_0, rows, cols, x),
        "row" if whole => roundtrip(DType::Q4_K, rows, cols, x),
        "row" => shared_rows(x, cols, cols),
        "rowall" => shared_rows(x, cols, cols),
        "split" if whole => roundtrip(DType::Q4_K, rows, cols, x),
        "split" => {
            let head = cols / 256 * 256;
            let a = roundtrip(DType::Q4_K, rows, head, &columns(x, cols, 0..head));
            let b = roundtrip(DType::Q4_0, rows, cols - head, &columns(x, cols, head..cols));
            a.chunks_exact(head)
                .zip(b.chunks_exact(cols - head))
                .flat_map(|(a, b)| a.iter().chain(b).copied())
                .collect()
        }
        "f32" => x.to_vec(),
        _ => return Err(format!("unknown candidate '{candidate}' (q4, q4_0, row, split, rowall, f32)")),
    })
}

fn main() {
    if let Err(e) = run() {
        eprintln!("q4_fake: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, candidate] = &args[..] else {
        return Err("usage: q4_fake IN.gpt OUT.gpt CANDIDATE".into());
    };
    let file = ModelFile::open(Path::new(input)).map_err(|e| e.to_string())?;
    if file.weight_dtype() != DType::F32 {
        return Err(format!("{input}: needs an f32 model (convert --quant f32), not {}", file.weight_dtype().name()));
    }
    let mut w = ModelWriter::create(Path::new(output), file.hparams(), DType::F32, file.tokenizer())
        .map_err(|e| e.to_string())?;
    let specs = w.tensors().to_vec();
    let mut err = (0f64, 0f64);
    for spec in specs {
        let info = file.tensor(&spec.name).ok_or_else(|| format!("{input}: no tensor {}", spec.name))?;
        let bytes = file.tensor_bytes(info);
        if spec.role != TensorRole::Matmul {
            w.write_tensor(&spec.name, bytes).map_err(|e| e.to_string())?;
            continue;
        }
        let x: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let y = fake(candidate, &spec.name, spec.rows as usize, spec.cols as usize, &x)?;
        if !matches!(spec.name.as_str(), "token_embd.weight" | "output.weight") {
            err.0 += x.iter().zip(&y).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>();
            err.1 += x.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>();
        }
        let out: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.write_tensor(&spec.name, &out).map_err(|e| e.to_string())?;
    }
    w.finish().map_err(|e| e.to_string())?;
    println!("{candidate}: relative squared error of the 4-bit matrices {:.6e}", err.0 / err.1);
    Ok(())
}
