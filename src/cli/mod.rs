//! Command-line parsing and dispatch; each subcommand lives in its own module.

mod bench;
mod chat;
mod info;
pub mod interrupt;
mod progress;
mod prompt;
mod run;
mod sampling;
mod serve;
mod source;
mod stats;
mod text;
mod values;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Fast CPU inference for GPT-2 and Llama family models.
///
/// MODEL is a gpt-fast model file (made by `gpt-fast convert`), or a GGUF
/// file or a Hugging Face model folder, which is converted once into
/// $XDG_CACHE_HOME/gpt-fast (else ~/.cache/gpt-fast) and run from there.
#[derive(Parser, Debug)]
#[command(name = "gpt-fast", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate text: print the prompt, then stream the continuation.
    Run {
        #[command(flatten)]
        model: ModelPath,
        #[command(flatten)]
        model_args: ModelArgs,
        #[command(flatten)]
        args: run::RunCli,
    },
    /// Chat with the model in the terminal: multi-turn, in its chat
    /// template, the KV cache kept across turns (/help lists the commands).
    Chat {
        #[command(flatten)]
        model: ModelPath,
        #[command(flatten)]
        model_args: ModelArgs,
        #[command(flatten)]
        args: chat::ChatCli,
    },
    /// Serve the model over HTTP with OpenAI's API (chat and text completions, streaming).
    Serve {
        #[command(flatten)]
        model: ModelPath,
        #[command(flatten)]
        model_args: ModelArgs,
        #[command(flatten)]
        args: serve::ServeCli,
    },
    /// Print a model's architecture, hyper-parameters and tensor types.
    Info {
        #[command(flatten)]
        model: ModelPath,
    },
    /// Check every tensor's checksum of a gpt-fast model file (reads the whole file).
    Verify {
        #[command(flatten)]
        model: ModelPath,
    },
    /// Print the token ids of a text as a JSON array.
    Tokenize {
        #[command(flatten)]
        model: ModelPath,
        /// The text (or -f FILE).
        #[arg(value_name = "TEXT")]
        text: Option<String>,
        /// Read the text from a file (UTF-8; - reads standard input).
        #[arg(short = 'f', long, conflicts_with = "text", value_name = "FILE")]
        file: Option<PathBuf>,
        /// Treat special-token text as plain text.
        #[arg(long)]
        no_special: bool,
    },
    /// Perplexity of a text file, by llama.cpp's method (or one streaming pass).
    Perplexity {
        #[command(flatten)]
        model: ModelPath,
        #[command(flatten)]
        model_args: ModelArgs,
        /// The text file (UTF-8; - reads standard input).
        #[arg(short = 'f', long, value_name = "FILE")]
        file: PathBuf,
        /// Context (chunk) size in tokens.
        #[arg(short = 'c', long = "ctx-size", default_value_t = 512, value_name = "N", allow_negative_numbers = true,
              value_parser = clap::value_parser!(u64).range(2..=values::MAX_CONTEXT as u64))]
        ctx_size: u64,
        /// Score every token in one pass through the ring-buffer cache.
        #[arg(long)]
        stream: bool,
    },
    /// Measure prompt (ppN) and generation (tgN) throughput, llama-bench style.
    Bench {
        #[command(flatten)]
        model: ModelPath,
        #[command(flatten)]
        model_args: ModelArgs,
        /// Prompt lengths to test, evaluated in one batch each (0: none).
        #[arg(short = 'p', long = "n-prompt", value_delimiter = ',', default_values_t = [128, 512], value_name = "N,..")]
        prompt: Vec<usize>,
        /// Generation lengths to test, one token at a time (0: none).
        #[arg(short = 'n', long = "n-gen", value_delimiter = ',', default_values_t = [64, 128], value_name = "N,..")]
        generate: Vec<usize>,
        /// Tokens already in the context when each test starts (llama-bench's
        /// `-d`): decode at depth pays for attention over them.
        #[arg(short = 'd', long = "n-depth", value_delimiter = ',', default_values_t = [0], value_name = "N,..")]
        depth: Vec<usize>,
        /// Sequences decoding together in each tgN test (also -np; llama-batched-bench's
        /// -npl): one token of each per step, in one batch, as `serve` steps its slots.
        #[arg(long, value_delimiter = ',', default_values_t = [1], value_name = "B,..",
              value_parser = clap::value_parser!(u64).range(1..=256))]
        parallel: Vec<u64>,
        /// Timed repetitions per test (after one warm-up run).
        #[arg(short = 'r', long, default_value_t = 5, value_name = "N",
              value_parser = clap::value_parser!(u64).range(1..=10_000))]
        repetitions: u64,
        /// One JSON object per test instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Convert a GGUF file or a Hugging Face model folder to a gpt-fast model file.
    Convert(gpt_fast::import::command::ConvertArgs),
    /// Print a shell completion script, e.g. `source <(gpt-fast completions bash)`
    /// in ~/.bashrc (the README says where zsh and fish look for theirs).
    Completions {
        /// The shell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

/// The model, as a positional MODEL or llama.cpp's `-m MODEL`.
#[derive(clap::Args, Debug)]
pub struct ModelPath {
    /// A gpt-fast model file, a GGUF file or a Hugging Face model folder
    /// (the last two are converted once into the cache; see `gpt-fast --help`).
    #[arg(value_name = "MODEL")]
    model: Option<PathBuf>,
    /// The model, as with llama.cpp (instead of the positional MODEL).
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    model_flag: Option<PathBuf>,
}

impl ModelPath {
    /// The one model path given to `command`; a usage error (exit 2) for none or two.
    fn get(self, command: &str) -> PathBuf {
        match (self.model, self.model_flag) {
            (Some(m), None) | (None, Some(m)) => m,
            (None, None) => usage_error(command, "no model: give MODEL or -m MODEL"),
            (Some(_), Some(_)) => usage_error(command, "the model is given twice: give MODEL or -m MODEL, not both"),
        }
    }
}

/// Exits like clap does for a bad command line: the message and the
/// subcommand's usage, exit code 2.
fn usage_error(command: &str, message: &str) -> ! {
    let mut cli = Cli::command();
    cli.build();
    let sub = cli.find_subcommand_mut(command).expect("called with a subcommand's name");
    sub.error(clap::error::ErrorKind::ArgumentConflict, message).exit()
}

/// Options shared by the commands that run a model.
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// Weight type to run: the file's own, or a lower precision converted at
    /// load; for a GGUF or Hugging Face MODEL, the type of its cached
    /// conversion (default: a GGUF's own weight types where gpt-fast runs
    /// them natively, else q8).
    #[arg(long, value_name = "q8|f16|f32")]
    pub quant: Option<gpt_fast::format::DType>,
    /// Threads (default: one per physical core available to the process).
    #[arg(short = 't', long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..=values::MAX_THREADS as u64))]
    pub threads: Option<u64>,
    /// KV cache element type: f16 (half the memory and attention reads) or
    /// f32 (exact). Also -ctk / --cache-type-k, as in llama.cpp.
    #[arg(long, default_value = "f16", value_name = "f16|f32", alias = "cache-type-k")]
    pub kv_type: gpt_fast::session::KvType,
    /// Check every tensor's checksum before running (reads the whole file
    /// once; catches corrupted tensor data, as `gpt-fast verify` does).
    #[arg(long)]
    pub verify: bool,
}

