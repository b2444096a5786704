//! The least-squares search behind gpt-fast's own 4-bit encoders (Q4_0 and
//! Q4_1 blocks, Q4_K sub-blocks): fit `x ≈ scale × q + min` with integer
//! quants `q` in `0..=nmax`, choosing `scale` and `min` for the least squared
//! error rather than from the block's min/max alone ([`search`]), or, for a
//! symmetric block with no stored minimum, `x ≈ scale × (q − offset)`
//! ([`search_symmetric`]).
//!
//! The search (the idea of llama.cpp's `make_qkx2_quants`, written here from
//! its description): start from the min/max fit, and from a range of steps
//! around it; for each start, alternate rounding the quants against the
//! current (scale, min) and refitting (scale, min) by least squares for those
//! quants, keeping the best error seen. Every candidate is scored after the
//! caller's `store` rounding (f16, or a 6-bit grid), so the error compared is
//! the error the stored block decodes with. The min/max fit is the first
//! candidate, so the search is never worse than it.

/// A fitted block: `x ≈ scale × q + min`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    pub scale: f32,
    pub min: f32,
    /// Squared error of the block under `scale`, `min` and its quants.
    pub err: f32,
}

/// Starting steps tried on each side of the min/max step (`range / nmax`),
/// as fractions of a quant: a larger step spreads fewer quants over the
/// bulk of the values and clips the outliers.
const STEP_TRIALS: i32 = 8;
const STEP_DELTA: f32 = 0.125;
/// Rounding/refit rounds per start; the alternation mostly settles in two.
const REFITS: usize = 2;

/// `f32::round(v).clamp(0, nmax)`, exactly (NaN: 0), without the libm call
/// `f32::round` is on baseline x86_64: the fraction above the truncation
/// is exact for `0 <= v < 256`, so comparing it with one half rounds as
/// `round` does, ties away from zero.
#[inline(always)]
fn round_clamped(v: f32, nmax: u8) -> f32 {
    let v = v.clamp(0.0, f32::from(nmax));
    // i32, not u8: f32-to-i32 is one vector instruction, f32-to-u8 is not.
    let t = v as i32 as f32;
    if v - t >= 0.5 {
        t + 1.0
    } else {
        t
    }
}

/// Squared errors are summed in this many lanes, so the loops vectorize (a
/// single f32 sum is one serial chain of additions: the encoders' time went
/// there).
const LANES: usize = 8;

/// Runs `quant(x[i])` (quant `i` and its error) over `x`, storing the quants
/// in `q`, and sums the squared errors lane-wise.
#[inline(always)]
fn sum_errors(x: &[f32], q: &mut [u8], quant: impl Fn(f32) -> (u8, f32)) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut xs = x.chunks_exact(LANES);
    let mut qs = q.chunks_exact_mut(LANES);
    for (q8, x8) in (&mut qs).zip(&mut xs) {
        for ((lane, qi), &xi) in lanes.iter_mut().zip(q8).zip(x8) {
            let (l, e) = quant(xi);
            *qi = l;
            *lane += e * e;
        }
    }
    for (qi, &xi) in qs.into_remainder().iter_mut().zip(xs.remainder()) {
        let (l, e) = quant(xi);
        *qi = l;
        lanes[0] += e * e;
    }
    lanes.iter().sum()
}

/// The most values one search fits (the encoders' blocks are 32): its trial
/// quants live on the stack, since a search runs once per block and a heap
/// buffer per block was an allocation per 32 weights.
const MAX_VALUES: usize = 256;

/// The first `len` bytes of `buf` as a search's trial quants.
fn trial_quants(buf: &mut [u8; MAX_VALUES], len: usize) -> &mut [u8] {
    assert!(len <= MAX_VALUES, "affine search: {len} values in one block, at most {MAX_VALUES}");
    &mut buf[..len]
}

/// Rounds each `x` to a quant against `(scale, min)`, clamped to `0..=nmax`,
/// and returns the squared error.
pub fn quantize_against(x: &[f32], scale: f32, min: f32, nmax: u8, q: &mut [u8]) -> f32 {
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    sum_errors(x, q, |xi| {
        let l = round_clamped((xi - min) * inv, nmax);
        (l as i32 as u8, xi - (scale * l + min))
    })
}

