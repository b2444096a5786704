//! The conversion driver: any [`Source`] to a gpt-fast model file.

use std::path::Path;

use crate::format::spec::{expected_elements, expected_tensor_count};
use crate::format::ModelWriter;
use rayon::prelude::*;

use crate::import::assemble::{assemble, assemble_raw};
use crate::import::source::Source;
use crate::import::weight_types::{self, Quant, TensorPlan};
use crate::import::ConvertError;

/// What a conversion did that its caller may want to tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvertReport {
    /// With `keep`: one line naming the tensors stored as q8 and why.
    pub note: Option<String>,
}

/// Writes `source` to `out` with matmul weights stored as `quant` says (a
/// [`DType`](crate::format::DType) for all, [`Quant::Q4`] or [`Quant::Keep`]). `input` names the checkpoint in
/// errors; `on_tensor(done, total, name)` reports progress.
pub fn convert(
    source: &dyn Source,
    input: &Path,
    out: &Path,
    quant: impl Into<Quant>,
    mut on_tensor: impl FnMut(usize, usize, &str),
) -> Result<ConvertReport, ConvertError> {
    check_backed(source, input)?;
    let quant = quant.into();
    let specs = crate::format::expected_tensors(source.hparams());
    let mut plans = weight_types::plan(source, &specs, quant);
    let header_dtype = match quant {
        Quant::To(d) => d,
        Quant::Keep | Quant::Q4 => weight_types::dominant(&specs, plans.iter().map(|p| p.dtype)),
    };
    let dtype_of = |spec: &crate::format::TensorSpec| {
        let index = specs.iter().position(|s| s.name == spec.name).expect("the same tensor list");
        plans[index].dtype
    };
    let mut writer = ModelWriter::create_typed(out, source.hparams(), header_dtype, dtype_of, source.tokenizer())?;
    assert_eq!(writer.tensors(), &specs[..], "the writer lists the tensors the hyper-parameters imply");
    let total = specs.len();
    // Tensors are read and encoded a few at a time in parallel, then written in order.
    let batch = rayon::current_num_threads().max(1) * 2;
    for (chunk_index, chunk) in specs.chunks(batch).enumerate() {
        let encoded: Vec<(Vec<u8>, Option<String>)> = chunk
            .par_iter()
            .enumerate()
            .map(|(k, spec)| tensor_bytes(source, spec, &plans[chunk_index * batch + k], input))
            .collect::<Result<_, ConvertError>>()?;
        for (k, (spec, (bytes, fallback))) in chunk.iter().zip(encoded).enumerate() {
            let index = chunk_index * batch + k;
            debug_assert_eq!(writer.entry_dtype(index), plans[index].dtype);
            if fallback.is_some() {
                plans[index].fallback = fallback;
            }
            writer.write_tensor(&spec.name, &bytes)?;
            on_tensor(index + 1, total, &spec.name);
        }
    }
    writer.finish()?;
    Ok(ConvertReport { note: weight_types::fallback_note(&specs, &plans) })
}

/// One tensor's bytes as `plan` stores it, and why it was not kept after all
/// (a GGUF Q8_0 tensor holding -128, which q8 does not: encoded from its
/// values instead, into the same type).
fn tensor_bytes(
    source: &dyn Source,
    spec: &crate::format::TensorSpec,
    plan: &TensorPlan,
    input: &Path,
) -> Result<(Vec<u8>, Option<String>), ConvertError> {
    let (rows, cols) = (spec.rows as usize, spec.cols as usize);
    let mut bytes = Vec::new();
    let mut fallback = None;
    if let Some(ty) = plan.kept {
        let raw = assemble_raw(source, spec, input)?;
        let repack = plan.dtype.traits().repack_ggml.expect("kept types repack");
        let n_bytes = plan.dtype.n_bytes(spec.rows, spec.cols).expect("checked by the writer") as usize;
        bytes.resize(n_bytes, 0);
        if repack(&raw.bytes, rows, cols, &mut bytes) {
            return Ok((bytes, None));
        }
        if plan.dtype.traits().encode.is_none() {
            return Err(ConvertError::Tensor {
                path: input.to_path_buf(),
                name: spec.name.clone(),
                reason: format!("its {} blocks do not repack as {}", ty.name(), plan.dtype.name()),
            });
        }
        fallback = Some(format!("a {} quant is -128, which {} does not hold", ty.name(), plan.dtype.name()));
    }
    let data = assemble(source, spec, input)?;
    plan.dtype.encode(rows, cols, &data, &mut bytes);
    Ok((bytes, fallback))
}

/// Refuses hyper-parameters that call for more tensors or elements than the
/// checkpoint stores, before the tensor list or any tensor is allocated from
/// them (a metadata count of 16,777,215 layers would otherwise be believed).
/// Every gpt-fast tensor is built from the checkpoint's (Llama's fused ones
/// from several), so a genuine checkpoint never holds fewer of either; a
/// checkpoint short of a tensor or two is left to the per-tensor errors, which
/// name it (the slack: twice what is stored, plus a little).
pub fn check_backed(source: &dyn Source, input: &Path) -> Result<(), ConvertError> {
    let h = source.hparams();
    let stored = source.stored();
    let fail = |reason: String| ConvertError::Input { path: input.to_path_buf(), reason };
    let tensors = expected_tensor_count(h);
    if tensors > stored.tensors.saturating_mul(2).saturating_add(64) {
        return Err(fail(format!(
            "the hyper-parameters ({} layers) call for {tensors} tensors, the checkpoint has {}",
            h.n_layers, stored.tensors
        )));
    }
    match expected_elements(h) {
        Some(elements) if elements <= stored.elements.saturating_mul(2).saturating_add(1 << 20) => Ok(()),
        elements => Err(fail(format!(
            "the hyper-parameters (dim {}, ffn {}, {} layers, vocab {}) call for {} weights, the checkpoint has {}",
            h.dim,
            h.ffn_dim,
            h.n_layers,
            h.vocab_size,
            elements.map_or_else(|| "more than 2^64".to_string(), |e| e.to_string()),
            stored.elements
        ))),
    }
}
