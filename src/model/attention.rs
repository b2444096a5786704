//! One layer's attention for a batch of sequences, each token against its own
//! sequence's cache: `att[t][head] = softmax(q·K^T / sqrt(head_dim)) V` over
//! the slots token `t` attends to (causal; within a sliding window, the last
//! `window` positions).
//!
//! Work items are (KV head, run of a sequence's tokens) pairs, one kernel call
//! each with all the query heads of the group, so a KV head's keys and values
//! are read once per item rather than once per query head and token. The
//! latest runs (which attend to the most slots) are handed out first. A
//! kernel's result for a row does not depend on the other rows of its call,
//! so neither cutting a sequence's tokens by thread count nor the other
//! sequences of the batch change a bit of its output. One token writes
//! straight into `att` (its `[kv_head][group][head_dim]` is the layout); more
//! write each item's `[token][group][head_dim]` to `staging`, then copy it
//! into place.
//!
//! A lone decode token (one sequence, one token) has only the KV heads to
//! share out, which leaves threads idle (SmolLM2's 3 heads on 2 threads) and
//! at depth is where the time goes: there each head's slots are cut into the
//! kernels' own chunks of [`SPLIT_SLOTS`], one item each, and the chunks'
//! softmaxes are merged afterwards in slot order with [`merge_partial`], as
//! the kernel merges them within a call. So the cut changes no bit of the
//! result, whatever the thread count.
//!
//! A sliding window is chosen here, not in the kernels: a call's rows attend
//! to a prefix of the keys it is given that grows by one per token, so where
//! a window cuts off old positions each token gets its own call, starting at
//! its window's first slot ([`KvCache::window`]).

use gpt_fast_kernels::{merge_partial, AttnShape, Kernels, SPLIT_SLOTS};

use super::forward::SeqRun;
use super::kv_cache::{KvCache, KvHead};
use super::parallel::Parallel;
use crate::format::HParams;

/// Query rows (tokens × a KV head's query heads) per attention call in
/// prefill: each block of keys and values is read from memory once per call
/// and serves all its rows from cache, and a call's scores and outputs
/// (64 rows × 64 keys, 64 rows × head_dim) stay within L2.
pub(super) const ATTN_ROWS: usize = 64;

/// The attention kernels' per-thread scratch.
pub(super) struct Scratch<'a> {
    /// `(threads, len)`
    pub all: &'a mut [f32],
    pub len: usize,
    /// Most tokens per call (the scratch is sized for that many rows).
    pub tokens: usize,
}

/// One kernel call's tokens: `len` consecutive tokens of sequence `seq` from
/// position `pos`, at index `t0` of the batch.
#[derive(Clone, Copy, Debug)]
pub(super) struct AttnRun {
    seq: usize,
    pos: usize,
    t0: usize,
    len: usize,
}

/// Where one layer's attention runs.
pub(super) struct AttnAt<'a> {
    pub layer: usize,
    /// The batch's sequences, in token order.
    pub seqs: &'a [SeqRun],
    /// The layer's sliding window, if it has one.
    pub window: Option<usize>,
}

/// Where one layer's attention writes: see [`attention`].
pub(super) struct AttnOut<'a> {
    /// Room for one run per token of the batch.
    pub runs: &'a mut Vec<AttnRun>,
    /// `[call][token][group][head_dim]`: calls' outputs before they go to `att`.
    pub staging: &'a mut [f32],
    /// `[chunk][kv_head][group][head_dim + 2]`: a lone token's chunks.
    pub parts: &'a mut [f32],
}

