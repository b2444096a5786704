//! `convert`: GGUF or Hugging Face checkpoints (or a synthetic model) to a
//! gpt-fast model file.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use gpt_fast::format::DType;
use gpt_fast::import::from_hf::HfSource;
use gpt_fast::import::source::Source;
use indicatif::{ProgressBar, ProgressStyle};

/// Convert a GGUF file or a Hugging Face model folder to gpt-fast's model file.
#[derive(Parser, Debug)]
#[command(name = "gpt-fast-convert", version)]
struct Args {
    /// A GGUF file (llama or gpt2), or a Hugging Face folder with config.json,
    /// *.safetensors and tokenizer.json. Not used with --synthetic.
    #[arg(required_unless_present = "synthetic")]
    input: Option<PathBuf>,
    /// Where to write the model file (written to a temporary file, then renamed).
    #[arg(short, long)]
    output: PathBuf,
    /// Weight type of the matmul weights.
    #[arg(long, default_value = "q8")]
    quant: DType,
    /// Write random weights with the shapes of a named configuration instead
    /// (their text output is meaningless): smollm2-135m, tinyllama-1.1b,
    /// llama2-7b, gpt2-124m, gpt2-xl, test-llama, test-gpt2.
    #[arg(long, conflicts_with = "input")]
    synthetic: Option<String>,
    /// Seed for --synthetic.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

fn progress(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} tensors {msg}").expect("static template"));
    bar
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let bar = progress(args.quiet);
    if let Some(name) = &args.synthetic {
        let hparams = gpt_fast::synthetic::config(name).ok_or_else(|| {
            let names: Vec<_> = gpt_fast::synthetic::configs().into_iter().map(|(n, _)| n).collect();
            format!("unknown synthetic config '{name}' (known: {})", names.join(", "))
        })?;
        gpt_fast::synthetic::write(&args.output, &hparams, args.quant, args.seed, |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })?;
    } else {
        let input = args.input.as_deref().expect("clap requires input without --synthetic");
        convert_checkpoint(input, &args.output, args.quant, &bar)?;
    }
    bar.finish_and_clear();
    if !args.quiet {
        eprintln!("wrote {}", args.output.display());
    }
    Ok(())
}

fn convert_checkpoint(
    input: &Path,
    output: &Path,
    dtype: DType,
    bar: &ProgressBar,
) -> Result<(), Box<dyn std::error::Error>> {
    let source = open_source(input)?;
    gpt_fast::import::convert::convert(source.as_ref(), input, output, dtype, |done, total, name| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(name.to_string());
    })?;
    Ok(())
}

/// A folder is a Hugging Face checkpoint; a file must start with GGUF's magic.
fn open_source(input: &Path) -> Result<Box<dyn Source>, Box<dyn std::error::Error>> {
    let meta = std::fs::metadata(input).map_err(|e| format!("{}: {e}", input.display()))?;
    if meta.is_dir() {
        return Ok(Box::new(HfSource::open(input)?));
    }
    let mut magic = [0u8; 4];
    let read = File::open(input).and_then(|mut f| f.read_exact(&mut magic));
    if read.is_ok() && &magic == b"GGUF" {
        return open_gguf(input);
    }
    Err(format!("{}: neither a Hugging Face model folder nor a GGUF file", input.display()).into())
}

fn open_gguf(input: &Path) -> Result<Box<dyn Source>, Box<dyn std::error::Error>> {
    Ok(Box::new(gpt_fast::import::from_gguf::GgufSource::open(input)?))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("convert: error: {e}");
            ExitCode::FAILURE
        }
    }
}
