//! `gpt-fast tokenize` and `gpt-fast perplexity`.

use std::path::Path;

use gpt_fast::import::detect::{detect, InputKind};
use gpt_fast::import::gguf::GgufFile;
use gpt_fast::import::tokenizer_import::tokenizer_from_gguf;
use gpt_fast::model::{Model, ModelOptions};

use super::{print_out, progress, source, CliResult, ModelArgs};

/// A GGUF's tokenizer is read from its metadata alone, with no conversion,
/// so llama.cpp's vocab-only test files work too; anything else goes through
/// the model file as `run` does.
pub fn tokenize(path: &Path, text: &str, parse_special: bool) -> CliResult {
    let ids = if matches!(detect(path), Ok(InputKind::Gguf)) {
        let name = path.display();
        let file = GgufFile::open(path).map_err(|e| format!("{name}: {e}"))?;
        let tokenizer = tokenizer_from_gguf(&file).map_err(|e| format!("{name}: {e}"))?;
        tokenizer.encode_prompt(text, parse_special)
    } else {
        let model = Model::open(&source::model_file(path, None)?, ModelOptions::default())?;
        model.tokenizer().encode_prompt(text, parse_special)
    };
    let list: Vec<String> = ids.iter().map(u32::to_string).collect();
    print_out(&format!("[{}]\n", list.join(", ")))
}

pub fn perplexity(path: &Path, model_args: &ModelArgs, text: &str, context: usize, stream: bool) -> CliResult {
    let threads = model_args.threads();
    let model = Model::open(&source::model_file(path, model_args.quant)?, model_args.model_options())?;
    let tokens = model.tokenizer().encode_prompt(text, false);
    let kv = model_args.kv_type;
    let batch = context.min(512);
    let start = std::time::Instant::now();
    let bar = progress::bar(0, if stream { "tokens" } else { "chunks" });
    let progress = |done: usize, total: usize, ppl: f64| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(format!("running PPL = {ppl:.4}"));
    };
    let result = if stream {
        gpt_fast::perplexity::perplexity_stream(&model, &tokens, context, batch, threads, kv, progress)
    } else {
        gpt_fast::perplexity::perplexity(&model, &tokens, context, batch, threads, kv, progress)
    };
    bar.finish_and_clear();
    let result = result?;
    eprintln!(
        "{} tokens, {} scored in {} chunk(s) of context {context}{}, {:.1} s",
        tokens.len(),
        result.scored_tokens,
        result.chunks,
        if stream { " (one pass through the ring cache)" } else { "" },
        start.elapsed().as_secs_f64()
    );
    print_out(&format!("PPL = {:.4} +/- {:.5}\n", result.ppl, result.stderr))
}
