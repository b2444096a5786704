//! `gpt-fast run`: stream a continuation (or a chat answer) to stdout.

use std::io::Write;
use std::path::Path;

use gpt_fast::bench::StepLatency;
use gpt_fast::generate::{Flow, GenerateParams, Generator, StopReason};
use gpt_fast::model::{Model, ModelOptions};
use gpt_fast::sampler::SamplerParams;
use gpt_fast::session::SessionOptions;

use super::{CliResult, ModelArgs};

pub struct RunArgs {
    pub text: String,
    pub max_tokens: usize,
    pub sampler: SamplerParams,
    pub context: usize,
    pub chat: bool,
    pub parse_special: bool,
    pub context_shift: bool,
    pub ignore_eos: bool,
    pub verbose: bool,
}

pub fn run(path: &Path, model_args: &ModelArgs, args: RunArgs) -> CliResult {
    let model = Model::open(path, ModelOptions { quant: model_args.quant, isa: None })?;
    if model.converted_at_load() {
        eprintln!(
            "gpt-fast: {} holds {} weights; converted to {} at load",
            path.display(),
            model.file().weight_dtype().name(),
            model.dtype().name()
        );
    }
    let prompt = if args.chat {
        gpt_fast::chat::user_turn(&model.file().tokenizer().chat_template, &args.text)?
    } else {
        args.text
    };
    let options = SessionOptions {
        context: args.context,
        threads: model_args.threads_or_default(),
        context_shift: args.context_shift,
        kv_type: model_args.kv_type,
        // A byte-level BPE token is at least one byte (special tokens are
        // longer), plus perhaps a BOS token.
        token_budget: prompt.len() + 1 + args.max_tokens,
        ..Default::default()
    };
    let mut generator = Generator::new(&model, options, args.sampler)?;
    if args.verbose {
        let s = generator.session();
        eprintln!(
            "gpt-fast: kernels {}, {} threads, weights {} ({:.1} MiB per token), context {}, KV cache {} {:.1} MiB, seed {}",
            model.kernels().isa.name(),
            s.threads(),
            model.dtype().name(),
            model.weight_bytes() as f64 / (1 << 20) as f64,
            s.context(),
            s.kv_type().name(),
            s.cache_bytes() as f64 / (1 << 20) as f64,
            args.sampler.seed
        );
    }
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        sampler: args.sampler,
        stop: Vec::new(),
        ignore_eos: args.ignore_eos,
    };
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    let mut emit = |text: &str| -> Flow {
        match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
            Ok(()) => Flow::Continue,
            Err(e) => {
                write_error = Some(e);
                Flow::Stop
            }
        }
    };
    if !args.chat {
        emit(&prompt);
    }
    let stats = generator.generate(&prompt, args.parse_special, &params, &mut emit)?;
    emit("\n");
    match write_error {
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        Some(e) => return Err(e.into()),
        None => {}
    }
    let per_s = |n: usize, d: std::time::Duration| n as f64 / d.as_secs_f64().max(1e-9);
    eprintln!(
        "prompt: {} tokens, {:.1} tok/s | generated: {} tokens, {:.1} tok/s{}",
        stats.prompt_tokens,
        per_s(stats.prompt_tokens, stats.prompt_time),
        stats.generated_tokens,
        per_s(stats.generated_tokens, stats.generate_time),
        match stats.stop {
            StopReason::ContextFull => " (stopped: context full)",
            _ => "",
        }
    );
    if let Some(l) = StepLatency::of(generator.step_times()).filter(|_| args.verbose) {
        eprintln!(
            "per-token decode latency over {} tokens: median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            l.steps, l.median_ms, l.p90_ms, l.p99_ms, l.max_ms
        );
    }
    Ok(())
}
