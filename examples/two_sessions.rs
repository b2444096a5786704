//! Two conversations on one model in one process, decoding in turn: with the
//! process's shared thread pool they should reach one session's speed; with a
//! pool each (what every session had before pools were shared), the idle
//! pool's spinning workers take cores from the busy one.
//!
//!     cargo run --release --example two_sessions -- MODEL [STEPS] [THREADS]

use std::sync::Arc;
use std::time::Instant;

use gpt_fast::{Model, ModelOptions, Session, SessionOptions, ThreadPool};

/// Decodes `steps` tokens round-robin over `sessions` (each primed with a
/// short prompt first); returns tokens per second over all of them.
fn decode_in_turn(sessions: &mut [Session<'_>], steps: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let prompt: Vec<u32> = (0..16).map(|i| 100 + 37 * i).collect();
    let mut next: Vec<u32> = Vec::new();
    for s in sessions.iter_mut() {
        next.push(argmax(s.eval(&prompt)?));
    }
    let start = Instant::now();
    for step in 0..steps {
        let i = step % sessions.len();
        next[i] = argmax(sessions[i].eval(&[next[i]])?);
    }
    Ok(steps as f64 / start.elapsed().as_secs_f64())
}

fn argmax(logits: &[f32]) -> u32 {
    let best = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1));
    best.map_or(0, |(i, _)| i as u32)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: two_sessions MODEL [STEPS] [THREADS]")?;
    let steps: usize = args.next().map_or(Ok(256), |s| s.parse())?;
    let threads: usize = args.next().map_or(Ok(gpt_fast::threads::default_count()), |s| s.parse())?;
    let model = Model::open(path.as_ref(), ModelOptions::default())?;
    let options = SessionOptions { context: steps + 64, threads, ..Default::default() };

    let one = decode_in_turn(&mut [Session::new(&model, options)?], steps)?;
    let shared = decode_in_turn(&mut [Session::new(&model, options)?, Session::new(&model, options)?], steps)?;
    let own_pool = || Session::with_pool(&model, options, Arc::new(ThreadPool::new(threads)));
    let separate = decode_in_turn(&mut [own_pool()?, own_pool()?], steps)?;
    println!("{threads} threads, {steps} decode steps");
    println!("one session:                     {one:7.1} tok/s");
    println!("two sessions, shared pool:       {shared:7.1} tok/s ({:.0}% of one)", 100.0 * shared / one);
    println!("two sessions, a pool each:       {separate:7.1} tok/s ({:.0}% of one)", 100.0 * separate / one);
    Ok(())
}
