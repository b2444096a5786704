//! What the kernel tests share: the tables to test, a seeded generator, the
//! comparisons, row ranges and random q8 activations.
#![allow(dead_code)] // each test binary uses its own part

use std::ops::Range;

use gpt_fast_kernels::{reference, Isa, Kernels, Q8_BLOCK};

/// The kernel tables to test: every non-scalar ISA this CPU has. The "testing"
/// line names the table's variant (`neon+dotprod` or `neon`: which q8 matmul ran).
pub fn tables() -> Vec<Kernels> {
    let mut found = Vec::new();
    for isa in [Isa::Avx2, Isa::Avx512, Isa::Neon] {
        match Kernels::for_isa(isa) {
            Some(k) => {
                println!("testing: {}", k.name());
                found.push(k);
            }
            None => println!("skipped: {} not available on this CPU (or in this build)", isa.name()),
        }
    }
    found
}

/// xorshift64* — deterministic, no extra crates.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| self.f32() * scale).collect()
    }
    pub fn i8_127(&mut self) -> i8 {
        (self.below(255) as i32 - 127) as i8
    }
}

/// `got[i]` equals `want[i]` (NaN for NaN) or is within `tol(i)` of it
/// (an f32 or f64 budget; the comparison is exact in f64 either way).
#[track_caller]
pub fn assert_close<T: Into<f64> + std::fmt::LowerExp>(
    what: &str,
    got: &[f32],
    want: &[f32],
    tol: impl Fn(usize) -> T,
) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = g == w || (g.is_nan() && w.is_nan()) || f64::from((g - w).abs()) <= tol(i).into();
        assert!(ok, "{what}: [{i}] got {g:e}, want {w:e} (tolerance {:e})", tol(i));
    }
}

#[track_caller]
pub fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    let (g, w): (Vec<u32>, Vec<u32>) =
        (got.iter().map(|v| v.to_bits()).collect(), want.iter().map(|v| v.to_bits()).collect());
    assert_eq!(g, w, "{what}: not bit-identical");
}

/// Row ranges: whole, starting mid-tile, ending mid-tile, one row mid-tile.
pub fn row_ranges(rows: usize) -> Vec<Range<usize>> {
    let mut r = Vec::new();
    r.push(0..rows);
    if rows > 3 {
        r.push(3..rows);
        r.push(0..rows - 2);
        r.push(rows / 2..rows / 2 + 1);
    }
    if rows > 20 {
        r.push(5..rows - 11);
    }
    r
}

/// `n` activation rows quantized by the reference, with some all-zero blocks,
/// some large ones, and some blocks replaced by raw ±127 quants.
pub fn random_acts(rng: &mut Rng, n: usize, cols: usize) -> (Vec<i8>, Vec<f32>) {
    let nb = cols / Q8_BLOCK;
    let mut x = rng.vec(n * cols, 2.0);
    for block in x.chunks_exact_mut(Q8_BLOCK) {
        match rng.below(8) {
            0 => block.fill(0.0),
            1 => block.iter_mut().for_each(|v| *v *= 1000.0),
            _ => {}
        }
    }
    let mut quants = vec![0i8; n * cols];
    let mut scales = vec![0f32; n * nb];
    reference::quantize_q8_acts(&x, &mut quants, &mut scales);
    for (q, s) in quants.chunks_exact_mut(Q8_BLOCK).zip(&mut scales) {
        if rng.below(10) == 0 {
            q.iter_mut().for_each(|v| *v = [127, -127][rng.below(2)]);
            *s = 1e-3;
        }
    }
    (quants, scales)
}

/// Each q8 block's `scale × Σ quants`, as the matmuls of the types with a
/// minimum or an offset take them (`reference::q8_block_sums`).
pub fn block_sums(quants: &[i8], scales: &[f32]) -> Vec<f32> {
    let mut sums = vec![0f32; scales.len()];
    reference::q8_block_sums(quants, scales, &mut sums);
    sums
}

/// [`random_acts`] with their [`block_sums`].
pub fn random_acts_with_sums(rng: &mut Rng, n: usize, cols: usize) -> (Vec<i8>, Vec<f32>, Vec<f32>) {
    let (quants, scales) = random_acts(rng, n, cols);
    let sums = block_sums(&quants, &scales);
    (quants, scales, sums)
}
