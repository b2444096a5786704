//! Builds each gpt-fast tensor from a [`Source`]'s canonical tensors: the fused
//! Q/K/V (weights and biases) and gate/up matrices of the Llama family are
//! assembled here, once for every checkpoint format. A checkpoint that stores
//! them fused already (Phi-3) is read as it is.

use std::path::Path;

use crate::format::{Arch, TensorSpec};

use crate::import::source::{RawTensor, Source, SourceTensor};
use crate::import::ConvertError;
use gpt_fast_quant::ggml::GgmlType;

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

/// The stored ggml types of the parts that make `spec` (`None` for a part
/// the checkpoint does not store in ggml blocks).
pub fn part_types(source: &dyn Source, spec: &TensorSpec) -> Vec<Option<GgmlType>> {
    parts(source, &spec.name).iter().map(|p| source.stored_type(p)).collect()
}

/// Reads and assembles one tensor as stored, its parts' rows stacked in
/// order; the parts must share one ggml type (checked by the caller through
/// [`part_types`]), so a row of the result is one type's blocks.
pub fn assemble_raw(source: &dyn Source, spec: &TensorSpec, path: &Path) -> Result<RawTensor, ConvertError> {
    let mut out: Option<RawTensor> = None;
    for part in parts(source, &spec.name) {
        let raw = source.raw_tensor(&part)?;
        let fail = |reason: String| ConvertError::Tensor { path: path.to_path_buf(), name: part.clone(), reason };
        if raw.cols as u64 != spec.cols {
            return Err(fail(format!("has {} columns, the hyper-parameters give {}", raw.cols, spec.cols)));
        }
        match &mut out {
            None => out = Some(raw),
            Some(whole) if whole.ty == raw.ty => {
                whole.rows += raw.rows;
                whole.bytes.extend_from_slice(&raw.bytes);
            }
            Some(whole) => {
                return Err(fail(format!("is {}, the tensor it is fused with {}", raw.ty.name(), whole.ty.name())))
            }
        }
    }
    let whole = out.expect("a tensor has at least one part");
    if whole.rows as u64 != spec.rows {
        return Err(ConvertError::Tensor {
            path: path.to_path_buf(),
            name: spec.name.clone(),
            reason: format!("has {} rows, the hyper-parameters give {}", whole.rows, spec.rows),
        });
    }
    Ok(whole)
}
