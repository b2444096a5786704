//! Builds each gpt-fast tensor from a [`Source`]'s canonical tensors: the fused
//! Q/K/V (weights and biases) and gate/up matrices of the Llama family are
//! assembled here, once for every checkpoint format. A checkpoint that stores
//! them fused already (Phi-3) is read as it is.

use std::path::Path;

use crate::format::{Arch, TensorSpec};

use crate::import::source::{Source, SourceTensor};
use crate::import::ConvertError;

/// The canonical source tensors whose rows, stacked in order, make `name`.
fn parts(source: &dyn Source, name: &str) -> Vec<String> {
    let fused =
        |layer: &str, suffix: &str, pieces: &[&str]| pieces.iter().map(|p| format!("{layer}.{p}.{suffix}")).collect();
    if source.hparams().arch == Arch::Llama && !source.has(name) {
        for suffix in ["weight", "bias"] {
            if let Some(layer) = name.strip_suffix(&format!(".attn_qkv.{suffix}")) {
                return fused(layer, suffix, &["attn_q", "attn_k", "attn_v"]);
            }
        }
    }
    if source.hparams().arch == Arch::Llama {
        if let Some(layer) = name.strip_suffix(".ffn_up.weight") {
            // Separate gate and up (else `ffn_up` holds both, gate rows first).
            if source.has(&format!("{layer}.ffn_gate.weight")) {
                return fused(layer, "weight", &["ffn_gate", "ffn_up"]);
            }
        }
    }
    vec![name.to_string()]
}

/// Reads and assembles one tensor of the gpt-fast file, checking its shape.
pub fn assemble(source: &dyn Source, spec: &TensorSpec, path: &Path) -> Result<Vec<f32>, ConvertError> {
    let mut data = Vec::with_capacity(spec.n_elements() as usize);
    let mut rows = 0;
    for part in parts(source, &spec.name) {
        let SourceTensor { rows: r, cols, data: d } = source.tensor(&part)?;
        if cols as u64 != spec.cols {
            return Err(ConvertError::Tensor {
                path: path.to_path_buf(),
                name: part,
                reason: format!("has {cols} columns, the hyper-parameters give {}", spec.cols),
            });
        }
        rows += r;
        data.extend_from_slice(&d);
    }
    if rows as u64 != spec.rows {
        return Err(ConvertError::Tensor {
            path: path.to_path_buf(),
            name: spec.name.clone(),
            reason: format!("has {rows} rows, the hyper-parameters give {}", spec.rows),
        });
    }
    Ok(data)
}
