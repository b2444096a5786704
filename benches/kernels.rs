//! Kernel throughput against the hardware, for every instruction set this CPU has.
//!
//! - `gemv`: one token (n = 1) through a weight matrix, reported as GB/s of
//!   weights read; next to it `memory_read`, a plain single-threaded sum over
//!   1 GiB, so a q8 GEMV's GB/s reads as a fraction of what one core can
//!   stream, in the same run. The q8 matrix `q8/32768x32768` is as large
//!   (1 GiB of quants), so neither fits this VM's 300 MiB L3: that pair is
//!   the like-for-like comparison.
//! - `gemm`: prefill shapes (n = 2 to 16 tokens, what one thread multiplies
//!   for a short prompt; n = 64 and 128), reported as elements/s where one
//!   element is one FLOP (2 × rows × cols × n per call): read "Gelem/s" as
//!   GFLOP/s.
//! - `attention`: one KV head of SmolLM2's shape (3 query heads, head_dim 64),
//!   f16 and f32 keys and values: decode at context depths 128, 512 and 2048
//!   as GB/s of keys and values read, causal prefill of 128 and 512 tokens as
//!   FLOP/s.
//! - `rmsnorm`, `quantize_q8_acts`: 576 and 4096 values, as GB/s of input.
//! - `kquant`: the K-quant matmuls (Q4_K, Q5_K, Q6_K in tiles), one token
//!   through 32768 × 32768 (0.6 to 0.9 GB: compare with `gemv/memory_read`
//!   and `gemv/q8`) and through SmolLM2's `ffn_down` 576 × 1536
//!   (cache-resident, the compute bound) as GB/s, and prefill shapes (4096 × 4096, 16 and 128
//!   tokens) as FLOP/s.
//! - `q4q5`: the Q4_0/Q4_1/Q5_0/Q5_1 matmuls (GGUF blocks in tiles), one token
//!   through 32768 × 32768 (0.56 to 0.69 GB: compare with `gemv/memory_read`)
//!   and through SmolLM2's 1536 × 576 (`ffn_up`'s half: cache-resident, the
//!   compute bound) as GB/s, Q4_1 prefill shapes (4096 × 4096, 16 and 128
//!   tokens) as FLOP/s.
//!
//! All kernels run single-threaded over the whole matrix. Every input is
//! checked once against the scalar reference before it is timed.
//!
//!     cargo bench --bench kernels                     # everything (a few minutes)
//!     cargo bench --bench kernels -- 'gemv/q8'        # a filter (a regex on the id)
//!
//! The machine is shared and noisy: compare figures as ratios within one run
//! (q8 GEMV / memory_read, avx512 / scalar), not across runs.
//!
//! A case whose ids the filter excludes builds none of its inputs (the large
//! matrices took most of a filtered run), and every matrix starts on a cache
//! line, as the model file's tensors do (docs/FORMAT.md): a heap block of
//! that size starts 16 bytes into a page, so each 64-byte AVX-512 load
//! straddled two lines and the AVX-512 GEMVs read slower than the model runs.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use gpt_fast_kernels::{reference, ActForm, AttnShape, DType, Isa, Kernels, Matrix, Q8Acts, Q8_BLOCK, Q8_TILE_ROWS};
use gpt_fast_quant::kquant::{self, q4_k::Q4K, q5_k::Q5K, q6_k::Q6K, KFormat, PackedKLayout};
use gpt_fast_quant::q4q5::{self, Kind};
use gpt_fast_quant::q8::PackedQ8Layout;
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
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.f32()).collect()
    }
}

/// The filter criterion was given (a regex on `group/function/parameter`),
/// read from the command line as criterion reads it, so that a case can skip
/// building inputs that no benchmark would time.
struct Filter(Option<regex::Regex>);

impl Filter {
    fn from_args() -> Self {
        // criterion's options that take a value: the argument after one is
        // not the filter.
        const WITH_VALUE: [&str; 17] = [
            "--save-baseline",
            "-s",
            "--baseline",
            "-b",
            "--baseline-lenient",
            "--load-baseline",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--profile-time",
            "--color",
            "--plotting-backend",
            "--output-format",
        ];
        let args: Vec<String> = std::env::args().skip(1).collect();
        let exact = args.iter().any(|a| a == "--exact");
        let mut after_option = false;
        for a in &args {
            if !after_option && !a.starts_with('-') {
                let pattern = if exact { format!("^{}$", regex::escape(a)) } else { a.clone() };
                return Self(regex::Regex::new(&pattern).ok());
            }
            after_option = WITH_VALUE.contains(&a.as_str()) || a == "-c";
        }
        Self(None)
    }

