//! The sampling options `run` and `chat` share, with llama.cpp's names and
//! defaults.

use gpt_fast::sampler::SamplerParams;

use super::values;

#[derive(clap::Args, Debug)]
pub struct SamplingArgs {
    /// Sampling temperature, >= 0; 0 is greedy.
    #[arg(long, default_value = "0.8", value_name = "T", allow_negative_numbers = true, value_parser = values::temperature)]
    pub temp: f32,
    /// Keep only the K most likely tokens (0: all).
    #[arg(long, default_value_t = 40, value_name = "K")]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches P (1: all).
    #[arg(long, default_value_t = 0.95, value_name = "P", allow_negative_numbers = true)]
    pub top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0: none).
    #[arg(long, default_value_t = 0.05, value_name = "P", allow_negative_numbers = true)]
    pub min_p: f32,
    /// Penalize tokens seen in the last --repeat-last-n (1.0: off).
    #[arg(long, default_value_t = 1.0, value_name = "R", allow_negative_numbers = true)]
    pub repeat_penalty: f32,
    /// How many recent tokens --repeat-penalty looks at (0: none, -1: the whole context).
    #[arg(long, default_value = "64", value_name = "N", allow_negative_numbers = true, value_parser = values::repeat_last_n)]
    pub repeat_last_n: values::OrNone<usize>,
    /// Random seed; -1 (the default) takes one from the clock, printed with --verbose.
    #[arg(short = 's', long, default_value = "-1", value_name = "N", allow_negative_numbers = true, value_parser = values::seed)]
    pub seed: values::OrNone<u64>,
}

impl SamplingArgs {
    /// The sampler's settings; `whole_context` is what `--repeat-last-n -1`
    /// means, `seed` the one chosen for `--seed -1`.
    pub fn params(&self, whole_context: usize, seed: u64) -> SamplerParams {
        SamplerParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n.0.unwrap_or(whole_context),
            seed,
        }
    }

    /// The seed given, or one from the clock.
    pub fn seed(&self) -> u64 {
        self.seed.0.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        })
    }
}
