//! Kernel throughput against the hardware, for every instruction set this CPU has.
//!
//! - `gemv`: one token (n = 1) through a weight matrix, reported as GB/s of
//!   weights read; next to it `memory_read`, a plain single-threaded sum over
//!   512 MiB, so a q8 GEMV's GB/s reads as a fraction of what one core can
//!   stream, in the same run.
//! - `gemm`: prefill shapes (n = 64 and 128 tokens), reported as elements/s
//!   where one element is one FLOP (2 × rows × cols × n per call): read
//!   "Gelem/s" as GFLOP/s.
//! - `attention`: one decode step of one head (head_dim 64) at context depths
//!   128, 1024 and 4096, as GB/s of keys and values read.
//! - `rmsnorm`, `quantize_q8_acts`: 576 and 4096 values, as GB/s of input.
//!
//! All kernels run single-threaded over the whole matrix. Every input is
//! checked once against the scalar reference before it is timed.
//!
//!     cargo bench --bench kernels                     # everything (a few minutes)
//!     cargo bench --bench kernels -- 'gemv/q8'        # a filter (a regex on the id)
//!
//! The machine is shared and noisy: compare figures as ratios within one run
//! (q8 GEMV / memory_read, avx512 / scalar), not across runs.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use gpt_fast_kernels::{reference, Isa, Kernels, Matrix, Q8Acts, WeightData, Q8_BLOCK};
use gpt_fast_quant::q8::{quantize_packed, PackedQ8Layout};
use half::f16;

/// Every kernel table this CPU can run, scalar included.
fn tables() -> Vec<Kernels> {
    [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon].into_iter().filter_map(Kernels::for_isa).collect()
}

/// xorshift64*: deterministic inputs without another crate.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.f32()).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DType {
    Q8,
    F16,
    F32,
}

impl DType {
    fn name(self) -> &'static str {
        match self {
            Self::Q8 => "q8",
            Self::F16 => "f16",
            Self::F32 => "f32",
        }
    }
}

/// A weight matrix owned by the bench, in one of the three run types.
enum Weight {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Q8 { quants: Vec<i8>, scales: Vec<f16> },
}

struct OwnedMatrix {
    rows: usize,
    cols: usize,
    weight: Weight,
}

impl OwnedMatrix {
    fn new(dtype: DType, rows: usize, cols: usize, seed: u64) -> Self {
        let values = Rng::new(seed).vec(rows * cols);
        let weight = match dtype {
            DType::F32 => Weight::F32(values),
            DType::F16 => Weight::F16(values.iter().map(|&v| f16::from_f32(v)).collect()),
            DType::Q8 => {
                let layout = PackedQ8Layout::new(rows, cols).expect("cols a multiple of 32");
                let mut packed = vec![0u8; layout.n_bytes()];
                quantize_packed(&values, &layout, &mut packed);
                let (q, s) = packed.split_at(layout.quant_bytes());
                Weight::Q8 {
                    quants: q.iter().map(|&b| b as i8).collect(),
                    scales: s.chunks_exact(2).map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]]))).collect(),
                }
            }
        };
        Self { rows, cols, weight }
    }

    fn view(&self) -> Matrix<'_> {
        let data = match &self.weight {
            Weight::F32(d) => WeightData::F32(d),
            Weight::F16(d) => WeightData::F16(d),
            Weight::Q8 { quants, scales } => WeightData::Q8 { quants, scales },
        };
        Matrix { rows: self.rows, cols: self.cols, data }
    }

    /// Bytes the kernel reads: the whole matrix (quants and scales for q8).
    fn bytes(&self) -> u64 {
        match &self.weight {
            Weight::F32(d) => d.len() as u64 * 4,
            Weight::F16(d) => d.len() as u64 * 2,
            Weight::Q8 { quants, scales } => quants.len() as u64 + scales.len() as u64 * 2,
        }
    }
}

/// `n` activation rows, as f32 and quantized to q8 by the reference quantizer.
struct Acts {
    x: Vec<f32>,
    quants: Vec<i8>,
    scales: Vec<f32>,
    cols: usize,
}

impl Acts {
    fn new(n: usize, cols: usize, seed: u64) -> Self {
        let x = Rng::new(seed).vec(n * cols);
        let mut quants = vec![0i8; n * cols];
        let mut scales = vec![0f32; n * cols / Q8_BLOCK];
        reference::quantize_q8_acts(&x, &mut quants, &mut scales);
        Self { x, quants, scales, cols }
    }