    /// Whether any of the benchmark ids `group/id` would run.
    fn any(&self, group: &str, ids: impl IntoIterator<Item = String>) -> bool {
        match &self.0 {
            None => true,
            Some(re) => ids.into_iter().any(|id| re.is_match(&format!("{group}/{id}"))),
        }
    }
}

/// The ids `function/isa` of one case for every table in `tables`.
fn ids_for(function: &str, tables: &[Kernels]) -> Vec<String> {
    tables.iter().map(|k| format!("{function}/{}", k.isa.name())).collect()
}

/// A weight matrix owned by the bench, stored as its dtype stores it, from a
/// cache-line boundary: `start` bytes into u64 words (so that every element
/// type's alignment holds).
struct OwnedMatrix {
    rows: usize,
    cols: usize,
    dtype: DType,
    words: Vec<u64>,
    start: usize,
    len: usize,
}

impl OwnedMatrix {
    fn new(dtype: DType, rows: usize, cols: usize, seed: u64) -> Self {
        let values = Rng::new(seed).vec(rows * cols);
        let mut bytes = Vec::new();
        dtype.encode(rows, cols, &values, &mut bytes);
        Self::from_bytes(dtype, rows, cols, &bytes)
    }

    fn from_bytes(dtype: DType, rows: usize, cols: usize, bytes: &[u8]) -> Self {
        let mut words = vec![0u64; bytes.len().div_ceil(8) + 8];
        let start = 8 * words.as_ptr().align_offset(64);
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[start..][..bytes.len()].copy_from_slice(bytes);
        Self { rows, cols, dtype, words, start, len: bytes.len() }
    }

    /// A packed q8 matrix of random quants in [-127, 127] and scales in
    /// [0.01, 0.02): quantizing `rows × cols` random f32 would take far longer
    /// for the 1 GiB matrix, and the GEMV's speed does not depend on the values.
    fn random_q8(rows: usize, cols: usize, seed: u64) -> Self {
        let layout = PackedQ8Layout::new(rows, cols).expect("cols a multiple of 32");
        let mut rng = Rng::new(seed);
        let mut bytes = vec![0u8; layout.n_bytes()];
        let (quants, scales) = bytes.split_at_mut(layout.quant_bytes());
        for chunk in quants.chunks_mut(8) {
            let random = rng.next_u64().to_le_bytes();
            for (q, b) in chunk.iter_mut().zip(random) {
                *q = (b as i8).max(-127) as u8;
            }
        }
        for s in scales.chunks_exact_mut(2) {
            s.copy_from_slice(&f16::from_f32(0.015 + 0.005 * rng.f32()).to_bits().to_le_bytes());
        }
        Self::from_bytes(DType::Q8, rows, cols, &bytes)
    }

    fn view(&self) -> Matrix<'_> {
        let data = &bytemuck::cast_slice::<u64, u8>(&self.words)[self.start..][..self.len];
        Matrix { rows: self.rows, cols: self.cols, dtype: self.dtype, data }
    }

    /// Bytes the kernel reads: the whole matrix (quants and scales for q8).
    fn bytes(&self) -> u64 {
        self.len as u64
    }
}

/// `n` activation rows, as f32 and quantized to q8 by the reference quantizer.
struct Acts {
    x: Vec<f32>,
    quants: Vec<i8>,
    scales: Vec<f32>,
    /// Each block's `scale × Σ quants`, for the dtypes whose form reads them.
    sums: Vec<f32>,
    cols: usize,
}

impl Acts {
    fn new(n: usize, cols: usize, seed: u64) -> Self {
        let x = Rng::new(seed).vec(n * cols);
        let mut quants = vec![0i8; n * cols];
        let mut scales = vec![0f32; n * cols / Q8_BLOCK];
        reference::quantize_q8_acts(&x, &mut quants, &mut scales);
        let mut sums = vec![0f32; scales.len()];
        reference::q8_block_sums(&quants, &scales, &mut sums);
        Self { x, quants, scales, sums, cols }
    }

