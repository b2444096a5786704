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
//! A sliding window is chosen here, not in the kernels: a call's rows attend
//! to a prefix of the keys it is given that grows by one per token, so where
//! a window cuts off old positions each token gets its own call, starting at
//! its window's first slot ([`KvCache::window`]).

use gpt_fast_kernels::{AttnShape, Kernels};

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

/// See the module's documentation. `runs` is scratch with room for one run
/// per token of the batch.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention(
    par: &Parallel,
    k: &Kernels,
    h: &HParams,
    caches: &[KvCache],
    at: AttnAt,
    qkv: &[f32],
    scratch: Scratch,
    runs: &mut Vec<AttnRun>,
    staging: &mut [f32],
    att: &mut [f32],
) {
    let AttnAt { layer, seqs, window } = at;
    let (hd, n_heads, n_kv) = (h.head_dim as usize, h.n_heads as usize, h.n_kv_heads as usize);
    let (group, q_dim) = (n_heads / n_kv, n_heads * hd);
    let qkv_rows = q_dim + 2 * n_kv * hd;
    let n: usize = seqs.iter().map(|s| s.len).sum();
    // Only a window that cuts off a position of this batch matters.
    let window = window.filter(|&w| seqs.iter().any(|s| s.pos + s.len > w));
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
        let cache = &caches[run.seq];
        // Within a run `filled(pos + t)` is this plus t (a run never wraps).
        let (first, n_pos) = match window {
            Some(w) => cache.window(run.pos, w),
            None => (0, cache.filled(run.pos)),
        };
        let shape = AttnShape { head_dim: hd, group, n_tokens: run.len, n_pos, q_stride: qkv_rows };
        let q = &qkv[run.t0 * qkv_rows + head * group * hd..];
        match cache.head(layer, head, first, shape.slots()) {
            KvHead::F16 { keys, values } => (k.attention_f16)(&shape, q, keys, values, scratch, out),
            KvHead::F32 { keys, values } => (k.attention_f32)(&shape, q, keys, values, scratch, out),
        }
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