/// Rounds each `x` to a quant of `x ≈ scale × (q − offset)` (`scale` of
/// either sign), clamped to `0..=nmax`, and returns the squared error.
pub fn quantize_symmetric(x: &[f32], scale: f32, offset: u8, nmax: u8, q: &mut [u8]) -> f32 {
    let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    let off = f32::from(offset);
    sum_errors(x, q, |xi| {
        let l = round_clamped(xi * inv + off, nmax);
        (l as i32 as u8, xi - scale * (l - off))
    })
}

/// Least-squares `(scale, min)` for fixed quants; with `min_le_zero`, `min`
/// is held at or below 0 (Q4_K stores `-min` unsigned). `None` if all quants
/// are equal (no scale is determined).
fn refit(x: &[f32], q: &[u8], min_le_zero: bool) -> Option<(f32, f32)> {
    let n = x.len() as f32;
    let (mut sq, mut sqq, mut sx, mut sxq) = (0f32, 0f32, 0f32, 0f32);
    for (&qi, &xi) in q.iter().zip(x) {
        let l = f32::from(qi);
        sq += l;
        sqq += l * l;
        sx += xi;
        sxq += xi * l;
    }
    let det = n * sqq - sq * sq;
    if det <= 0.0 {
        return None;
    }
    let scale = (n * sxq - sq * sx) / det;
    let min = (sqq * sx - sq * sxq) / det;
    if min_le_zero && min > 0.0 {
        return (sqq > 0.0).then(|| (sxq / sqq, 0.0));
    }
    Some((scale, min))
}

/// Searches `(scale, min)` for `x` (see the module doc). `store` maps a
/// candidate to the values its stored form decodes to (or `None` if it cannot
/// be stored); `q` receives the best candidate's quants. `min_le_zero` keeps
/// `min <= 0`.
pub fn search(
    x: &[f32],
    nmax: u8,
    min_le_zero: bool,
    store: impl Fn(f32, f32) -> Option<(f32, f32)>,
    q: &mut [u8],
) -> Fit {
    search_steps(x, nmax, min_le_zero, STEP_TRIALS, store, q)
}

/// [`search`] from `2 × step_trials + 1` starting steps (a narrower search
/// where a first one has already found the neighbourhood).
pub fn search_steps(
    x: &[f32],
    nmax: u8,
    min_le_zero: bool,
    step_trials: i32,
    store: impl Fn(f32, f32) -> Option<(f32, f32)>,
    q: &mut [u8],
) -> Fit {
    let lo = x.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lo = if min_le_zero { lo.min(0.0) } else { lo };
    let mut best = Fit { scale: 0.0, min: lo, err: f32::INFINITY };
    let mut buf = [0u8; MAX_VALUES];
    let trial = trial_quants(&mut buf, x.len());
    let consider = |scale: f32, min: f32, trial: &mut [u8], q: &mut [u8], best: &mut Fit| {
        let (scale, min) = store(scale, min)?;
        let err = quantize_against(x, scale, min, nmax, trial);
        if err < best.err {
            *best = Fit { scale, min, err };
            q.copy_from_slice(trial);
        }
        Some(err)
    };
    let range = hi - lo;
    // The min/max fit (the baseline the search must not lose to); a constant
    // block is exactly `min` with every quant 0.
    consider(range / f32::from(nmax), lo, trial, q, &mut best);
    if range.is_nan() || range <= 0.0 {
        return best;
    }
    for k in -step_trials..=step_trials {
        let levels = f32::from(nmax) + STEP_DELTA * k as f32;
        let (mut scale, mut min) = (range / levels, lo);
        for _ in 0..REFITS {
            if consider(scale, min, trial, q, &mut best).is_none() {
                break;
            }
            match refit(x, trial, min_le_zero) {
                Some((s, m)) if s > 0.0 && s.is_finite() && m.is_finite() => (scale, min) = (s, m),
                _ => break,
            }
        }
        consider(scale, min, trial, q, &mut best);
    }
    best
}

/// Least-squares `scale` of `x ≈ scale × (q − offset)` for fixed quants;
/// `None` if every quant is `offset` (no scale is determined).
fn refit_symmetric(x: &[f32], q: &[u8], offset: u8) -> Option<f32> {
    let (mut sll, mut sxl) = (0f32, 0f32);
    for (&qi, &xi) in q.iter().zip(x) {
        let l = f32::from(qi) - f32::from(offset);
        sll += l * l;
        sxl += xi * l;
    }
    (sll > 0.0).then(|| sxl / sll)
}

