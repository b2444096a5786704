//! From the MODEL a user gave to the gpt-fast model file to open: a model
//! file as it is; a GGUF file or a Hugging Face folder through the
//! conversion cache (`gpt_fast::import::cache`); anything else refused with
//! what it is and what to give instead.

use std::path::{Path, PathBuf};

use gpt_fast::format::DType;
use gpt_fast::import::cache;
use gpt_fast::import::detect::{detect, InputKind};
use gpt_fast::import::weight_types::{default_quant, Quant};

const WANTED: &str = "give a gpt-fast model file, a GGUF file or a Hugging Face model folder";

/// The model file for `path`, converting a GGUF or Hugging Face source into
/// the cache first if need be (reported on stderr, with a progress bar on a
/// terminal). `quant` picks the cached conversion's weight type; without
/// it, the converter's default (a GGUF's own types, else q8).
pub fn model_file(path: &Path, quant: Option<DType>) -> Result<PathBuf, String> {
    let name = path.display();
    let kind = detect(path).map_err(|e| format!("{name}: {e}"))?;
    match kind {
        InputKind::GptFast => Ok(path.to_path_buf()),
        InputKind::Gguf | InputKind::HfFolder => {
            let quant = quant.map_or_else(|| default_quant(kind == InputKind::Gguf), Quant::To);
            let entry = cache::entry_path(path, quant).map_err(|e| e.to_string())?;
            if entry.is_file() {
                eprintln!(
                    "gpt-fast: {name} is {}; using its conversion to {}, {}",
                    kind.describe(),
                    quant.describe(),
                    entry.display()
                );
                return Ok(entry);
            }
            eprintln!(
                "gpt-fast: {name} is {}; converting it to {} once, into {}",
                kind.describe(),
                quant.describe(),
                entry.display()
            );
            let start = std::time::Instant::now();
            let bar = gpt_fast::import::command::tensor_progress(false);
            let cached = cache::cached_model(path, quant, |done, total, tensor| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                bar.set_message(tensor.to_string());
            });
            bar.finish_and_clear();
            let cached = cached.map_err(|e| e.to_string())?;
            eprintln!("gpt-fast: converted in {:.1} s; later runs use the cached file", start.elapsed().as_secs_f64());
            Ok(cached.path)
        }
        InputKind::Safetensors => Err(format!(
            "{name} is a safetensors file, which holds weights only: give the Hugging Face folder that holds it \
             (with config.json and tokenizer.json), e.g. gpt-fast run {}",
            path.parent().map_or_else(|| ".".into(), |p| p.display().to_string())
        )),
        InputKind::Folder => Err(format!("{name} is a folder without config.json: {WANTED}")),
        InputKind::NotRegular => Err(format!("{name} is not a regular file: {WANTED}")),
        InputKind::Unknown => {
            Err(format!("{name}: not a gpt-fast model file, nor a GGUF or safetensors file: {WANTED}"))
        }
    }
}

/// The model file for `verify`, which checks gpt-fast files only.
pub fn file_to_verify(path: &Path) -> Result<PathBuf, String> {
    let name = path.display();
    match detect(path).map_err(|e| format!("{name}: {e}"))? {
        InputKind::GptFast => Ok(path.to_path_buf()),
        kind @ (InputKind::Gguf | InputKind::HfFolder) => Err(format!(
            "{name} is {}; verify checks gpt-fast model files: run it as it is (gpt-fast run {name}), \
             or convert it (gpt-fast convert {name} -o model.bin)",
            kind.describe()
        )),
        // Same messages as for the other commands.
        _ => model_file(path, None),
    }
}
