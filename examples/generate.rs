//! Embedding gpt-fast: open a model, create a session, stream a completion.
//!
//!     cargo run --release --example generate -- smollm2.bin "The capital of France is"

use std::io::Write;

use gpt_fast::{Flow, GenerateParams, Generator, Model, ModelOptions, SamplerParams, SessionOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(prompt)) = (args.next(), args.next()) else {
        return Err("usage: generate MODEL PROMPT".into());
    };
    // The model is shared (read-only, memory-mapped); each session owns its
    // KV cache, allocated once here, and borrows the process's thread pool.
    let model = Model::open(path.as_ref(), ModelOptions::default())?;
    let options = SessionOptions { context: 1024, threads: 2, ..Default::default() };
    let mut generator = Generator::new(&model, options)?;
    let params = GenerateParams {
        max_tokens: 48,
        sampler: SamplerParams::greedy(),
        stop: vec!["\n\n".into()],
        ignore_eos: false,
    };
    print!("{prompt}");
    let stats = generator.generate(&prompt, true, &params, |piece| {
        print!("{piece}");
        let _ = std::io::stdout().flush();
        Flow::Continue // Flow::Stop cancels
    })?;
    println!();
    eprintln!("{} tokens in {:.2} s ({:?})", stats.generated_tokens, stats.generate_time.as_secs_f64(), stats.stop);
    Ok(())
}