impl ModelArgs {
    /// How to open the model: the weight type and whether to verify.
    pub fn model_options(&self) -> gpt_fast::model::ModelOptions {
        gpt_fast::model::ModelOptions { quant: self.quant, verify: self.verify, ..Default::default() }
    }

    /// The thread count, at most the CPUs this process may run on (with a
    /// warning on stderr when `-t` asks for more): every step waits for its
    /// slowest thread, and the pool's workers spin before they park, so
    /// workers sharing a CPU take it from the ones with work: `-t 1000` on 2
    /// cores took 47 s for 4 tokens of a tiny model, against 1.4 s at `-t 2`.
    pub fn threads(&self) -> usize {
        let Some(t) = self.threads else { return gpt_fast::threads::default_count() };
        let t = t as usize;
        let Ok(cpus) = std::thread::available_parallelism() else { return t };
        if t <= cpus.get() {
            return t;
        }
        eprintln!(
            "gpt-fast: warning: -t {t} is more threads than the {cpus} CPUs this process may run on; using {cpus} \
             (threads that share a CPU slow every step down)"
        );
        cpus.get()
    }
}

/// Errors are reported as one line by `main`.
pub type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Runs a command; `started` is when the process started (for `run`'s timings).
pub fn run(cli: Cli, started: std::time::Instant) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let done = |r: CliResult| r.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Info { model } => done(info::info(&model.get("info"))),
        Command::Verify { model } => done(info::verify(&model.get("verify"))),
        Command::Run { model, model_args, args } => run::run(&model.get("run"), &model_args, args, started),
        Command::Chat { model, model_args, args } => chat::chat(&model.get("chat"), &model_args, args),
        Command::Serve { model, model_args, args } => {
            done(serve::serve(&model.get("serve"), &model_args, args).map_err(Into::into))
        }
        Command::Tokenize { model, text, file, no_special } => {
            // `tokenize -m MODEL TEXT`: the one positional is the text.
            let (model, text) = match (model.model, model.model_flag, text) {
                (Some(t), Some(m), None) => (m, Some(t.to_string_lossy().into_owned())),
                (model, flag, text) => (ModelPath { model, model_flag: flag }.get("tokenize"), text),
            };
            if text.is_none() && file.is_none() {
                usage_error("tokenize", "no text: give TEXT or -f FILE");
            }
            let text = prompt::read_text(text.as_deref(), file.as_deref())?;
            done(text::tokenize(&model, &text, !no_special))
        }
        Command::Perplexity { model, model_args, file, ctx_size, stream } => {
            let model = model.get("perplexity");
            let text = prompt::read_text(None, Some(&file))?;
            done(text::perplexity(&model, &model_args, &text, ctx_size as usize, stream))
        }
        Command::Bench { model, model_args, prompt, generate, depth, parallel, repetitions, json } => {
            for (flag, lengths) in [("-p", &prompt), ("-n", &generate), ("-d", &depth)] {
                if let Some(n) = lengths.iter().find(|&&n| n > values::MAX_CONTEXT) {
                    usage_error(
                        "bench",
                        &format!("{flag} {n}: the largest length accepted is {}", values::MAX_CONTEXT),
                    );
                }
            }
            done(bench::bench(
                &model.get("bench"),
                &model_args,
                &bench::BenchArgs {
                    prompt: &prompt,
                    generate: &generate,
                    depth: &depth,
                    parallel: &parallel.iter().map(|&b| b as usize).collect::<Vec<_>>(),
                    repetitions: repetitions as usize,
                    json,
                },
            ))
        }
        Command::Convert(args) => done(gpt_fast::import::command::run(&args)),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "gpt-fast", &mut script);
            let mut script = String::from_utf8_lossy(&script).into_owned();
            if shell == clap_complete::Shell::Bash {
                // clap_complete's bash script spells a hyphenated bin name's
                // case labels "gpt__subcmd__fast__…" but its state
                // "gpt__fast__…", so no subcommand's options ever complete
                // (clap issue #6421). A no-op once that is fixed.
                script = script.replace("gpt__subcmd__fast", "gpt__fast");
            }
            done(print_out(&script))
        }
    }
}

/// llama.cpp spells some options as multi-letter short flags (`-ctk f16`),
/// which clap cannot declare: they are rewritten to their long names first.
pub fn llama_cpp_spellings(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.map(|a| match a.to_str() {
        Some("-ctk") => "--kv-type".into(),
        Some(s) if s.starts_with("-ctk=") => format!("--kv-type={}", &s[5..]).into(),
        Some("-np") => "--parallel".into(),
        _ => a,
    })
    .collect()
}

/// Refuses an output path that is a folder or whose folder does not exist,
/// before a command spends its time (`PATH: what is wrong`).
pub fn check_output_path(path: &std::path::Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!("{}: is a folder", path.display()));
    }
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    if !folder.is_dir() {
        return Err(format!("{}: the folder {} does not exist", path.display(), folder.display()));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument of every command says what it is in `--help`.
    #[test]
    fn every_argument_has_help() {
        let cli = super::Cli::command();
        cli.clone().debug_assert();
        for sub in cli.get_subcommands() {
            assert!(sub.get_about().is_some(), "{} has no description", sub.get_name());
            for arg in sub.get_arguments() {
                assert!(arg.get_help().is_some(), "{} {} has no help", sub.get_name(), arg.get_id());
            }
        }
    }
}
