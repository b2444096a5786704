//! `gpt-fast run`: stream a continuation (or a chat answer) to stdout, then
//! timings and the stop reason on stderr.
//!
//! Everything that can be refused (the values, the model, the prompt's
//! length against the context, the --json-stats folder) is checked before
//! the first byte goes to stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use gpt_fast::bench::StepLatency;
use gpt_fast::chat::{self, ChatError, ChatTemplate, Message};
use gpt_fast::generate::{Flow, GenerateError, GenerateParams, Generator, StopReason};
use gpt_fast::model::Model;
use gpt_fast::session::SessionOptions;
use gpt_fast::tokenizer::TokenizerSpec;

use super::sampling::SamplingArgs;
use super::stats::{Ending, RunStats};
use super::{interrupt, prompt, source, values, ModelArgs};

/// `run`'s own options (the model and its shared options are apart).
#[derive(clap::Args, Debug)]
pub struct RunCli {
    /// The prompt text.
    #[arg(short = 'p', long, value_name = "TEXT")]
    prompt: Option<String>,
    /// Read the prompt from a file (UTF-8; - reads standard input).
    #[arg(short = 'f', long, conflicts_with = "prompt", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Tokens to generate at most; -1: until the end-of-sequence token (or a
    /// full context with --no-context-shift).
    #[arg(short = 'n', long = "n-predict", default_value = "256", value_name = "N",
          allow_negative_numbers = true, value_parser = values::n_predict)]
    n_predict: values::OrNone<u64>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Context size in tokens (0: the model's, at most 4096).
    #[arg(short = 'c', long = "ctx-size", default_value = "0", value_name = "N", allow_negative_numbers = true, value_parser = values::ctx_size)]
    ctx_size: usize,
    /// Stop where the text reaches STR (STR is not printed); repeatable.
    #[arg(short = 'r', long = "reverse-prompt", value_name = "STR", alias = "stop")]
    reverse_prompt: Vec<String>,
    /// Do not print the prompt before the continuation.
    #[arg(long)]
    no_display_prompt: bool,
    /// Wrap the prompt in the model's chat template as a user turn (the
    /// prompt is then not printed).
    #[arg(long)]
    chat: bool,
    /// Treat special-token text in the prompt (e.g. "<|im_start|>") as plain text.
    #[arg(long)]
    no_special: bool,
    /// Stop at a full context instead of shifting it.
    #[arg(long)]
    no_context_shift: bool,
    /// Never sample the end-of-sequence or an end-of-turn token: generate all -n tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Also write the timings and stop reason as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json_stats: Option<PathBuf>,
    /// Print kernels, memory, the seed and per-token latency percentiles on stderr.
    #[arg(short = 'v', long)]
    verbose: bool,
}

/// The model's chat template; for a file that has none, the built-in of its
/// vocabulary, with a note on stderr (`run --chat` and `chat`).
pub(super) fn chat_template(path: &Path, tokenizer: &TokenizerSpec) -> Result<ChatTemplate, ChatError> {
    let template = ChatTemplate::for_tokenizer(tokenizer)?;
    if let Some(name) = template.default_name() {
        eprintln!("gpt-fast: {} has no chat template; using the built-in {name} format", path.display());
    }
    Ok(template)
}

/// One user turn in the model's chat template (for a file that has none, the
/// built-in of its vocabulary, with a note), ready for the prompt encoder.
fn chat_prompt(path: &Path, tokenizer: &TokenizerSpec, text: &str) -> Result<String, ChatError> {
    let template = chat_template(path, tokenizer)?;
    let rendered = template.render(&[Message::new("user", text)], true)?;
    Ok(chat::strip_leading_bos(&rendered, tokenizer).to_string())
}

