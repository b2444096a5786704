//! `gpt-fast serve`: the command-line face of `gpt_fast::server`.

use std::path::Path;
use std::time::Duration;

use gpt_fast::server::engine::EngineOptions;
use gpt_fast::server::http::{serve as serve_http, ServeOptions};

use super::{source, values, ModelArgs};

#[derive(clap::Args, Debug)]
pub struct ServeCli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", value_name = "HOST")]
    host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8080, value_name = "PORT")]
    port: u16,
    /// Sequences generated at once (KV cache slots, allocated at start); also -np, as in llama-server.
    #[arg(long, default_value_t = 4, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=256))]
    parallel: u64,
    /// Positions per slot: a prompt and its completion must fit (0: the
    /// model's trained length, at most 4096).
    #[arg(short = 'c', long = "ctx", alias = "ctx-size", default_value = "0", value_name = "C", allow_negative_numbers = true, value_parser = values::ctx_size)]
    ctx: usize,
    /// Requests that may wait for a free slot; beyond, 503 with Retry-After.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    queue: u64,
    /// Largest request body in bytes (413 above).
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    body_limit: usize,
    /// Seconds SIGTERM waits for requests in flight before exiting.
    #[arg(long, default_value_t = 30, value_name = "S")]
    shutdown_grace: u64,
}

pub fn serve(path: &Path, model_args: &ModelArgs, args: ServeCli) -> Result<(), String> {
    let threads = model_args.threads();
    let model_file = source::model_file(path, model_args.quant)?;
    let header = gpt_fast::format::ModelFile::open(&model_file).map_err(|e| e.to_string())?;
    let max = header.hparams().max_seq_len as usize;
    drop(header);
    let context = if args.ctx == 0 { max.min(gpt_fast::session::DEFAULT_MAX_CONTEXT) } else { args.ctx };
    let model_name = path.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    // The server's own SIGTERM/SIGINT handling drains requests in flight and
    // exits 0; the process-wide handler (cli::interrupt) must then only note
    // the first signal, not exit 130 under it. A second one still exits at once.
    super::interrupt::stop_gracefully();
    serve_http(ServeOptions {
        model_file,
        model_name,
        model: model_args.model_options(),
        engine: EngineOptions { parallel: args.parallel as usize, context, threads, kv_type: model_args.kv_type },
        host: args.host,
        port: args.port,
        queue: args.queue as usize,
        body_limit: args.body_limit,
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
    })
}
