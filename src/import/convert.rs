//! The conversion driver: any [`Source`] to a gpt-fast model file.

use std::path::Path;

use crate::format::spec::{expected_elements, expected_tensor_count};
use crate::format::{DType, ModelWriter};
use rayon::prelude::*;

use crate::import::assemble::assemble;
use crate::import::source::Source;
use crate::import::ConvertError;

/// Writes `source` to `out` with matmul weights stored as `dtype`.
/// `input` names the checkpoint in errors; `on_tensor(done, total, name)` reports progress.
pub fn convert(
    source: &dyn Source,
    input: &Path,
    out: &Path,
    dtype: DType,
    mut on_tensor: impl FnMut(usize, usize, &str),
) -> Result<(), ConvertError> {
    check_backed(source, input)?;
    let mut writer = ModelWriter::create(out, source.hparams(), dtype, source.tokenizer())?;
    let specs = writer.tensors().to_vec();
    let total = specs.len();
    // Tensors are read and encoded a few at a time in parallel, then written in order.
    let batch = rayon::current_num_threads().max(1) * 2;
    for (chunk_index, chunk) in specs.chunks(batch).enumerate() {
        let encoded: Vec<Vec<u8>> = chunk
            .par_iter()
            .enumerate()
            .map(|(k, spec)| {
                let data = assemble(source, spec, input)?;
                let mut bytes = Vec::new();
                let index = chunk_index * batch + k;
                writer.entry_dtype(index).encode(spec.rows as usize, spec.cols as usize, &data, &mut bytes);
                Ok(bytes)
            })
            .collect::<Result<_, ConvertError>>()?;
        for (k, (spec, bytes)) in chunk.iter().zip(encoded).enumerate() {
            writer.write_tensor(&spec.name, &bytes)?;
            on_tensor(chunk_index * batch + k + 1, total, &spec.name);
        }
    }
    writer.finish()?;
    Ok(())
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
