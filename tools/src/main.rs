//! `gpt-fast-convert`: the standalone converter, the same command as
//! `gpt-fast convert` (arguments and body are `gpt_fast::import::command`).
//! Kept for the tools crate's tests and scripts, which cannot name the root
//! package's binary.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Convert a GGUF file or a Hugging Face model folder to gpt-fast's model file.
#[derive(Parser, Debug)]
#[command(name = "gpt-fast-convert", version, about)]
struct Cli {
    #[command(flatten)]
    args: gpt_fast::import::command::ConvertArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match gpt_fast::import::command::run(&cli.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpt-fast-convert: error: {e}");
            ExitCode::FAILURE
        }
    }
}