pub fn run(
    path: &Path,
    model_args: &ModelArgs,
    args: RunCli,
    started: Instant,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let text = prompt::read_text(args.prompt.as_deref(), args.file.as_deref())?;
    if let Some(json) = &args.json_stats {
        super::check_output_path(json).map_err(|e| format!("--json-stats {e}"))?;
    }
    let threads = model_args.threads();
    let seed = args.sampling.seed();
    let model_file = source::model_file(path, model_args.quant)?;

    let load_start = Instant::now();
    let model = Model::open(&model_file, model_args.model_options())?;
    if model.converted_at_load() {
        eprintln!(
            "gpt-fast: {} holds {} weights; converted to {} at load",
            model_file.display(),
            model.file().weight_dtype().name(),
            model.dtype().name()
        );
    }
    let prompt = if args.chat { chat_prompt(path, model.file().tokenizer(), &text)? } else { text };
    let parse_special = !args.no_special;
    let prompt_tokens = model.tokenizer().encode_prompt(&prompt, parse_special).len();
    let max_tokens = args.n_predict.0.map_or(usize::MAX, |n| n as usize);
    let options = SessionOptions {
        context: args.ctx_size,
        threads,
        context_shift: !args.no_context_shift,
        kv_type: model_args.kv_type,
        token_budget: prompt_tokens.saturating_add(max_tokens),
        ..Default::default()
    };
    // -1 is the whole context: the context asked for (or the session's
    // default); a token budget below it only means the ring never fills.
    let whole_context = match args.ctx_size {
        0 => (model.hparams().max_seq_len as usize).min(gpt_fast::session::DEFAULT_MAX_CONTEXT),
        n => n,
    };
    let sampler = args.sampling.params(whole_context, seed);
    // Checked here as well as in generate: before anything is printed.
    sampler.validate().map_err(GenerateError::BadSampler)?;
    let mut generator = Generator::new(&model, options)?;
    let context = generator.session().context();
    if prompt_tokens == 0 {
        return Err(GenerateError::EmptyPrompt.into());
    }
    if prompt_tokens > context {
        return Err(GenerateError::PromptTooLong { tokens: prompt_tokens, context }.into());
    }
    let load_time = load_start.elapsed();
    if args.verbose {
        let s = generator.session();
        eprintln!(
            "gpt-fast: kernels {}, {} threads, weights {} ({:.1} MiB per token), context {}, KV cache {} {:.1} MiB, seed {seed}",
            model.kernels().isa.name(),
            s.threads(),
            model.dtype().name(),
            model.weight_bytes() as f64 / (1 << 20) as f64,
            s.context(),
            s.kv_type().name(),
            s.cache_bytes() as f64 / (1 << 20) as f64,
        );
    }
    let params = GenerateParams { max_tokens, sampler, stop: args.reverse_prompt.clone(), ignore_eos: args.ignore_eos };

    // From here on output starts; Ctrl-C stops generation instead of the process.
    interrupt::stop_gracefully();
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    let mut write =
        |out: &mut std::io::StdoutLock, text: &str| match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(e);
                false
            }
        };
    if !args.chat && !args.no_display_prompt {
        write(&mut stdout, &prompt);
    }
    let generate_start = Instant::now();
    let mut first_token: Option<Duration> = None;
    let result = generator.generate(&prompt, parse_special, &params, |piece| {
        first_token.get_or_insert_with(|| generate_start.elapsed());
        if write(&mut stdout, piece) && !interrupt::requested() {
            Flow::Continue
        } else {
            Flow::Stop
        }
    });
    // An interrupt during the last step still ends the line and the run as one.
    let interrupted = interrupt::requested();
    let generated = result?;
    write(&mut stdout, "\n");
    match write_error {
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        Some(e) => return Err(e.into()),
        None => {}
    }
    let stop = match generated.stop {
        StopReason::Eos => Ending::Eos,
        StopReason::MaxTokens => Ending::MaxTokens,
        StopReason::StopString => Ending::StopString,
        StopReason::ContextFull => Ending::ContextFull,
        StopReason::Cancelled => Ending::Interrupted,
    };
    let stop = if interrupted { Ending::Interrupted } else { stop };
    let stats = RunStats {
        load: load_time,
        prompt_tokens: generated.prompt_tokens,
        prompt: generated.prompt_time,
        first_token,
        generated_tokens: generated.generated_tokens,
        generate: generated.generate_time,
        total: started.elapsed(),
        stop,
        seed,
        threads: generator.session().threads(),
        context,
    };
    eprint!("{}", stats.text());
    if let Some(l) = StepLatency::of(generator.step_times()).filter(|_| args.verbose) {
        eprintln!(
            "per-token decode latency over {} tokens: median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            l.steps, l.median_ms, l.p90_ms, l.p99_ms, l.max_ms
        );
    }
    if let Some(json) = &args.json_stats {
        // Through a temporary file and a rename: a reader never sees half of it.
        gpt_fast::format::write_replacing(json, stats.json().as_bytes())?;
    }
    // A shell's convention for a run ended by SIGINT.
    Ok(if interrupted { ExitCode::from(interrupt::EXIT_INTERRUPTED as u8) } else { ExitCode::SUCCESS })
}