/// See the module's documentation.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention(
    par: &Parallel,
    k: &Kernels,
    h: &HParams,
    caches: &[KvCache],
    at: AttnAt,
    qkv: &[f32],
    scratch: Scratch,
    to: AttnOut,
    att: &mut [f32],
) {
    let AttnAt { layer, seqs, window } = at;
    let AttnOut { runs, staging, parts } = to;
    let (hd, n_heads, n_kv) = (h.head_dim as usize, h.n_heads as usize, h.n_kv_heads as usize);
    let (group, q_dim) = (n_heads / n_kv, n_heads * hd);
    let qkv_rows = q_dim + 2 * n_kv * hd;
    let n: usize = seqs.iter().map(|s| s.len).sum();
    // Only a window that cuts off a position of this batch matters.
    let window = window.filter(|&w| seqs.iter().any(|s| s.pos + s.len > w));
    let call = |head: usize, run: AttnRun, chunk: Option<usize>, scratch: &mut [f32], out: &mut [f32]| {
        let cache = &caches[run.seq];
        // Within a run `filled(pos + t)` is this plus t (a run never wraps).
        let (mut first, mut n_pos) = match window {
            Some(w) => cache.window(run.pos, w),
            None => (0, cache.filled(run.pos)),
        };
        let q = &qkv[run.t0 * qkv_rows + head * group * hd..];
        let (out, stats) = match chunk {
            Some(c) => {
                first += c * SPLIT_SLOTS;
                n_pos = SPLIT_SLOTS.min(n_pos - c * SPLIT_SLOTS);
                out.split_at_mut(group * hd)
            }
            None => (out, <&mut [f32]>::default()),
        };
        let shape = AttnShape { head_dim: hd, group, n_tokens: run.len, n_pos, q_stride: qkv_rows };
        match cache.head(layer, head, first, shape.slots()) {
            KvHead::F16 { keys, values } => (k.attention_f16)(&shape, q, keys, values, scratch, out, stats),
            KvHead::F32 { keys, values } => (k.attention_f32)(&shape, q, keys, values, scratch, out, stats),
        }
    };

    if let [s] = seqs {
        let run = AttnRun { seq: s.seq, pos: s.pos, t0: 0, len: 1 };
        let n_pos = match window {
            Some(w) => caches[s.seq].window(s.pos, w).1,
            None => caches[s.seq].filled(s.pos),
        };
        let chunks = n_pos.div_ceil(SPLIT_SLOTS);
        let piece = group * (hd + 2);
        if s.len == 1 && chunks > 1 && par.n_threads() > 1 && chunks * n_kv * piece <= parts.len() {
            // One token: its KV heads alone would leave threads idle (3 heads
            // on 2 threads), so each head's chunks are items of their own,
            // merged in slot order as the kernel would merge them.
            let parts = &mut parts[..chunks * n_kv * piece];
            par.for_each_chunk(chunks * n_kv, parts, piece, scratch.all, scratch.len, &|i, out, scratch| {
                call(i % n_kv, run, Some(i / n_kv), scratch, out);
            });
            for (row, acc) in att[..q_dim].chunks_exact_mut(hd).enumerate() {
                let (head, g) = (row / group, row % group);
                // Chunk `c`'s output and `[max, sum]` for this row.
                let part = |c: usize| {
                    let p = &parts[(c * n_kv + head) * piece..][..piece];
                    (&p[g * hd..][..hd], &p[group * hd + 2 * g..][..2])
                };
                let (out, stats) = part(0);
                acc.copy_from_slice(out);
                let mut merged = [stats[0], stats[1]];
                for c in 1..chunks {
                    let (out, stats) = part(c);
                    merge_partial(acc, &mut merged, out, stats);
                }
            }
            return;
        }
    }

    // About 4 items per thread (the runs' costs differ), within the scratch.
    let runs_wanted = (4 * par.n_threads()).div_ceil(n_kv);
    let longest = seqs.iter().map(|s| s.len).max().unwrap_or(1);
    let tokens = if window.is_some() { 1 } else { longest.div_ceil(runs_wanted).clamp(1, scratch.tokens) };
    runs.clear();
    let mut t0 = 0;
    for s in seqs {
        for start in (0..s.len).step_by(tokens) {
            runs.push(AttnRun { seq: s.seq, pos: s.pos + start, t0: t0 + start, len: tokens.min(s.len - start) });
        }
        t0 += s.len;
    }
    runs.sort_unstable_by_key(|r| std::cmp::Reverse(r.pos + r.len));
    let runs = &runs[..];
    let chunk = tokens * group * hd;
    let out = if n == 1 { &mut att[..q_dim] } else { &mut staging[..runs.len() * tokens * q_dim] };
    let item = |i: usize| (i % n_kv, runs[i / n_kv]); // (KV head, run)
    par.for_each_chunk(n_kv * runs.len(), out, chunk, scratch.all, scratch.len, &|i, out, scratch| {
        let (head, run) = item(i);
        call(head, run, None, scratch, out);
    });
    if n == 1 {
        return;
    }
    let row = group * hd;
    for i in 0..n_kv * runs.len() {
        let (head, run) = item(i);
        for t in 0..run.len {
            let from = &staging[i * chunk + t * row..][..row];
            att[(run.t0 + t) * q_dim + head * row..][..row].copy_from_slice(from);
        }
    }
}
