//! `gpt-fast chat`: a multi-turn conversation in the terminal, with line
//! editing and history (rustyline). Replies stream to stdout; each ends
//! with what it cost on stderr (prompt tokens evaluated, tokens kept in the
//! KV cache from earlier turns). Ctrl-C while a reply is generated stops it
//! and returns to the prompt; at the prompt, Ctrl-C twice in a row or
//! Ctrl-D exits.

mod conversation;
mod saved;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use gpt_fast::generate::{Flow, GenerateError, GenerateParams, Generator, StopReason};
use gpt_fast::model::Model;
use gpt_fast::session::SessionOptions;
use rustyline::error::ReadlineError;

use super::sampling::SamplingArgs;
use super::{interrupt, source, values, ModelArgs};
use conversation::{Conversation, TurnReport};

/// `chat`'s own options (the model and the options shared with `run` apart).
#[derive(clap::Args, Debug)]
pub struct ChatCli {
    /// A system message opening the conversation (kept by /reset; /system
    /// changes it).
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// Tokens per reply at most; -1: until the model ends its turn (or the
    /// context is full).
    #[arg(short = 'n', long = "n-predict", default_value = "-1", value_name = "N",
          allow_negative_numbers = true, value_parser = values::n_predict)]
    n_predict: values::OrNone<u64>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Context size in tokens (0: the model's, at most 4096): the whole
    /// conversation must fit (/reset starts again).
    #[arg(short = 'c', long = "ctx-size", default_value = "0", value_name = "N", value_parser = values::ctx_size)]
    ctx_size: usize,
    /// Print kernels, memory and the seed on stderr.
    #[arg(short = 'v', long)]
    verbose: bool,
}

const HELP: &str = "\
/reset        forget the conversation (the system message stays)
/system TEXT  replace the system message (/system alone prints it)
/save FILE    write the conversation as JSON (FILE.state: its KV cache)
/load FILE    read a conversation saved by /save
/help         this text
/exit         leave (also Ctrl-D, or Ctrl-C twice at the prompt)
A line ending in \\ continues on the next line; Ctrl-C stops a reply;
//text sends /text.";

