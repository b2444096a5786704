//! Choosing the next token from logits: greedy, or temperature sampling with
//! top-k, top-p and min-p filtering and a repetition penalty, from a seeded RNG
//! so that the same seed and inputs give the same text.
//!
//! The order of the steps follows llama.cpp's default chain (penalty → top-k →
//! top-p → min-p → temperature), so settings carry over. All buffers are
//! allocated once, in [`Sampler::new`].

/// Sampling settings. `temperature <= 0` is greedy (argmax).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerParams {
    /// Softmax temperature; 0 or less picks the most likely token.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p`; 1 keeps all.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one's probability; 0 keeps all.
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of recently seen tokens; 1 is off.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// Seed of the RNG: the same seed and inputs give the same tokens.
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        Self { temperature: 0.8, top_k: 40, top_p: 0.95, min_p: 0.05, repeat_penalty: 1.0, repeat_last_n: 64, seed: 42 }
    }
}

impl SamplerParams {
    /// Always the most likely token (temperature 0).
    pub fn greedy() -> Self {
        Self { temperature: 0.0, ..Self::default() }
    }

    /// Checks the ranges; the error names the setting.
    pub fn validate(&self) -> Result<(), SamplerError> {
        let finite = |setting: &'static str, value: f32| {
            if value.is_finite() {
                Ok(())
            } else {
                Err(SamplerError::NotFinite { setting })
            }
        };
        finite("temperature", self.temperature)?;
        finite("top-p", self.top_p)?;
        finite("min-p", self.min_p)?;
        finite("repeat-penalty", self.repeat_penalty)?;
        let out_of_range = |setting, value, allowed| Err(SamplerError::OutOfRange { setting, value, allowed });
        if !(0.0..=1.0).contains(&self.top_p) || self.top_p == 0.0 {
            return out_of_range("top-p", self.top_p, "in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return out_of_range("min-p", self.min_p, "in [0, 1]");
        }
        if self.repeat_penalty <= 0.0 {
            return out_of_range("repeat-penalty", self.repeat_penalty, "positive");
        }
        Ok(())
    }
}

/// A sampling setting [`SamplerParams::validate`] refuses.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SamplerError {
    /// A NaN or an infinity.
    #[error("{setting} must be a finite number")]
    NotFinite {
        /// The setting's name, as the CLI spells its option.
        setting: &'static str,
    },
    /// A value outside the setting's range.
    #[error("{setting} {value} must be {allowed}")]
    OutOfRange {
        /// The setting's name, as the CLI spells its option.
        setting: &'static str,
        /// The value given.
        value: f32,
        /// What is allowed ("in (0, 1]", "positive").
        allowed: &'static str,
    },
}

// Equality is reflexive: a NaN value is reported as `NotFinite`, never stored.
impl Eq for SamplerError {}

/// Picks tokens from logits with [`SamplerParams`]; every buffer allocated in [`Sampler::new`].
pub struct Sampler {
    params: SamplerParams,
    rng: u64,
    /// `(logit, id)`, reused every call.
    candidates: Vec<(f32, u32)>,
    /// The last `repeat_last_n` tokens, as a ring.
    recent: Vec<u32>,
    recent_next: usize,
    /// Tokens never picked (the end-of-generation tokens under `--ignore-eos`).
    banned: Vec<u32>,
}

impl Sampler {
    /// A sampler for logits of `vocab_size` entries.
    pub fn new(params: SamplerParams, vocab_size: usize) -> Self {
        Self {
            params,
            rng: params.seed ^ 0x853C_49E6_748F_EA9B,
            candidates: Vec::with_capacity(vocab_size),
            recent: Vec::with_capacity(params.repeat_last_n),
            recent_next: 0,
            banned: Vec::new(),
        }
    }

    /// Never picks any of `tokens` from now on (empty: any token may be
    /// picked). Allocates only when the list grows.
    pub fn ban(&mut self, tokens: &[u32]) {
        self.banned.clear();
        self.banned.extend_from_slice(tokens);
    }

    /// The current settings.
    pub fn params(&self) -> &SamplerParams {
        &self.params
    }

    /// Records a token as seen (prompt tokens and generated ones), for the penalty.
    pub fn accept(&mut self, token: u32) {
        let cap = self.params.repeat_last_n;
        if cap == 0 {
            return;
        }
        if self.recent.len() < cap {
            self.recent.push(token);
        } else {
            self.recent[self.recent_next] = token;
            self.recent_next = (self.recent_next + 1) % cap;
        }
    }