    fn view(&self) -> gpt_fast_kernels::Acts<'_> {
        let q8 = Q8Acts { cols: self.cols, quants: &self.quants, scales: &self.scales, sums: &self.sums };
        gpt_fast_kernels::Acts { x: &self.x, q8 }
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
    let q8 = w.dtype.act() != ActForm::F32;
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
                sums: &acts.sums[t * w.cols / Q8_BLOCK..],
            };
            let acts_t = gpt_fast_kernels::Acts { x: x_t, q8: xq };
            scalar.matmul(&m, rows.clone(), &acts_t, 1, &mut want[..rows.len()], w.rows);
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
    kernels.matmul(w, 0..w.rows, &acts.view(), n, out, w.rows);
}

const DTYPES: [DType; 3] = [DType::Q8, DType::F16, DType::F32];

/// Bytes of the `memory_read` buffer and of the large q8 GEMV's quants: past
/// any L3 (this VM reports 300 MiB).
const STREAM_BYTES: usize = 1 << 30;

/// One core's streaming read bandwidth: sum of u64 over [`STREAM_BYTES`].
fn memory_read(group: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>) {
    const BYTES: usize = STREAM_BYTES;
    if !Filter::from_args().any("gemv", ["memory_read/1GiB".to_string()]) {
        return;
    }
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
    group.bench_function("memory_read/1GiB", |b| b.iter(|| sum(black_box(&words))));
}