pub fn chat(path: &Path, model_args: &ModelArgs, args: ChatCli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let threads = model_args.threads();
    let seed = args.sampling.seed();
    let model_file = source::model_file(path, model_args.quant)?;
    let model = Model::open(&model_file, model_args.model_options())?;
    // No context shift: a conversation that outgrows the context says so
    // rather than silently losing its beginning.
    let options = SessionOptions {
        context: args.ctx_size,
        threads,
        kv_type: model_args.kv_type,
        context_shift: false,
        ..Default::default()
    };
    let generator = Generator::new(&model, options)?;
    let context = generator.session().context();
    let sampler = args.sampling.params(context, seed);
    sampler.validate().map_err(GenerateError::BadSampler)?;
    let mut lines = LineReader::new()?;
    let template = super::run::chat_template(path, model.file().tokenizer())?;
    if args.verbose {
        let s = generator.session();
        eprintln!(
            "gpt-fast: kernels {}, {} threads, weights {}, KV cache {} {:.1} MiB, seed {seed}",
            model.kernels().isa.name(),
            s.threads(),
            model.dtype().name(),
            s.kv_type().name(),
            s.cache_bytes() as f64 / (1 << 20) as f64,
        );
    }
    let params = GenerateParams {
        max_tokens: args.n_predict.0.map_or(usize::MAX, |n| n as usize),
        sampler,
        stop: Vec::new(),
        ignore_eos: false,
    };
    let mut conversation = Conversation::new(&model, template, generator, params, args.system.as_deref());

    // From here on Ctrl-C stops a reply instead of the process.
    interrupt::stop_gracefully();
    eprintln!("gpt-fast: chatting with {} (context {context} tokens); /help for commands", path.display());
    let mut ctrl_c_at_prompt = false;
    loop {
        let text = match lines.message() {
            Ok(Some(text)) => text,
            Ok(None) => break,
            Err(ReadlineError::Interrupted) if !ctrl_c_at_prompt => {
                ctrl_c_at_prompt = true;
                eprintln!("(Ctrl-C again or Ctrl-D to exit)");
                continue;
            }
            Err(ReadlineError::Interrupted) => break,
            Err(e) => return Err(e.into()),
        };
        ctrl_c_at_prompt = false;
        if text.trim().is_empty() {
            continue;
        }
        lines.remember(&text);
        let outcome = match text.strip_prefix('/') {
            Some(literal) if literal.starts_with('/') => say(&mut conversation, literal),
            Some(command) => match command_of(&mut conversation, command) {
                Ok(Command::Exit) => break,
                Ok(Command::Done) => Ok(()),
                Err(e) => Err(e),
            },
            None => say(&mut conversation, &text),
        };
        if let Err(e) = outcome {
            eprintln!("gpt-fast: {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Lines typed at the prompt, with line editing and history. rustyline
/// replaces the process's SIGINT handler for as long as an editor exists
/// (its `signal-hook` feature would not, but its select loop then stalls on
/// typed-ahead input), so an editor lives for one line only: while a reply
/// is generated, Ctrl-C reaches [`interrupt`]'s handler.
struct LineReader {
    history: Vec<String>,
}

/// History entries kept (each editor is given them all).
const MAX_HISTORY: usize = 1000;

impl LineReader {
    /// Fails when the terminal cannot be set up, before the greeting.
    fn new() -> Result<Self, ReadlineError> {
        drop(rustyline::DefaultEditor::new()?);
        Ok(Self { history: Vec::new() })
    }

    fn line(&self, prompt: &str) -> Result<String, ReadlineError> {
        let mut editor = rustyline::DefaultEditor::new()?;
        for entry in &self.history {
            editor.add_history_entry(entry.as_str())?;
        }
        editor.readline(prompt)
    }

    /// The next message: one line, or several joined while a line ends in
    /// `\`; `None` at the end of the input (Ctrl-D).
    fn message(&self) -> Result<Option<String>, ReadlineError> {
        let mut text = String::new();
        let mut prompt = "> ";
        loop {
            let line = match self.line(prompt) {
                Ok(line) => line,
                Err(ReadlineError::Eof) if text.is_empty() => return Ok(None),
                // Ctrl-D after a continued line sends what was typed.
                Err(ReadlineError::Eof) => return Ok(Some(text)),
                Err(e) => return Err(e),
            };
            match line.strip_suffix('\\') {
                Some(part) => {
                    text.push_str(part);
                    text.push('\n');
                    prompt = ". ";
                }
                None => {
                    text.push_str(&line);
                    return Ok(Some(text));
                }
            }
        }
    }

    fn remember(&mut self, message: &str) {
        if self.history.last().map(String::as_str) != Some(message) {
            self.history.push(message.to_string());
        }
        if self.history.len() > MAX_HISTORY {
            self.history.remove(0);
        }
    }
}

enum Command {
    Done,
    Exit,
}

fn command_of(conversation: &mut Conversation, command: &str) -> Result<Command, String> {
    let (name, arg) = command.split_once(char::is_whitespace).unwrap_or((command, ""));
    let arg = arg.trim();
    let file = || match arg {
        "" => Err(format!("/{name} needs a FILE")),
        f => Ok(PathBuf::from(f)),
    };
    let note = |note: Option<String>| {
        if let Some(note) = note {
            eprintln!("[{note}]");
        }
    };
    match name {
        "reset" => {
            conversation.reset();
            eprintln!("[conversation reset]");
        }
        "system" if arg.is_empty() => match conversation.system() {
            Some(text) => eprintln!("[system: {text}]"),
            None => eprintln!("[no system message]"),
        },
        "system" => {
            conversation.set_system(arg);
            eprintln!("[system message set]");
        }
        "save" => {
            let path = file()?;
            note(conversation.save(&path)?);
            eprintln!("[{} messages saved to {}]", conversation.messages().len(), path.display());
        }
        "load" => {
            let path = file()?;
            note(conversation.load(&path)?);
            eprintln!("[{} messages loaded from {}]", conversation.messages().len(), path.display());
        }
        "help" => eprintln!("{HELP}"),
        "exit" | "quit" => return Ok(Command::Exit),
        _ => return Err(format!("unknown command /{name}; /help lists them")),
    }
    Ok(Command::Done)
}

/// One user turn: the reply streamed to stdout, its costs on stderr.
fn say(conversation: &mut Conversation, text: &str) -> Result<(), String> {
    interrupt::clear();
    let mut stdout = std::io::stdout().lock();
    let report = conversation.turn(text, |piece| {
        let written = stdout.write_all(piece.as_bytes()).and_then(|()| stdout.flush());
        if written.is_ok() && !interrupt::requested() {
            Flow::Continue
        } else {
            Flow::Stop
        }
    });
    // A Ctrl-C during the last step stops nothing more, but must not stop
    // the next reply.
    let interrupted = interrupt::requested();
    interrupt::clear();
    let report = report?;
    let _ = writeln!(stdout);
    drop(stdout);
    eprintln!("{}", describe(&report, interrupted));
    Ok(())
}

fn describe(r: &TurnReport, interrupted: bool) -> String {
    let ending = match r.stop {
        _ if interrupted => ", interrupted",
        StopReason::Cancelled => ", interrupted",
        StopReason::MaxTokens => ", -n reached",
        StopReason::ContextFull => ", context full (/reset starts again)",
        _ => "",
    };
    format!(
        "[prompt: {} tokens evaluated, {} kept from earlier turns; reply: {} tokens, {:.1} tok/s{ending}]",
        r.evaluated, r.kept, r.generated, r.tokens_per_second
    )
}