    /// Takes new settings. The seen tokens stay (the newest `repeat_last_n`
    /// of them); the RNG restarts only if the seed changed, so a
    /// conversation's turns with one seed do not replay the same draws.
    /// Allocates only when `repeat_last_n` changes.
    pub fn set_params(&mut self, params: SamplerParams) {
        if params == self.params {
            return;
        }
        if params.repeat_last_n != self.params.repeat_last_n {
            let (newer, older) = self.recent.split_at(self.recent_next);
            let seen: Vec<u32> = older.iter().chain(newer).copied().collect();
            self.recent = Vec::with_capacity(params.repeat_last_n);
            self.recent_next = 0;
            let from = seen.len().saturating_sub(params.repeat_last_n);
            self.recent.extend_from_slice(&seen[from..]);
        }
        let reseed = params.seed != self.params.seed;
        self.params = params;
        if reseed {
            self.rng = params.seed ^ 0x853C_49E6_748F_EA9B;
        }
    }

    /// Forgets the seen tokens, keeping the RNG where it is.
    pub fn forget_seen(&mut self) {
        self.recent.clear();
        self.recent_next = 0;
    }

    /// Forgets the seen tokens and restarts the RNG from the seed.
    pub fn reset(&mut self) {
        self.recent.clear();
        self.recent_next = 0;
        self.rng = self.params.seed ^ 0x853C_49E6_748F_EA9B;
    }

    /// splitmix64 → a uniform f64 in [0, 1).
    fn uniform(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn penalized(&self, id: u32, logit: f32) -> f32 {
        let p = self.params.repeat_penalty;
        if p == 1.0 || !self.recent.contains(&id) {
            logit
        } else if logit > 0.0 {
            logit / p
        } else {
            logit * p
        }
    }

    /// The most likely token after the penalty and the bans, found without
    /// building the candidates (a server samples every sequence of a step in
    /// turn, 49,152 logits each for SmolLM2): the raw argmax, then the few
    /// tokens the penalty or a ban changes. `None` when the raw argmax is one
    /// of those, for the full path to decide.
    fn greedy(&self, logits: &[f32]) -> Option<u32> {
        let best = argmax(logits)? as u32;
        let changed =
            |id: &u32| self.banned.contains(id) || (self.params.repeat_penalty != 1.0 && self.recent.contains(id));
        if changed(&best) {
            return None;
        }
        // Ordered as the full path orders candidates: by logit (total order), then the lower id.
        let key = |id: u32, logit: f32| (total_key(logit), std::cmp::Reverse(id));
        let mut top = key(best, logits[best as usize]);
        let others = self.banned.iter().chain(self.recent.iter().filter(|_| self.params.repeat_penalty != 1.0));
        for &id in others.filter(|&&id| (id as usize) < logits.len()) {
            let logit =
                if self.banned.contains(&id) { f32::NEG_INFINITY } else { self.penalized(id, logits[id as usize]) };
            top = top.max(key(id, logit));
        }
        Some(top.1 .0)
    }

    /// Picks the next token from `logits` (one per vocabulary entry).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = self.params;
        if p.temperature <= 0.0 {
            if let Some(token) = self.greedy(logits) {
                return token;
            }
        }
        self.candidates.clear();
        if p.repeat_penalty == 1.0 {
            self.candidates.extend(logits.iter().enumerate().map(|(i, &l)| (l, i as u32)));
        } else {
            for (i, &l) in logits.iter().enumerate() {
                let v = self.penalized(i as u32, l);
                self.candidates.push((v, i as u32));
            }
        }
        for &id in &self.banned {
            if let Some(c) = self.candidates.get_mut(id as usize) {
                c.0 = f32::NEG_INFINITY;
            }
        }
        let by_logit_desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if p.temperature <= 0.0 {
            return self.candidates.iter().min_by(|a, b| by_logit_desc(a, b)).map_or(0, |c| c.1);
        }
        // top-k: partition, then sort only what is kept.
        let keep = if p.top_k == 0 { self.candidates.len() } else { p.top_k.min(self.candidates.len()) };
        if keep < self.candidates.len() {
            self.candidates.select_nth_unstable_by(keep - 1, by_logit_desc);
            self.candidates.truncate(keep);
        }
        self.candidates.sort_unstable_by(by_logit_desc);
        // Probabilities at temperature 1 for top-p and min-p (as llama.cpp), kept in the first field.
        let max = self.candidates[0].0;
        let mut sum = 0f64;
        for c in self.candidates.iter_mut() {
            let e = f64::from(c.0 - max).exp();
            sum += e;
            c.0 = e as f32;
        }
        let mut cumulative = 0f64;
        let mut kept = self.candidates.len();
        for (i, c) in self.candidates.iter().enumerate() {
            cumulative += f64::from(c.0) / sum;
            if cumulative >= f64::from(p.top_p) {
                kept = i + 1;
                break;
            }
        }
        self.candidates.truncate(kept);
        let floor = self.candidates[0].0 * p.min_p;
        let kept = self.candidates.iter().take_while(|c| c.0 >= floor).count().max(1);
        self.candidates.truncate(kept);
        // Temperature on the kept tokens: p_i ∝ exp(l_i / T) = (exp(l_i - max))^(1/T).
        let inv_t = 1.0 / f64::from(p.temperature);
        let mut total = 0f64;
        for c in self.candidates.iter_mut() {
            let w = f64::from(c.0).powf(inv_t);
            total += w;
            c.0 = w as f32;
        }
        let mut r = self.uniform() * total;
        for c in &self.candidates {
            r -= f64::from(c.0);
            if r < 0.0 {
                return c.1;
            }
        }
        self.candidates.last().map_or(0, |c| c.1)
    }
}