fn gemv(c: &mut Criterion) {
    let tables = tables();
    let filter = Filter::from_args();
    let mut group = c.benchmark_group("gemv");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    memory_read(&mut group);
    // The q8 GEMV over as many bytes as memory_read: 32768 × 32768 quants.
    // Not scalar: at well under 1 GB/s, ten samples would take a minute.
    let simd: Vec<Kernels> = tables.iter().filter(|k| k.isa != Isa::Scalar).copied().collect();
    if filter.any("gemv", ids_for("q8/32768x32768", &simd)) {
        let (rows, cols) = (32768, 32768);
        assert_eq!(rows * cols, STREAM_BYTES);
        let w = OwnedMatrix::random_q8(rows, cols, 11);
        let m = w.view();
        let acts = Acts::new(1, cols, 7);
        let mut out = vec![0f32; rows];
        group.throughput(Throughput::Bytes(w.bytes()));
        for k in &simd {
            run_matmul(k, &m, &acts, 1, &mut out);
            check_matmul(k, &w, &acts, 1, &out);
            let id = BenchmarkId::new(format!("q8/{rows}x{cols}"), k.isa.name());
            group.bench_function(id, |b| b.iter(|| run_matmul(k, &m, black_box(&acts), 1, &mut out)));
        }
    }
    // The SmolLM2 LM head and a 7B-class square matrix: 28 to 256 MiB, past
    // the private caches (this VM reports a 300 MiB shared L3, so the smaller
    // shapes may partly hit it; the memory_read buffer does not).
    for (rows, cols) in [(49152, 576), (8192, 8192)] {
        let acts = Acts::new(1, cols, 7);
        let mut out = vec![0f32; rows];
        for dtype in DTYPES {
            if !filter.any("gemv", ids_for(&format!("{}/{rows}x{cols}", dtype.name()), &tables)) {
                continue;
            }
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
    let filter = Filter::from_args();
    let mut group = c.benchmark_group("gemm");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    // SmolLM2's FFN up/gate (1536×576) and down (576×1536) projections.
    for (rows, cols) in [(1536, 576), (576, 1536)] {
        for dtype in DTYPES {
            let ns = [2, 4, 8, 9, 16, 64, 128];
            let function = |n| format!("{}/{rows}x{cols}/n{n}", dtype.name());
            if !filter.any("gemm", ns.iter().flat_map(|&n| ids_for(&function(n), &tables))) {
                continue;
            }
            let w = OwnedMatrix::new(dtype, rows, cols, 2);
            let m = w.view();
            for n in ns {
                // Calls alternate between two sets of activations, as a model's
                // matmuls do: a kernel that keeps what it prepared from the
                // last call's (the AVX-512 GEMM's packing) must not gain from
                // a bench that repeats them.
                let acts = [Acts::new(n, cols, 3), Acts::new(n, cols, 4)];
                let mut out = vec![0f32; n * rows];
                // One element = one FLOP (a multiply and an add per weight per token).
                group.throughput(Throughput::Elements(2 * (rows * cols * n) as u64));
                for k in &tables {
                    run_matmul(k, &m, &acts[0], n, &mut out);
                    check_matmul(k, &w, &acts[0], n, &out);
                    let id = BenchmarkId::new(function(n), k.isa.name());
                    let mut i = 0;
                    group.bench_function(id, |b| {
                        b.iter(|| {
                            i ^= 1;
                            run_matmul(k, &m, black_box(&acts[i]), n, &mut out)
                        })
                    });
                    if n == 8 && dtype == DType::Q8 {
                        // The batched decode step's cut: the matrix in 8 calls
                        // of whole tiles, as two threads take it.
                        let id = BenchmarkId::new(format!("{}/chunks8", function(n)), k.isa.name());
                        let chunk = rows.div_ceil(8).next_multiple_of(Q8_TILE_ROWS);
                        group.bench_function(id, |b| {
                            b.iter(|| {
                                i ^= 1;
                                for (c, out) in out.chunks_mut(chunk * n).enumerate() {
                                    let r0 = c * chunk;
                                    let len = out.len() / n;
                                    k.matmul(&m, r0..r0 + len, &black_box(&acts[i]).view(), n, out, len);
                                }
                            })
                        });
                    }
                }
            }
        }
    }
    group.finish();
}

/// Keys and values of one KV head, in the two cache types.
struct OwnedKv {
    k32: Vec<f32>,
    v32: Vec<f32>,
    k16: Vec<f16>,
    v16: Vec<f16>,
}

impl OwnedKv {
    fn new(slots: usize, head_dim: usize, rng: &mut Rng) -> Self {
        let (k32, v32) = (rng.vec(slots * head_dim), rng.vec(slots * head_dim));
        let half = |x: &[f32]| x.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>();
        Self { k16: half(&k32), v16: half(&v32), k32, v32 }
    }
}

/// One attention call with `k`'s kernel for `kv` (`"f16"` or `"f32"`).
fn run_attention(
    k: &Kernels,
    kv: &str,
    shape: &AttnShape,
    q: &[f32],
    c: &OwnedKv,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    match kv {
        "f16" => (k.attention_f16)(shape, q, &c.k16, &c.v16, scratch, out),
        _ => (k.attention_f32)(shape, q, &c.k32, &c.v32, scratch, out),
    }
}

/// SmolLM2's attention shape: head_dim 64, 3 query heads per KV head, one KV
/// head per call (as the forward pass cuts it).
/// - decode: one token at context depths 128, 512 and 2048, as GB/s of keys
///   and values read (each once for the 3 query heads);
/// - prefill: 128 and 512 causal tokens from position 0 in one call, as FLOP/s
///   (`Gelem/s`; 4 × head_dim FLOPs per query row and attended key: q·k and p·v).
///
/// Outputs are checked against the scalar reference: each is a convex
/// combination of values in [-1, 1), so within `2e-5` absolute.
fn attention(c: &mut Criterion) {
    const HEAD_DIM: usize = 64;
    const GROUP: usize = 3;
    let tables = tables();
    let mut group = c.benchmark_group("attention");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let mut rng = Rng::new(4);
    let cases = [("decode", 1, 128), ("decode", 1, 512), ("decode", 1, 2048), ("prefill", 128, 1), ("prefill", 512, 1)];
    for (kind, n_tokens, n_pos) in cases {
        let q_stride = GROUP * HEAD_DIM;
        let shape = AttnShape { head_dim: HEAD_DIM, group: GROUP, n_tokens, n_pos, q_stride };
        let q: Vec<f32> = rng.vec(n_tokens * q_stride).iter().map(|v| 4.0 * v).collect();
        let cache = OwnedKv::new(shape.slots(), HEAD_DIM, &mut rng);
        let mut scratch = vec![0f32; AttnShape::scratch_len(HEAD_DIM, shape.rows())];
        let mut want = vec![0f32; shape.rows() * HEAD_DIM];
        let mut out = want.clone();
        let name = if kind == "decode" { format!("decode/ctx{n_pos}") } else { format!("prefill/n{n_tokens}") };
        for kv in ["f16", "f32"] {
            run_attention(&Kernels::scalar(), kv, &shape, &q, &cache, &mut scratch, &mut want);
            let attended: usize = (0..n_tokens).map(|t| n_pos + t).sum::<usize>() * GROUP;
            group.throughput(if kind == "decode" {
                let size = if kv == "f16" { 2 } else { 4 };
                Throughput::Bytes((2 * shape.slots() * HEAD_DIM * size) as u64)
            } else {
                Throughput::Elements((4 * attended * HEAD_DIM) as u64)
            });
            for k in &tables {
                run_attention(k, kv, &shape, &q, &cache, &mut scratch, &mut out);
                for (i, (g, w)) in out.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() <= 2e-5, "{} attention {name} {kv} [{i}]: got {g}, want {w}", k.name());
                }
                let id = BenchmarkId::new(format!("{name}/{kv}"), k.name());
                group.bench_function(id, |b| {
                    b.iter(|| run_attention(k, kv, &shape, black_box(&q), &cache, &mut scratch, &mut out))
                });
            }
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

/// A K-quant type: its format's repack and the table entry that runs it.
struct KType {
    name: &'static str,
    block_bytes: usize,
    /// Offsets of the f16 fields in the GGUF block.
    f16_at: &'static [usize],
    repack: fn(&[u8], &PackedKLayout, &mut [u8]),
    layout: fn(usize, usize) -> Option<PackedKLayout>,
    dtype: DType,
}

const KTYPES: [KType; 3] = [
    KType {
        name: "q4_k",
        block_bytes: Q4K::BLOCK_BYTES,
        f16_at: &[0, 2],
        repack: kquant::repack::<Q4K>,
        layout: PackedKLayout::new::<Q4K>,
        dtype: DType::Q4_K,
    },
    KType {
        name: "q5_k",
        block_bytes: Q5K::BLOCK_BYTES,
        f16_at: &[0, 2],
        repack: kquant::repack::<Q5K>,
        layout: PackedKLayout::new::<Q5K>,
        dtype: DType::Q5_K,
    },
    KType {
        name: "q6_k",
        block_bytes: Q6K::BLOCK_BYTES,
        f16_at: &[208],
        repack: kquant::repack::<Q6K>,
        layout: PackedKLayout::new::<Q6K>,
        dtype: DType::Q6_K,
    },
];

/// A packed K-quant matrix of random blocks (any bit pattern is a valid
/// block; the f16 scales are set to small finite values).
fn random_kquant(ty: &KType, rows: usize, cols: usize, seed: u64) -> OwnedMatrix {
    let mut rng = Rng::new(seed);
    let mut gguf = vec![0u8; rows * cols / 256 * ty.block_bytes];
    for chunk in gguf.chunks_mut(8) {
        let bytes = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    for block in gguf.chunks_exact_mut(ty.block_bytes) {
        for &at in ty.f16_at {
            block[at..at + 2].copy_from_slice(&f16::from_f32(0.001 + 0.0005 * rng.f32()).to_le_bytes());
        }
    }
    let layout = (ty.layout)(rows, cols).expect("cols a multiple of 256");
    let mut packed = vec![0u8; layout.n_bytes()];
    (ty.repack)(&gguf, &layout, &mut packed);
    OwnedMatrix::from_bytes(ty.dtype, rows, cols, &packed)
}

/// Checks rows 0..9 of the first and last token against the scalar reference.
fn check_kquant(k: &Kernels, ty: &KType, w: &Matrix, acts: &Acts, n: usize, out: &[f32]) {
    let (rows, cols) = (w.rows, w.cols);
    let nb = cols / Q8_BLOCK;
    for t in [0, n - 1] {
        let (quants, scales, sums) = (&acts.quants[t * cols..], &acts.scales[t * nb..], &acts.sums[t * nb..]);
        let x = gpt_fast_kernels::Acts { x: &acts.x[t * cols..], q8: Q8Acts { cols, quants, scales, sums } };
        let mut want = [0f32; 9];
        Kernels::scalar().matmul(w, 0..9, &x, 1, &mut want, 9);
        for (r, &want) in want.iter().enumerate() {
            let got = out[t * rows + r];
            assert!(
                (got - want).abs() <= 1e-4 * want.abs() + 1e-3,
                "{} {} token {t} row {r}: {got} vs {want}",
                k.name(),
                ty.name
            );
        }
    }
}

fn kquant(c: &mut Criterion) {
    let tables: Vec<Kernels> = tables().into_iter().filter(|k| k.isa != Isa::Scalar).collect();
    let filter = Filter::from_args();
    let mut group = c.benchmark_group("kquant");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for ty in &KTYPES {
        for (rows, cols, n) in [(32768, 32768, 1), (576, 1536, 1), (4096, 4096, 16), (4096, 4096, 128)] {
            let function = format!("{}/{rows}x{cols}/n{n}", ty.name);
            if !filter.any("kquant", ids_for(&function, &tables)) {
                continue;
            }
            let w = random_kquant(ty, rows, cols, 5);
            let m = w.view();
            let acts = Acts::new(n, cols, 7);
            let mut out = vec![0f32; n * rows];
            group.throughput(if n == 1 {
                Throughput::Bytes(w.bytes())
            } else {
                Throughput::Elements(2 * (rows * cols * n) as u64)
            });
            for k in &tables {
                run_matmul(k, &m, &acts, n, &mut out);
                check_kquant(k, ty, &m, &acts, n, &out);
                let id = BenchmarkId::new(&function, k.isa.name());
                group.bench_function(id, |b| b.iter(|| run_matmul(k, &m, black_box(&acts), n, &mut out)));
            }
        }
    }
    group.finish();
}

/// A packed matrix of `kind` from random GGUF blocks (any bit pattern is a
/// valid block; the f16 scale and minimum are set to small finite values), in
/// u32s so that its planes are aligned as in the model file.
fn random_q4q5(kind: Kind, rows: usize, cols: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let layout = q4q5::PackedLayout::new(kind, rows, cols).expect("cols a multiple of 32");
    let (block_bytes, row_bytes) = (kind.gguf_block_bytes(), layout.gguf_row_bytes());
    let mut gguf = vec![0u8; rows * row_bytes];
    for chunk in gguf.chunks_mut(8) {
        let bytes = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    for block in gguf.chunks_exact_mut(block_bytes) {
        for at in [0, 2].into_iter().take(if kind.has_min() { 2 } else { 1 }) {
            block[at..at + 2].copy_from_slice(&f16::from_f32(0.001 + 0.0005 * rng.f32()).to_le_bytes());
        }
    }
    let mut words = vec![0u32; layout.n_bytes().div_ceil(4)];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    q4q5::pack_rows(&layout, |r| &gguf[r * row_bytes..][..row_bytes], &mut bytes[..layout.n_bytes()]);
    words
}

fn q4q5_bench(c: &mut Criterion) {
    let tables: Vec<Kernels> = tables().into_iter().filter(|k| k.isa != Isa::Scalar).collect();
    let filter = Filter::from_args();
    let mut group = c.benchmark_group("q4q5");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let shapes = Kind::ALL
        .into_iter()
        .flat_map(|kind| [(kind, 32768, 32768, 1), (kind, 1536, 576, 1)])
        .chain([(Kind::Q4_1, 4096, 4096, 16), (Kind::Q4_1, 4096, 4096, 128)]);
    for (kind, rows, cols, n) in shapes {
        let function = format!("{}/{rows}x{cols}/n{n}", kind.name());
        if !filter.any("q4q5", ids_for(&function, &tables)) {
            continue;
        }
        let words = random_q4q5(kind, rows, cols, 5);
        let n_bytes = q4q5::PackedLayout::new(kind, rows, cols).unwrap().n_bytes();
        let w = OwnedMatrix::from_bytes(kind.dtype(), rows, cols, &bytemuck::cast_slice(&words)[..n_bytes]);
        let m = w.view();
        let acts = Acts::new(n, cols, 7);
        let mut out = vec![0f32; n * rows];
        group.throughput(if n == 1 {
            Throughput::Bytes(n_bytes as u64)
        } else {
            Throughput::Elements(2 * (rows * cols * n) as u64)
        });
        for k in &tables {
            run_matmul(k, &m, &acts, n, &mut out);
            // Rows 0..9 of the first and last token against the scalar reference.
            for t in [0, n - 1] {
                let nb = cols / Q8_BLOCK;
                let (quants, scales, sums) = (&acts.quants[t * cols..], &acts.scales[t * nb..], &acts.sums[t * nb..]);
                let x = gpt_fast_kernels::Acts { x: &acts.x[t * cols..], q8: Q8Acts { cols, quants, scales, sums } };
                let mut want = [0f32; 9];
                Kernels::scalar().matmul(&m, 0..9, &x, 1, &mut want, 9);
                for (r, &want) in want.iter().enumerate() {
                    let got = out[t * rows + r];
                    let ok = (got - want).abs() <= 1e-4 * want.abs() + 1e-3;
                    assert!(ok, "{} {} token {t} row {r}: {got} vs {want}", k.name(), kind.name());
                }
            }
            let id = BenchmarkId::new(&function, k.isa.name());
            group.bench_function(id, |b| b.iter(|| run_matmul(k, &m, black_box(&acts), n, &mut out)));
        }
    }
    group.finish();
}

criterion_group!(benches, gemv, gemm, kquant, q4q5_bench, attention, vector_ops);
criterion_main!(benches);
