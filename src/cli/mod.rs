//! Command-line parsing and dispatch; each subcommand lives in its own module.

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
}

/// Errors are reported as one line by `main`.
pub type CliResult = Result<(), Box<dyn std::error::Error>>;

pub fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Info { model } => info::info(&model),
        Command::Verify { model } => info::verify(&model),
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