/// `v`'s order under [`f32::total_cmp`] as an integer's (the same bit trick).
fn total_key(v: f32) -> i32 {
    let bits = v.to_bits() as i32;
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

/// The first index of `v`'s greatest value under [`f32::total_cmp`]; `None` if empty.
fn argmax(v: &[f32]) -> Option<usize> {
    // Lanes of maxima first (the loop vectorizes), then where the first one is.
    const LANES: usize = 16;
    let mut lanes = [i32::MIN; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = (*m).max(total_key(x));
        }
    }
    let max = lanes.into_iter().chain(tail.iter().map(|&x| total_key(x))).max()?;
    v.iter().position(|&x| total_key(x) == max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_the_full_paths_argmax() {
        // The full path's choice, spelled out: the greatest penalized logit
        // (total order, so NaN and -0 < +0 count), the lower id among equals.
        let reference = |s: &Sampler, logits: &[f32]| {
            let value = |i: usize| {
                if s.banned.contains(&(i as u32)) {
                    f32::NEG_INFINITY
                } else {
                    s.penalized(i as u32, logits[i])
                }
            };
            (0..logits.len()).min_by(|&a, &b| value(b).total_cmp(&value(a)).then(a.cmp(&b))).unwrap() as u32
        };
        let mut rng = 7u64;
        let mut next = || {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (rng >> 33) as u32
        };
        let specials = [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 3.0];
        let mut fast_paths = 0;
        for round in 0..400 {
            let len = [1, 15, 16, 17, 100, 1000][round % 6];
            // Few distinct values, so ties (and ties with seen tokens) are common.
            let mut logits: Vec<f32> = (0..len).map(|_| (next() % 7) as f32 - 3.0).collect();
            if round % 5 == 0 {
                let at = next() as usize % len;
                logits[at] = specials[next() as usize % specials.len()];
            }
            let penalty = [1.0, 2.0, 0.5][round % 3];
            let mut s = Sampler::new(
                SamplerParams { repeat_penalty: penalty, repeat_last_n: 8, ..SamplerParams::greedy() },
                len,
            );
            for _ in 0..next() % 12 {
                s.accept(next() % len as u32);
            }
            let banned: Vec<u32> = (0..next() % 3).map(|_| next() % (len as u32 + 2)).collect();
            s.ban(&banned);
            fast_paths += usize::from(s.greedy(&logits).is_some());
            assert_eq!(s.sample(&logits), reference(&s, &logits), "round {round}: {logits:?}");
        }
        assert!(fast_paths > 200, "the fast path ran {fast_paths} times");
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(SamplerParams::greedy(), 4);
        assert_eq!(s.sample(&[0.1, 3.0, -2.0, 2.9]), 1);
    }

    #[test]
    fn a_banned_token_is_never_picked() {
        let logits = [0.1, 3.0, -2.0, 2.9];
        let mut greedy = Sampler::new(SamplerParams::greedy(), 4);
        greedy.ban(&[1]);
        assert_eq!(greedy.sample(&logits), 3);
        greedy.ban(&[1, 3]);
        assert_eq!(greedy.sample(&logits), 0);
        let params = SamplerParams { temperature: 5.0, top_k: 0, top_p: 1.0, min_p: 0.0, ..Default::default() };
        let mut hot = Sampler::new(params, 4);
        hot.ban(&[1]);
        assert!((0..500).all(|_| hot.sample(&logits) != 1));
        hot.ban(&[]);
        assert!((0..500).any(|_| hot.sample(&logits) == 1));
    }

    #[test]
    fn repetition_penalty_moves_the_argmax() {
        let params = SamplerParams { repeat_penalty: 2.0, ..SamplerParams::greedy() };
        let mut s = Sampler::new(params, 3);
        s.accept(1);
        assert_eq!(s.sample(&[1.0, 1.5, -1.0]), 0);
    }

    #[test]
    fn same_seed_same_choices_and_filters_hold() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let params = SamplerParams { temperature: 1.5, top_k: 5, top_p: 1.0, min_p: 0.0, ..Default::default() };
        let mut top5: Vec<u32> = (0..100u32).collect();
        top5.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        top5.truncate(5);
        let mut a = Sampler::new(params, 100);
        let mut b = Sampler::new(params, 100);
        let draws: Vec<u32> = (0..200).map(|_| a.sample(&logits)).collect();
        assert_eq!(draws, (0..200).map(|_| b.sample(&logits)).collect::<Vec<_>>());
        assert!(draws.iter().all(|d| top5.contains(d)), "top-k violated");
        assert!(draws.iter().collect::<std::collections::HashSet<_>>().len() > 1, "no randomness");
        // min-p 1.0 keeps only the most likely token.
        let mut c = Sampler::new(SamplerParams { min_p: 1.0, ..params }, 100);
        assert!((0..20).all(|_| c.sample(&logits) == top5[0]));
        // top-p tiny keeps only the most likely token.
        let mut d = Sampler::new(SamplerParams { top_p: 1e-6, top_k: 0, ..params }, 100);
        assert!((0..20).all(|_| d.sample(&logits) == top5[0]));
    }

    #[test]
    fn new_settings_keep_the_newest_seen_tokens_and_the_rng_of_the_same_seed() {
        let params = SamplerParams { repeat_penalty: 100.0, repeat_last_n: 4, ..SamplerParams::greedy() };
        let mut s = Sampler::new(params, 8);
        for t in 0..6 {
            s.accept(t); // the ring holds 2, 3, 4, 5
        }
        let logits = [6.0, 5.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.5];
        assert_eq!(s.sample(&logits), 0);
        s.set_params(SamplerParams { repeat_last_n: 2, ..params }); // 4, 5
        assert_eq!(s.sample(&logits), 0);
        s.accept(0); // 5, 0
        assert_eq!(s.sample(&logits), 1);
        s.set_params(SamplerParams { repeat_last_n: 8, ..params }); // 5, 0 and room for more
        s.accept(1);
        s.accept(2);
        assert_eq!(s.sample(&logits), 3);

        let hot = SamplerParams { temperature: 2.0, top_k: 0, top_p: 1.0, min_p: 0.0, ..Default::default() };
        let (mut a, mut b) = (Sampler::new(hot, 8), Sampler::new(hot, 8));
        let first: Vec<u32> = (0..50).map(|_| a.sample(&logits)).collect();
        a.set_params(SamplerParams { top_k: 7, ..hot });
        let later: Vec<u32> = (0..50).map(|_| a.sample(&logits)).collect();
        let replay: Vec<u32> = (0..50).map(|_| b.sample(&logits)).collect();
        assert_eq!(first, replay);
        assert_ne!(later, first, "the RNG restarted although the seed is the same");
    }

    #[test]
    fn bad_settings_are_named() {
        let top_p = SamplerParams { top_p: 0.0, ..Default::default() }.validate().unwrap_err();
        assert_eq!(top_p, SamplerError::OutOfRange { setting: "top-p", value: 0.0, allowed: "in (0, 1]" });
        assert_eq!(top_p.to_string(), "top-p 0 must be in (0, 1]");
        let nan = SamplerParams { temperature: f32::NAN, ..Default::default() }.validate().unwrap_err();
        assert_eq!(nan.to_string(), "temperature must be a finite number");
        assert!(SamplerParams { repeat_penalty: 0.0, ..Default::default() }.validate().is_err());
        assert!(SamplerParams { min_p: 1.5, ..Default::default() }.validate().is_err());
        assert_eq!(SamplerParams::default().validate(), Ok(()));
    }
}