/// Searches `scale` for `x ≈ scale × (q − offset)`, quants in `0..=nmax`
/// (Q4_0: `offset` 8, `nmax` 15, so the levels run −8..=7 and the value of
/// largest magnitude may sit at either end).
///
/// The first candidate is ggml's plain fit: the value of largest magnitude
/// on level −`offset` (`quantize_row_q4_0_ref`), so the search is never worse
/// than it. Then, from a range of steps with that value on either end level
/// (`−offset` or `nmax − offset`), quants are rounded and the scale refitted
/// by least squares for them, alternately, as in [`search`]. `store` maps a
/// candidate scale to the one its stored form decodes with (`None`: it cannot
/// be stored); `q` receives the best candidate's quants; the returned
/// [`Fit::min`] is `−offset × scale`.
pub fn search_symmetric(x: &[f32], nmax: u8, offset: u8, store: impl Fn(f32) -> Option<f32>, q: &mut [u8]) -> Fit {
    let extreme = x.iter().copied().fold(0f32, |a, v| if v.abs() > a.abs() { v } else { a });
    let off = f32::from(offset);
    let mut best = Fit { scale: 0.0, min: 0.0, err: f32::INFINITY };
    let mut buf = [0u8; MAX_VALUES];
    let trial = trial_quants(&mut buf, x.len());
    let mut consider = |scale: f32, trial: &mut [u8], q: &mut [u8]| {
        let scale = store(scale)?;
        let err = quantize_symmetric(x, scale, offset, nmax, trial);
        if err < best.err {
            best = Fit { scale, min: -off * scale, err };
            q.copy_from_slice(trial);
        }
        Some(err)
    };
    consider(extreme / -off, trial, q);
    if extreme == 0.0 || !extreme.is_finite() {
        return best;
    }
    for end in [-off, f32::from(nmax) - off] {
        for k in -STEP_TRIALS..=STEP_TRIALS {
            let level = end + end.signum() * STEP_DELTA * k as f32;
            let mut scale = extreme / level;
            for _ in 0..REFITS {
                if consider(scale, trial, q).is_none() {
                    break;
                }
                match refit_symmetric(x, trial, offset) {
                    Some(s) if s != 0.0 && s.is_finite() => scale = s,
                    _ => break,
                }
            }
            consider(scale, trial, q);
        }
    }
    best
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Blocks of `n` values: uniform, Gaussian-like, and outlier-heavy (a
    /// few values tens of times the rest), by seed.
    pub(crate) fn test_block(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).max(1);
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as f32 / u32::MAX as f32
        };
        let kind = seed % 3;
        (0..n)
            .map(|_| {
                let u = next() * 2.0 - 1.0;
                match kind {
                    0 => u,
                    1 => (next() + next() + next() - 1.5) * 0.05,
                    _ if next() < 0.06 => u * 30.0,
                    _ => u * 0.5 + 0.2,
                }
            })
            .collect()
    }

    #[test]
    fn search_is_never_worse_than_min_max_and_often_better() {
        let mut better = 0;
        for seed in 1..300u32 {
            let x = test_block(32, seed);
            let mut q = [0u8; 32];
            let fit = search(&x, 15, false, |s, m| Some((s, m)), &mut q);
            let (lo, hi) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            let mut plain = [0u8; 32];
            let plain_err = quantize_against(&x, (hi - lo) / 15.0, lo, 15, &mut plain);
            assert!(fit.err <= plain_err, "seed {seed}: {} > {plain_err}", fit.err);
            let recomputed: f32 =
                x.iter().zip(&q).map(|(&v, &l)| (v - fit.scale * f32::from(l) - fit.min).powi(2)).sum();
            assert!(
                (recomputed - fit.err).abs() <= 1e-5 * plain_err.max(1e-12),
                "seed {seed}: err is the quants' error"
            );
            better += usize::from(fit.err < 0.95 * plain_err);
        }
        assert!(better > 100, "the search improves on min/max for most blocks ({better} of 299)");
    }

    #[test]
    fn symmetric_search_is_never_worse_than_ggml_q4_0_and_often_better() {
        let mut better = 0;
        for seed in 1..300u32 {
            let x = test_block(32, seed);
            let mut q = [0u8; 32];
            let fit = search_symmetric(&x, 15, 8, Some, &mut q);
            // ggml's quantize_row_q4_0_ref: the largest magnitude on -8.
            let extreme = x.iter().copied().fold(0f32, |a, v| if v.abs() > a.abs() { v } else { a });
            let d = extreme / -8.0;
            let plain_err: f32 = x
                .iter()
                .map(|&v| {
                    let l = ((v / d + 8.5) as i32).clamp(0, 15) as f32;
                    (v - d * (l - 8.0)).powi(2)
                })
                .sum();
            assert!(fit.err <= plain_err * (1.0 + 1e-6), "seed {seed}: {} > {plain_err}", fit.err);
            assert!(q.iter().all(|&l| l <= 15));
            let recomputed: f32 = x.iter().zip(&q).map(|(&v, &l)| (v - fit.scale * (f32::from(l) - 8.0)).powi(2)).sum();
            assert!(
                (recomputed - fit.err).abs() <= 1e-5 * plain_err.max(1e-12),
                "seed {seed}: err is the quants' error"
            );
            assert_eq!(fit.min, -8.0 * fit.scale);
            better += usize::from(fit.err < 0.95 * plain_err);
        }
        assert!(better > 100, "the search improves on ggml's fit for most blocks ({better} of 299)");
    }

    #[test]
    fn symmetric_grid_values_are_recovered_exactly_and_zero_stays_zero() {
        // Values on a Q4_0 grid (either sign of scale) fit with no error.
        for d in [0.125f32, -0.0625] {
            let x: Vec<f32> = (0..32).map(|i| d * ((i * 7 % 16) as f32 - 8.0)).collect();
            let mut q = [0u8; 32];
            let fit = search_symmetric(&x, 15, 8, Some, &mut q);
            assert!(fit.err < 1e-12, "d {d}: err {}", fit.err);
        }
        let mut q = [0u8; 32];
        let fit = search_symmetric(&[0.0; 32], 15, 8, Some, &mut q);
        assert_eq!(fit.err, 0.0);
    }

    #[test]
    fn rounding_is_f32_round_clamped() {
        let mut values: Vec<f32> = (0..=20_000u32).map(|i| i as f32 * 0.001 - 2.0).collect();
        // Ties, and the floats next to them.
        for k in 0..16 {
            let tie = k as f32 + 0.5;
            values.extend([tie, f32::from_bits(tie.to_bits() - 1), f32::from_bits(tie.to_bits() + 1)]);
        }
        values.extend([f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e9, -1e9]);
        for v in values {
            // By value: `round` keeps a -0.0 that this makes 0.0 (the same quant).
            assert_eq!(round_clamped(v, 15), v.round().clamp(0.0, 15.0), "{v}");
        }
        assert_eq!(round_clamped(f32::NAN, 15), 0.0);
    }

    #[test]
    fn lane_sums_are_the_squared_error() {
        for seed in 1..50u32 {
            let x = test_block(37, seed);
            let (scale, min) = (0.07, -0.4);
            let mut q = [0u8; 37];
            let err = quantize_against(&x, scale, min, 15, &mut q);
            let want: f64 =
                x.iter().zip(&q).map(|(&v, &l)| (f64::from(v) - f64::from(scale * f32::from(l) + min)).powi(2)).sum();
            assert!((f64::from(err) - want).abs() <= 1e-5 * want, "seed {seed}: {err} vs {want}");
        }
    }

    #[test]
    fn affine_grid_values_are_recovered_exactly() {
        // Values on a 4-bit grid (as a Q4_1 file's, dequantized) fit with no error.
        let x: Vec<f32> = (0..32).map(|i| -0.75 + 0.125 * ((i * 7 % 16) as f32)).collect();
        let mut q = [0u8; 32];
        let fit = search(&x, 15, false, |s, m| Some((s, m)), &mut q);
        assert!(fit.err < 1e-10, "err {}", fit.err);
    }

    #[test]
    fn min_stays_at_or_below_zero_when_asked() {
        let x: Vec<f32> = (0..32).map(|i| 1.0 + i as f32 * 0.1).collect();
        let mut q = [0u8; 32];
        let fit = search(&x, 15, true, |s, m| Some((s, m)), &mut q);
        assert!(fit.min <= 0.0 && fit.err.is_finite());
        let constant = [0.0f32; 32];
        let fit = search(&constant, 15, true, |s, m| Some((s, m)), &mut q);
        assert_eq!((fit.err, q), (0.0, [0u8; 32]));
    }
}
