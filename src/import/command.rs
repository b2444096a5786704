//! The `convert` command's arguments and body, shared by `gpt-fast convert`
//! and the standalone `gpt-fast-convert` binary so the two cannot drift.
//! Built with the `cli` feature only (clap, indicatif).

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use crate::import::weight_types::{default_quant, q4_dtype, Quant};

/// Convert a GGUF file or a Hugging Face model folder to gpt-fast's model file.
#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// A GGUF file (llama, qwen2, qwen3, gemma3, phi3, gpt2), or a Hugging Face
    /// folder with config.json (LlamaForCausalLM, MistralForCausalLM,
    /// Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM,
    /// GPT2LMHeadModel), *.safetensors and tokenizer.json. Not used with --synthetic.
    #[arg(required_unless_present = "synthetic", value_name = "INPUT")]
    pub input: Option<PathBuf>,
    /// Where to write the model file (its folder must exist; written to a
    /// temporary file there, then renamed).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Weight type of the matmul weights: one type for all, `q4`: gpt-fast's
    /// own 4-bit weights (q4_k, 4.5 bits per weight, where rows are whole
    /// 256-value super-blocks, else q4_1, 5 bits; embedding and head q8), or `keep`: each tensor's own GGUF
    /// type where gpt-fast runs it natively (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
    /// Q4_K, Q5_K, Q6_K; every value unchanged), q8 for the others. Default:
    /// keep for a GGUF file, q8 otherwise.
    #[arg(long, value_name = "keep|q4|q8|q4_1|q4_0|f16|f32")]
    pub quant: Option<Quant>,
    /// Write random weights with the shapes of a named configuration instead
    /// (their text output is meaningless): smollm2-135m, tinyllama-1.1b,
    /// llama2-7b, gpt2-124m, gpt2-xl, test-llama, test-gpt2.
    #[arg(long, conflicts_with = "input", value_name = "NAME")]
    pub synthetic: Option<String>,
    /// Seed for --synthetic.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// No progress bar and no closing line.
    #[arg(short, long)]
    pub quiet: bool,
}

/// A progress bar over a conversion's tensors, on stderr; drawn only when
/// stderr is a terminal.
pub fn tensor_progress(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tensors, {elapsed} (ETA {eta}) {msg}")
            .expect("static template"),
    );
    bar
}

/// Runs `convert`: checks the output's folder first, so a typo costs no
/// conversion and names no temporary file.
pub fn run(args: &ConvertArgs) -> Result<(), Box<dyn std::error::Error>> {
    check_output(&args.output)?;
    let bar = tensor_progress(args.quiet);
    let on_tensor = |done: usize, total: usize, name: &str| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(name.to_string());
    };
    if let Some(name) = &args.synthetic {
        let hparams = crate::synthetic::config(name).ok_or_else(|| {
            let names: Vec<_> = crate::synthetic::configs().into_iter().map(|(n, _)| n).collect();
            format!("unknown synthetic config '{name}' (known: {})", names.join(", "))
        })?;
        let progress = |done, total| on_tensor(done, total, "");
        match args.quant.unwrap_or(default_quant(false)) {
            Quant::To(d) => crate::synthetic::write(&args.output, &hparams, d, args.seed, progress)?,
            Quant::Q4 => {
                let specs = crate::format::expected_tensors(&hparams);
                let header = crate::import::weight_types::dominant(&specs, specs.iter().map(q4_dtype));
                crate::synthetic::write_typed(&args.output, &hparams, header, q4_dtype, args.seed, progress)?
            }
            Quant::Keep => return Err("--quant keep keeps a GGUF file's types; --synthetic has none".into()),
        }
    } else {
        let input = args.input.as_deref().expect("clap requires INPUT without --synthetic");
        let is_gguf = crate::import::detect::detect(input).is_ok_and(|k| k == crate::import::detect::InputKind::Gguf);
        let quant = args.quant.unwrap_or(default_quant(is_gguf));
        let source = crate::import::detect::open_source(input)?;
        let report = crate::import::convert::convert(source.as_ref(), input, &args.output, quant, on_tensor)?;
        if let Some(note) = report.note.filter(|_| !args.quiet) {
            bar.suspend(|| eprintln!("note: {note}"));
        }
    }
    bar.finish_and_clear();
    if !args.quiet {
        eprintln!("wrote {}", args.output.display());
    }
    Ok(())
}

fn check_output(output: &Path) -> Result<(), String> {
    if output.is_dir() {
        return Err(format!("{}: is a folder; -o takes the model file's name (e.g. model.bin)", output.display()));
    }
    let folder = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(format!("{}: the output folder {} does not exist", output.display(), folder.display()));
    }
    Ok(())
}
