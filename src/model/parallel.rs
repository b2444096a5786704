//! Splitting the forward pass's heavy operations across the thread pool.
//!
//! A few tokens (decode, one token of each of a batch's sequences, a short
//! prompt): a matmul's output rows are cut into chunks of whole q8 tiles,
//! each computed for all the tokens, so the weights are read once. Prefill
//! (more tokens): the tokens are cut into groups and each thread multiplies
//! its group by the whole matrix, preparing its own activations first (in the
//! form the weight's dtype asks for). Either way every output element is
//! computed by one thread in a fixed order and results do not depend on the
//! thread count. Attention hands out (KV
//! head, run of tokens) items through [`Parallel::for_each_chunk`]
//! (`forward.rs` says why the cut does not change the result).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use gpt_fast_kernels::{ActForm, Acts, Kernels, Matrix, Q8Acts, Role, Q8_BLOCK, Q8_TILE_ROWS};

use crate::threads::{ChunkCounter, DisjointChunks, ThreadPool};

/// The most tokens one thread multiplies at once in prefill (their prepared
/// activations stay in L2).
const MAX_GROUP: usize = 64;

/// Up to this many tokens, a matmul's threads split the weight rows rather
/// than the tokens (see [`Parallel::matmul`]).
pub const ROW_SPLIT_TOKENS: usize = 16;

pub struct Parallel {
    /// Lent: shared with the process's other sessions of this thread count.
    pool: Arc<ThreadPool>,
    /// Claim flags for the disjoint chunks of up to four outputs per operation.
    flags: [Vec<AtomicBool>; 4],
    /// `(tokens, widest input)`: activations prepared for a matmul.
    acts: ActScratch,
    /// `(up to ROW_SPLIT_TOKENS tokens, widest output)`: a few tokens' outputs,
    /// grouped by the threads' row chunks before they go into place.
    staging: Vec<f32>,
}

/// A matmul's activations in the quantized forms ([`ActForm`]), for up to
/// `len` values.
struct ActScratch {
    /// `(len)`
    quants: Vec<i8>,
    /// `(len / 32)` each.
    scales: Vec<f32>,
    sums: Vec<f32>,
}

impl ActScratch {
    fn new(len: usize) -> Self {
        let blocks = len / Q8_BLOCK;
        Self { quants: vec![0; len], scales: vec![0.0; blocks], sums: vec![0.0; blocks] }
    }

    /// Bytes for `len` values.
    fn bytes(len: u64) -> Option<u64> {
        len.checked_add((len / Q8_BLOCK as u64).checked_mul(8)?)
    }
}

fn flags(n: usize) -> Vec<AtomicBool> {
    (0..n).map(|_| AtomicBool::new(false)).collect()
}

impl Parallel {
    /// `max_items`: the most chunks one operation cuts its output into (at
    /// most a batch's tokens × KV heads in attention); `max_acts`: the most
    /// activation values one matmul reads (tokens × its input width);
    /// `max_staged`: the most outputs of one matmul of 2 to
    /// [`ROW_SPLIT_TOKENS`] tokens (tokens × its rows; 0 if it never has
    /// more than one token).
    pub fn new(pool: Arc<ThreadPool>, max_items: usize, max_acts: usize, max_staged: usize) -> Self {
        let max_chunks = max_items.max(4 * pool.n_threads()) + 1;
        let flags = std::array::from_fn(|_| flags(max_chunks));
        Self { pool, flags, acts: ActScratch::new(max_acts), staging: vec![0.0; max_staged] }
    }

    /// Bytes of scratch [`Parallel::new`] allocates for `max_acts` and
    /// `max_staged` (`None` on overflow).
    pub fn scratch_bytes(max_acts: u64, max_staged: u64) -> Option<u64> {
        ActScratch::bytes(max_acts)?.checked_add(max_staged.checked_mul(4)?)
    }

    /// Bytes of scratch held.
    pub fn allocated_bytes(&self) -> usize {
        let a = &self.acts;
        a.quants.len() + 4 * (a.scales.len() + a.sums.len() + self.staging.len())
    }

    pub fn n_threads(&self) -> usize {
        self.pool.n_threads()
    }

    pub fn pool(&self) -> &Arc<ThreadPool> {
        &self.pool
    }

