//! `/metrics`: counters the engine and the HTTP layer update, written in
//! Prometheus' text exposition format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bounds of the time-to-first-token histogram's buckets, in seconds.
const TTFT_BUCKETS: [f64; 12] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Counters for `/metrics`, shared by the engine and the HTTP layer.
pub struct Metrics {
    started: Instant,
    /// Requests answered, by status code class: 2xx, 4xx, 5xx.
    pub responses: [AtomicU64; 3],
    /// Jobs waiting for a slot.
    pub queue_depth: AtomicU64,
    /// Slots generating.
    pub active: AtomicU64,
    /// Prompt tokens of accepted requests.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    ttft: Mutex<Histogram>,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; TTFT_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            responses: Default::default(),
            queue_depth: AtomicU64::new(0),
            active: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            ttft: Mutex::new(Histogram::default()),
        }
    }
}

impl Metrics {
    /// Counts a response by its status class.
    pub fn count_response(&self, status: u16) {
        let class = match status {
            200..=299 => 0,
            400..=499 => 1,
            _ => 2,
        };
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// From a request's arrival to its first sampled token.
    pub fn observe_ttft(&self, d: Duration) {
        let s = d.as_secs_f64();
        let mut h = self.ttft.lock().unwrap_or_else(|e| e.into_inner());
        for (count, &bound) in h.counts.iter_mut().zip(&TTFT_BUCKETS) {
            if s <= bound {
                *count += 1;
            }
        }
        h.count += 1;
        h.sum += s;
    }

    /// The counters in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str("# HELP gpt_fast_requests_total Requests answered, by status class.\n");
        out.push_str("# TYPE gpt_fast_requests_total counter\n");
        for (class, n) in ["2xx", "4xx", "5xx"].iter().zip(&self.responses) {
            let _ = writeln!(out, "gpt_fast_requests_total{{status=\"{class}\"}} {}", get(n));
        }
        let gauges = [
            ("gpt_fast_queue_depth", "Requests waiting for a slot.", get(&self.queue_depth)),
            ("gpt_fast_active_slots", "Slots generating.", get(&self.active)),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        let counters = [
            ("gpt_fast_prompt_tokens_total", "Prompt tokens received.", get(&self.prompt_tokens)),
            ("gpt_fast_generated_tokens_total", "Tokens generated.", get(&self.generated_tokens)),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        let uptime = self.started.elapsed().as_secs_f64();
        let rate = if uptime > 0.0 { get(&self.generated_tokens) as f64 / uptime } else { 0.0 };
        let _ = writeln!(
            out,
            "# HELP gpt_fast_tokens_per_second Tokens generated per second since start.\n\
             # TYPE gpt_fast_tokens_per_second gauge\ngpt_fast_tokens_per_second {rate:.3}"
        );
        let h = self.ttft.lock().unwrap_or_else(|e| e.into_inner());
        let name = "gpt_fast_time_to_first_token_seconds";
        let _ = writeln!(out, "# HELP {name} From a request's arrival to its first token.\n# TYPE {name} histogram");
        for (count, bound) in h.counts.iter().zip(TTFT_BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {:.6}\n{name}_count {}",
            h.count, h.sum, h.count
        );
        out
    }
}