    fn q8(&self) -> Q8Acts<'_> {
        Q8Acts { cols: self.cols, quants: &self.quants, scales: &self.scales }
    }

    /// Token `t` as the kernel sees it: dequantized for q8 weights.
    fn seen(&self, t: usize, q8: bool) -> Vec<f32> {
        let cols = self.cols;
        if !q8 {
            return self.x[t * cols..][..cols].to_vec();
        }
        let (q, s) = (&self.quants[t * cols..][..cols], &self.scales[t * cols / Q8_BLOCK..][..cols / Q8_BLOCK]);
        q.iter().enumerate().map(|(i, &v)| f32::from(v) * s[i / Q8_BLOCK]).collect()
    }
}

/// Checks a few rows of the first and last token of `out` (as `kernels` wrote
/// it) against the scalar reference, within `1e-5 × Σ|w·x|` per output (the
/// kernels sum in another order; q8 fuses one multiply-add per block).
fn check_matmul(kernels: &Kernels, w: &OwnedMatrix, acts: &Acts, n: usize, out: &[f32]) {
    let m = w.view();
    let q8 = matches!(w.weight, Weight::Q8 { .. });
    let scalar = Kernels::scalar();
    let rows_checked = [0..9.min(w.rows), w.rows.saturating_sub(9)..w.rows];
    let mut want = vec![0f32; n * w.rows];
    let mut row = vec![0f32; w.cols];
    for t in [0, n - 1] {
        let x = acts.seen(t, q8);
        for rows in rows_checked.clone() {
            // Token t alone: a one-token call on the slice starting at token t.
            let x_t = &acts.x[t * w.cols..];
            let xq = Q8Acts {
                cols: w.cols,
                quants: &acts.quants[t * w.cols..],
                scales: &acts.scales[t * w.cols / Q8_BLOCK..],
            };
            scalar.matmul(&m, rows.clone(), x_t, &xq, 1, &mut want[..rows.len()], w.rows);
            for (i, r) in rows.enumerate() {
                m.row_to_f32(r, &mut row);
                let terms: f32 = row.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
                let got = out[t * w.rows + r];
                assert!(
                    (got - want[i]).abs() <= 1e-5 * terms + 1e-6,
                    "{} matmul {}x{} n={n} token {t} row {r}: got {got}, want {}",
                    kernels.isa.name(),
                    w.rows,
                    w.cols,
                    want[i]
                );
            }
        }
    }
}

fn run_matmul(kernels: &Kernels, w: &Matrix, acts: &Acts, n: usize, out: &mut [f32]) {
    kernels.matmul(w, 0..w.rows, &acts.x, &acts.q8(), n, out, w.rows);
}

const DTYPES: [DType; 3] = [DType::Q8, DType::F16, DType::F32];

/// One core's streaming read bandwidth: sum of u64 over 512 MiB.
fn memory_read(group: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>) {
    const BYTES: usize = 512 << 20;
    let words: Vec<u64> = (0..(BYTES / 8) as u64).collect();
    let n = words.len() as u64;
    // Eight independent sums so the loop is bound by loads, not by one add chain.
    let sum = |w: &[u64]| -> u64 {
        let mut acc = [0u64; 8];
        for chunk in w.chunks_exact(8) {
            for (a, &v) in acc.iter_mut().zip(chunk) {
                *a = a.wrapping_add(v);
            }
        }
        acc.iter().fold(0, |s, &a| s.wrapping_add(a))
    };
    assert_eq!(sum(&words), n * (n - 1) / 2, "memory_read: wrong sum");
    group.throughput(Throughput::Bytes(BYTES as u64));
    group.bench_function("memory_read/512MiB", |b| b.iter(|| sum(black_box(&words))));
}

fn gemv(c: &mut Criterion) {
    let tables = tables();
    let mut group = c.benchmark_group("gemv");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    memory_read(&mut group);
    // The SmolLM2 LM head and a 7B-class square matrix: 28 to 256 MiB, past
    // the private caches (this VM reports a 300 MiB shared L3, so the smaller
    // shapes may partly hit it; the memory_read buffer does not).
    for (rows, cols) in [(49152, 576), (8192, 8192)] {
        let acts = Acts::new(1, cols, 7);
        let mut out = vec![0f32; rows];
        for dtype in DTYPES {
            let w = OwnedMatrix::new(dtype, rows, cols, 1);
            let m = w.view();
            group.throughput(Throughput::Bytes(w.bytes()));
            for k in &tables {
                run_matmul(k, &m, &acts, 1, &mut out);
                check_matmul(k, &w, &acts, 1, &out);
                let id = BenchmarkId::new(format!("{}/{rows}x{cols}", dtype.name()), k.isa.name());
                group.bench_function(id, |b| b.iter(|| run_matmul(k, &m, black_box(&acts), 1, &mut out)));
            }
        }
    }
    group.finish();
}