    /// `out[t] = W x[t]` for `n` rows of `x`, tokens of `role` (see
    /// [`Role`]), which are first prepared in the form `w.dtype` multiplies
    /// (q8 blocks, with or without sums, or f32 as they are) into the scratch.
    pub fn matmul(&mut self, k: &Kernels, role: Role, w: &Matrix, x: &[f32], n: usize, out: &mut [f32]) {
        let (rows, cols) = (w.rows, w.cols);
        let nb = cols / Q8_BLOCK;
        let form = w.dtype.act();
        let threads = self.n_threads();
        let ActScratch { quants: xq, scales: xs, sums: xsums } = &mut self.acts;
        // Sums only for the form that reads them: the others see empty slices.
        let sum_len = |len: usize| if form == ActForm::Q8Sums { len } else { 0 };
        if n <= ROW_SPLIT_TOKENS {
            // Few tokens (decode, a batch of sequences' decode steps, a short
            // prompt): the weights are what costs, so each thread takes whole
            // tiles of rows for all the tokens (the kernels pass over a tile
            // once for every token) and the matrix is read once in all.
            let x = &x[..n * cols];
            let (xq, xs, xsums) = (&mut xq[..n * cols], &mut xs[..n * nb], &mut xsums[..sum_len(n * nb)]);
            k.quantize_acts(form, x, xq, xs, xsums);
            let acts = Acts { x, q8: Q8Acts { cols, quants: xq, scales: xs, sums: xsums } };
            let chunk = rows.div_ceil(4 * threads).next_multiple_of(Q8_TILE_ROWS).max(Q8_TILE_ROWS);
            // A thread's rows are strided in `out` for several tokens: they go
            // to a staging area, `[chunk][token][row in chunk]`, then into place.
            let staged = n > 1;
            let target = if staged { &mut self.staging[..n * rows] } else { &mut out[..rows] };
            let outs = DisjointChunks::new(target, chunk * n, &self.flags[0]);
            let counter = ChunkCounter::new(rows.div_ceil(chunk));
            self.pool.run(&|_| {
                while let Some(c) = counter.next() {
                    let o = outs.claim(c);
                    let r0 = c * chunk;
                    let len = o.len() / n;
                    k.matmul_as(role, w, r0..r0 + len, &acts, n, o, len);
                }
            });
            if staged {
                for (c, staged) in self.staging[..n * rows].chunks(chunk * n).enumerate() {
                    let len = staged.len() / n;
                    for (t, from) in staged.chunks_exact(len).enumerate() {
                        out[t * rows + c * chunk..][..len].copy_from_slice(from);
                    }
                }
            }
            return;
        }
        // Groups of tokens, one per thread per round, as few rounds as keep a
        // group within 64 tokens. Each group passes over the whole matrix, so
        // smaller groups only add passes: a 17-token prompt on 2 threads is
        // 9 + 8 tokens, not 8 + 8 + 1. Any cut gives the same results, a
        // group of one token included: every kernel computes a token's
        // outputs the same way whatever the tokens beside it of its role (the
        // `*_batch_invariant` tests in kernels/tests).
        let rounds = n.div_ceil(MAX_GROUP * threads);
        let group = n.div_ceil(rounds * threads);
        let outs = DisjointChunks::new(&mut out[..n * rows], group * rows, &self.flags[0]);
        let quants = DisjointChunks::new(&mut xq[..n * cols], group * cols, &self.flags[1]);
        let scales = DisjointChunks::new(&mut xs[..n * nb], (group * nb).max(1), &self.flags[2]);
        let sums = DisjointChunks::new(&mut xsums[..sum_len(n * nb)], sum_len(group * nb).max(1), &self.flags[3]);
        let counter = ChunkCounter::new(n.div_ceil(group));
        self.pool.run(&|_| {
            while let Some(c) = counter.next() {
                let t0 = c * group;
                let nt = group.min(n - t0);
                let xt = &x[t0 * cols..(t0 + nt) * cols];
                let (q, s) = (quants.claim(c), scales.claim(c));
                let sum: &mut [f32] = if form == ActForm::Q8Sums { sums.claim(c) } else { &mut [] };
                k.quantize_acts(form, xt, q, s, sum);
                let acts = Acts { x: xt, q8: Q8Acts { cols, quants: q, scales: s, sums: sum } };
                k.matmul_as(role, w, 0..rows, &acts, nt, outs.claim(c), rows);
            }
        });
    }

    /// Runs `work(item, out_chunk, scratch)` for items `0..n_items`, where
    /// `out_chunk` is the item's `chunk`-sized piece of `out` and `scratch` is
    /// the calling thread's `scratch_len`-sized piece of `scratch`.
    pub fn for_each_chunk(
        &self,
        n_items: usize,
        out: &mut [f32],
        chunk: usize,
        scratch: &mut [f32],
        scratch_len: usize,
        work: &(dyn Fn(usize, &mut [f32], &mut [f32]) + Sync),
    ) {
        let outs = DisjointChunks::new(&mut out[..n_items * chunk], chunk, &self.flags[0]);
        let scratches =
            DisjointChunks::new(&mut scratch[..self.n_threads() * scratch_len], scratch_len, &self.flags[1]);
        let counter = ChunkCounter::new(n_items);
        self.pool.run(&|thread| {
            let mine = scratches.claim(thread);
            while let Some(i) = counter.next() {
                work(i, outs.claim(i), mine);
            }
        });
    }
}
