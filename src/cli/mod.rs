//! Command-line parsing and dispatch; each subcommand lives in its own module.

mod bench;
mod info;
mod prompt;
mod run;
mod text;

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
    /// Generate text: print the prompt, then stream the continuation.
    Run {
        model: PathBuf,
        #[command(flatten)]
        model_args: ModelArgs,
        /// The prompt text.
        #[arg(short = 'p', long)]
        prompt: Option<String>,
        /// Read the prompt from a file (UTF-8).
        #[arg(short = 'f', long, conflicts_with = "prompt")]
        file: Option<PathBuf>,
        /// Tokens to generate at most.
        #[arg(short = 'n', long = "n-predict", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
        n_predict: u64,
        /// Sampling temperature; 0 is greedy.
        #[arg(long, default_value_t = 0.8)]
        temp: f32,
        /// Keep only the K most likely tokens (0: all).
        #[arg(long, default_value_t = 40)]
        top_k: usize,
        /// Keep the smallest set of tokens whose probability reaches P.
        #[arg(long, default_value_t = 0.95)]
        top_p: f32,
        /// Drop tokens less likely than P times the most likely one.
        #[arg(long, default_value_t = 0.05)]
        min_p: f32,
        /// Penalize tokens seen in the last 64 (1.0: off).
        #[arg(long, default_value_t = 1.0)]
        repeat_penalty: f32,
        /// Random seed (default: from the clock; printed with --verbose).
        #[arg(long)]
        seed: Option<u64>,
        /// Context size in tokens (default: the model's, at most 4096).
        #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
        ctx_size: usize,
        /// Wrap the prompt in the model's chat template as a user turn.
        #[arg(long)]
        chat: bool,
        /// Treat special-token text in the prompt (e.g. "<|im_start|>") as plain text.
        #[arg(long)]
        no_special: bool,
        /// Stop at a full context instead of shifting it.
        #[arg(long)]
        no_context_shift: bool,
        /// Never sample the end-of-sequence token: generate all -n tokens.
        #[arg(long)]
        ignore_eos: bool,
        /// Print kernels, memory and per-token latency percentiles on stderr.
        #[arg(short = 'v', long)]
        verbose: bool,
    },
    /// Print the token ids of a text as a JSON array.
    Tokenize {
        model: PathBuf,
        /// The text (or use -f).
        #[arg(required_unless_present = "file")]
        text: Option<String>,
        #[arg(short = 'f', long, conflicts_with = "text")]
        file: Option<PathBuf>,
        /// Treat special-token text as plain text.
        #[arg(long)]
        no_special: bool,
    },
    /// Perplexity of a text file, by llama.cpp's method (or one streaming pass).
    Perplexity {
        model: PathBuf,
        #[command(flatten)]
        model_args: ModelArgs,
        /// The text file (UTF-8).
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// Context (chunk) size in tokens.
        #[arg(short = 'c', long = "ctx-size", default_value_t = 512, value_parser = clap::value_parser!(u64).range(2..))]
        ctx_size: u64,
        /// Score every token in one pass through the ring-buffer cache.
        #[arg(long)]
        stream: bool,
    },
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
        /// Tokens already in the context when each test starts (llama-bench's
        /// `-d`): decode at depth pays for attention over them.
        #[arg(short = 'd', long = "n-depth", value_delimiter = ',', default_values_t = [0])]
        depth: Vec<usize>,
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
    /// Threads (default: one per physical core available to the process).
    #[arg(short = 't', long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,
    /// KV cache element type: f16 (half the memory and attention reads) or f32 (exact).
    #[arg(long, default_value = "f16")]
    pub kv_type: gpt_fast::session::KvType,
}

impl ModelArgs {
    pub fn threads_or_default(&self) -> usize {
        self.threads.map_or_else(gpt_fast::threads::default_count, |t| t as usize)
    }
}

/// Errors are reported as one line by `main`.
pub type CliResult = Result<(), Box<dyn std::error::Error>>;

pub fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Info { model } => info::info(&model),
        Command::Verify { model } => info::verify(&model),
        Command::Run {
            model,
            model_args,
            prompt,
            file,
            n_predict,
            temp,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            seed,
            ctx_size,
            chat,
            no_special,
            no_context_shift,
            ignore_eos,
            verbose,
        } => {
            let text = prompt::read_text(prompt.as_deref(), file.as_deref())?;
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
            });
            let sampler = gpt_fast::sampler::SamplerParams {
                temperature: temp,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                repeat_last_n: 64,
                seed,
            };
            run::run(
                &model,
                &model_args,
                run::RunArgs {
                    text,
                    max_tokens: n_predict as usize,
                    sampler,
                    context: ctx_size,
                    chat,
                    parse_special: !no_special,
                    context_shift: !no_context_shift,
                    ignore_eos,
                    verbose,
                },
            )
        }
        Command::Tokenize { model, text, file, no_special } => {
            let text = prompt::read_text(text.as_deref(), file.as_deref())?;
            text::tokenize(&model, &text, !no_special)
        }
        Command::Perplexity { model, model_args, file, ctx_size, stream } => {
            let text = prompt::read_text(None, Some(&file))?;
            text::perplexity(&model, &model_args, &text, ctx_size as usize, stream)
        }
        Command::Bench { model, model_args, prompt, generate, depth, repetitions, json } => bench::bench(
            &model,
            &model_args,
            &bench::BenchArgs {
                prompt: &prompt,
                generate: &generate,
                depth: &depth,
                repetitions: repetitions as usize,
                json,
            },
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
