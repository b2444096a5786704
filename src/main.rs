//! The `gpt-fast` command: a thin layer over the library.
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    let args = cli::Cli::parse_from(cli::llama_cpp_spellings(std::env::args_os()));
    cli::interrupt::install();
    match cli::run(args, started) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gpt-fast: error: {e}");
            ExitCode::FAILURE
        }
    }
}