fn gemm(c: &mut Criterion) {
    let tables = tables();
    let mut group = c.benchmark_group("gemm");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    // SmolLM2's FFN up/gate (1536×576) and down (576×1536) projections.
    for (rows, cols) in [(1536, 576), (576, 1536)] {
        for dtype in DTYPES {
            let w = OwnedMatrix::new(dtype, rows, cols, 2);
            let m = w.view();
            for n in [64, 128] {
                let acts = Acts::new(n, cols, 3);
                let mut out = vec![0f32; n * rows];
                // One element = one FLOP (a multiply and an add per weight per token).
                group.throughput(Throughput::Elements(2 * (rows * cols * n) as u64));
                for k in &tables {
                    run_matmul(k, &m, &acts, n, &mut out);
                    check_matmul(k, &w, &acts, n, &out);
                    let id = BenchmarkId::new(format!("{}/{rows}x{cols}/n{n}", dtype.name()), k.isa.name());
                    group.bench_function(id, |b| b.iter(|| run_matmul(k, &m, black_box(&acts), n, &mut out)));
                }
            }
        }
    }
    group.finish();
}

fn attention(c: &mut Criterion) {
    const HEAD_DIM: usize = 64;
    let tables = tables();
    let mut group = c.benchmark_group("attention");
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let mut rng = Rng::new(4);
    for n_pos in [128, 1024, 4096] {
        let q = rng.vec(HEAD_DIM);
        let keys = rng.vec(n_pos * HEAD_DIM);
        let values = rng.vec(n_pos * HEAD_DIM);
        let (mut scores, mut want, mut out) = (vec![0f32; n_pos], vec![0f32; HEAD_DIM], vec![0f32; HEAD_DIM]);
        reference::attention_head(&q, &keys, &values, n_pos, &mut scores, &mut want);
        // Keys and values read once per step.
        group.throughput(Throughput::Bytes((2 * n_pos * HEAD_DIM * 4) as u64));
        for k in &tables {
            (k.attention_head)(&q, &keys, &values, n_pos, &mut scores, &mut out);
            // Each output is a convex combination of values in [-1, 1).
            for (i, (g, w)) in out.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 2e-5, "{} attention n_pos={n_pos} [{i}]: got {g}, want {w}", k.isa.name());
            }
            group.bench_function(BenchmarkId::new(format!("ctx{n_pos}"), k.isa.name()), |b| {
                b.iter(|| (k.attention_head)(black_box(&q), &keys, &values, n_pos, &mut scores, &mut out))
            });
        }
    }
    group.finish();
}

fn vector_ops(c: &mut Criterion) {
    let tables = tables();
    let mut group = c.benchmark_group("vector");
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let mut rng = Rng::new(5);
    for len in [576, 4096] {
        let x = rng.vec(len);
        let weight: Vec<f32> = rng.vec(len).iter().map(|v| 1.0 + 0.1 * v).collect();
        let mut want = vec![0f32; len];
        reference::rmsnorm(&x, &weight, 1e-5, &mut want);
        let (mut want_q, mut want_s) = (vec![0i8; len], vec![0f32; len / Q8_BLOCK]);
        reference::quantize_q8_acts(&x, &mut want_q, &mut want_s);
        group.throughput(Throughput::Bytes(len as u64 * 4));
        for k in &tables {
            let mut out = vec![0f32; len];
            (k.rmsnorm)(&x, &weight, 1e-5, &mut out);
            for (i, (g, w)) in out.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-5 * w.abs() + 1e-6, "{} rmsnorm {len} [{i}]: {g} vs {w}", k.isa.name());
            }
            group.bench_function(BenchmarkId::new(format!("rmsnorm/{len}"), k.isa.name()), |b| {
                b.iter(|| (k.rmsnorm)(black_box(&x), &weight, 1e-5, &mut out))
            });

            let (mut q, mut s) = (vec![0i8; len], vec![0f32; len / Q8_BLOCK]);
            (k.quantize_q8_acts)(&x, &mut q, &mut s);
            assert_eq!((&q, &s), (&want_q, &want_s), "{} quantize_q8_acts {len}: not bit-exact", k.isa.name());
            group.bench_function(BenchmarkId::new(format!("quantize_q8_acts/{len}"), k.isa.name()), |b| {
                b.iter(|| (k.quantize_q8_acts)(black_box(&x), &mut q, &mut s))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, gemv, gemm, attention, vector_ops);
criterion_main!(benches);
