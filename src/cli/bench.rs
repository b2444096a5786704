//! `gpt-fast bench`: llama-bench-style throughput table (or JSON lines).

use std::fmt::Write;
use std::path::Path;

use gpt_fast::bench::{self, Test};
use gpt_fast::model::Model;

use super::{print_out, progress, source, CliResult, ModelArgs};

pub struct BenchArgs<'a> {
    pub prompt: &'a [usize],
    pub generate: &'a [usize],
    pub depth: &'a [usize],
    /// Sequences decoding together in the tgN tests.
    pub parallel: &'a [usize],
    pub repetitions: usize,
    pub json: bool,
}

pub fn bench(path: &Path, model_args: &ModelArgs, args: &BenchArgs) -> CliResult {
    let threads = model_args.threads();
    let model = Model::open(&source::model_file(path, model_args.quant)?, model_args.model_options())?;
    let size = model.weight_bytes();
    let n_params: u64 = model.file().tensors().iter().map(|t| t.rows * t.cols).sum();
    let isa = model.kernels().isa.name();
    let dtype = model.dtype().name();
    let kv = model_args.kv_type;
    // A length of 0 skips that kind of test (llama-bench's `-p 0`).
    let tests = args.prompt.iter().filter(|&&n| n > 0).map(|&n| Test::Prompt(n));
    let tests = tests.chain(args.generate.iter().filter(|&&n| n > 0).map(|&n| Test::Generate(n)));
    // The roofline, measured in the same run as the tests it bounds.
    let read_gbps = bench::read_bandwidth(threads, bench::READ_LOOP_BYTES);
    if args.json {
        print_out(&format!(
            "{{\"test\":\"read\",\"threads\":{threads},\"bytes\":{},\"gb_per_second\":{read_gbps:.3}}}\n",
            bench::READ_LOOP_BYTES
        ))?;
    } else {
        print_out(&format!(
            "| model | weights | params | isa | threads | kv | test | t/s | GB/s | roofline | step p99/median |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n\
             | read loop | {} MiB | - | - | {threads} | - | read | - | {read_gbps:.2} | 100% | - |\n",
            bench::READ_LOOP_BYTES >> 20
        ))?;
    }
    let depths = if args.depth.is_empty() { &[0][..] } else { args.depth };
    let parallel = if args.parallel.is_empty() { &[1][..] } else { args.parallel };
    // Prompts run as one sequence; generation once per number of sequences.
    let runs: Vec<_> = tests
        .flat_map(|t| depths.iter().map(move |&d| (t, d)))
        .flat_map(|(t, d)| {
            let seqs = if matches!(t, Test::Generate(_)) { parallel } else { &[1][..] };
            seqs.iter().map(move |&b| (t, d, b))
        })
        .collect();
    let bar = progress::bar(runs.len() as u64, "tests");
    for (test, depth, seqs) in runs {
        // llama-bench's name for a test at depth; `xB` for B sequences together.
        let mut name = test.name();
        if seqs > 1 {
            write!(name, " x{seqs}")?;
        }
        if depth > 0 {
            write!(name, " @ d{depth}")?;
        }
        bar.set_message(format!("{name}, {} runs", args.repetitions + 1));
        let r = match test {
            Test::Generate(n) if seqs > 1 => bench::run_batched(&model, n, seqs, depth, args.repetitions, threads, kv)?,
            _ => bench::run(&model, test, depth, args.repetitions, threads, kv)?,
        };
        bar.inc(1);
        // Decode reads every weight once per step (one token of each
        // sequence): bytes per step × steps/s.
        let gbps = match test {
            Test::Generate(_) => Some(size as f64 * r.mean_tps / seqs as f64 / 1e9),
            Test::Prompt(_) => None,
        };
        // As many steps that only read the weights: the machine's own tail,
        // to read decode's against.
        let machine = r.steps.and_then(|l| bench::weight_read_latency(&model.per_token_weights(), threads, l.steps));
        let mut line = String::new();
        if args.json {
            write!(
                line,
                "{{\"model\":{},\"weight_type\":\"{dtype}\",\"weight_bytes\":{size},\"params\":{n_params},\"isa\":\"{isa}\",\"threads\":{threads},\"kv_type\":\"{}\",\"test\":\"{}\",\"depth\":{depth},\"sequences\":{seqs},\"tokens_per_second\":{:.3},\"stddev\":{:.3},\"samples\":{:?},\"sequence_tokens_per_second\":{:.3}",
                json_string(&path.display().to_string()),
                kv.name(),
                test.name(),
                r.mean_tps,
                r.stddev_tps,
                r.samples_tps,
                r.mean_tps / seqs as f64
            )?;
            if let Some(g) = gbps {
                write!(line, ",\"gb_per_second\":{g:.3},\"roofline\":{:.4}", g / read_gbps)?;
            }
            for (key, l) in [("step", r.steps), ("weight_read_step", machine)] {
                if let Some(l) = l {
                    write!(line, ",\"{key}_median_ms\":{:.3},\"{key}_p99_ms\":{:.3}", l.median_ms, l.p99_ms)?;
                }
            }
            line.push_str("}\n");
        } else {
            let dash = || "-".to_string();
            writeln!(
                line,
                "| {} | {dtype} {:.1} MiB | {:.1} M | {isa} | {threads} | {} | {} | {:.2} ± {:.2}{} | {} | {} | {} |",
                path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned()),
                size as f64 / (1 << 20) as f64,
                n_params as f64 / 1e6,
                kv.name(),
                name,
                r.mean_tps,
                r.stddev_tps,
                if seqs > 1 { format!(" ({:.2} a sequence)", r.mean_tps / seqs as f64) } else { String::new() },
                gbps.map_or_else(dash, |g| format!("{g:.2}")),
                gbps.map_or_else(dash, |g| format!("{:.0}%", 100.0 * g / read_gbps)),
                r.steps.map_or_else(dash, |l| format!("{:.2} ({:.2} / {:.2} ms)", l.tail(), l.p99_ms, l.median_ms)),
            )?;
            if let Some(m) = machine {
                writeln!(
                    line,
                    "| weight reads | - | - | - | {threads} | - | {} steps | - | - | - | {:.2} ({:.2} / {:.2} ms) |",
                    name,
                    m.tail(),
                    m.p99_ms,
                    m.median_ms
                )?;
            }
        }
        bar.suspend(|| print_out(&line))?;
    }
    bar.finish_and_clear();
    Ok(())
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::json_string;

    #[test]
    fn paths_become_valid_json_strings() {
        assert_eq!(json_string("/m/a.bin"), r#""/m/a.bin""#);
        assert_eq!(json_string("a\"b\\c\nd\u{1}é"), r#""a\"b\\c\u000ad\u0001é""#);
    }
}
