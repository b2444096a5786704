//! The conversion driver: any [`Source`] to a gpt-fast model file.

use std::path::Path;

use crate::format::encode::encode_tensor;
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
                encode_tensor(writer.entry_dtype(index), spec.rows as usize, spec.cols as usize, &data, &mut bytes);
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
