//! Command-line parsing and dispatch; each subcommand lives in its own module.

mod bench;
mod info;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Fast CPU inference for GPT-2 and Llama family models.
#[derive(Parser, Debug)]
#[command(name = "gpt-fast", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a model file's architecture, hyper-parameters and tensor types.
    Info {
        /// A gpt-fast model file (made by `convert`).
        model: PathBuf,
    },
    /// Check every tensor's checksum (reads the whole file).
    Verify { model: PathBuf },
    /// Measure prompt (ppN) and generation (tgN) throughput, llama-bench style.
    Bench {
        model: PathBuf,
        #[command(flatten)]
        model_args: ModelArgs,
        /// Prompt lengths to test, evaluated in one batch each.
        #[arg(short = 'p', long = "n-prompt", value_delimiter = ',', default_values_t = [128, 512])]
        prompt: Vec<usize>,
        /// Generation lengths to test, one token at a time.
        #[arg(short = 'n', long = "n-gen", value_delimiter = ',', default_values_t = [64, 128])]
        generate: Vec<usize>,
        /// Timed repetitions per test (after one warm-up run).
        #[arg(short = 'r', long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        repetitions: u64,
        /// One JSON object per test instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// Options shared by the commands that run a model.
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// Weight type to run: the file's own, or a lower precision converted at load.
    #[arg(long)]
    pub quant: Option<gpt_fast::format::DType>,
    /// Threads (default: one per CPU available to the process).
    #[arg(short = 't', long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,
}

impl ModelArgs {
    pub fn threads_or_default(&self) -> usize {
        self.threads.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |t| t as usize)
    }
}

/// Errors are reported as one line by `main`.
pub type CliResult = Result<(), Box<dyn std::error::Error>>;

pub fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Info { model } => info::info(&model),
        Command::Verify { model } => info::verify(&model),
        Command::Bench { model, model_args, prompt, generate, repetitions, json } => bench::bench(
            &model,
            &model_args,
            &bench::BenchArgs { prompt: &prompt, generate: &generate, repetitions: repetitions as usize, json },
        ),
    }
}

/// Writes to stdout; a closed pipe (`gpt-fast info m.bin | head`) ends quietly.
pub fn print_out(text: &str) -> CliResult {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
