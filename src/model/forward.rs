//! The decoder forward pass, shared by GPT-2 and the Llama family: embeddings
//! (+ learned positions) → N blocks of `x += attn(norm(x))`, `x += ffn(norm(x))`
//! → final norm → LM head. What differs between the families is data (`Arch`
//! and the Llama family's [`Variant`](crate::format::Variant): QKV biases,
//! QK-norm, RoPE scaling and partial rotary, sliding windows, post-norms,
//! GeGLU, embedding and query scales).

use gpt_fast_kernels::{AttnShape, Kernels};

use super::kv_cache::{KvCache, KvHead};
use super::parallel::Parallel;
use super::weights::{Linear, Norm, Weights};
use crate::format::{Arch, HParams};

/// Which positions of a batch get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsMode {
    /// Only the last token (generation).
    Last,
    /// Every token (perplexity, tests).
    All,
    /// None (a prefill batch that is not the prompt's last).
    None,
}

/// Scratch for the forward pass, allocated once for batches of up to `batch_cap` tokens.
#[doc(hidden)]
pub struct Forward {
    batch_cap: usize,
    dim: usize,
    /// `(batch_cap, dim)`: the residual stream.
    x: Vec<f32>,
    /// `(batch_cap, dim)`: normalised input of a sub-block.
    xn: Vec<f32>,
    /// `(batch_cap, qkv rows)`
    qkv: Vec<f32>,
    /// `(batch_cap, n_heads head_dim)`
    att: Vec<f32>,
    /// `(batch_cap, dim)`: a sub-block's output before the residual add.
    proj: Vec<f32>,
    /// `(batch_cap, ffn_up rows)`
    up: Vec<f32>,
    /// `(batch_cap, ffn_dim)`
    hidden: Vec<f32>,
    /// `(threads, attention scratch)`: each thread's scratch for the attention kernel.
    attn_scratch: Vec<f32>,
    attn_scratch_len: usize,
    /// Most tokens per attention call.
    attn_tokens: usize,
    /// `(batch_cap + attn_tokens, n_heads head_dim)`: prefill attention calls'
    /// outputs, `[call][token][group][head_dim]`, before they go to `att`.
    attn_staging: Vec<f32>,
    parallel: Parallel,
    /// `[global, sliding][(batch_cap + sinks, rope_dim / 2)]` each: RoPE cos
    /// and sin for the batch's positions, then for the re-rotated sinks, of
    /// the global layers and (if any) the sliding ones (their own base).
    rope_cos: [Vec<f32>; 2],
    rope_sin: [Vec<f32>; 2],
    /// `(head_dim)`: a query or key head being normalised (QK-norm).
    head_tmp: Vec<f32>,
    /// `(batch_cap or 1, vocab)`
    logits: Vec<f32>,
    logits_rows: usize,
}

// Internal (hidden from the docs, so missing_docs does not ask for its items).
#[doc(hidden)]
impl Forward {
    /// `sinks`: the KV cache's attention sinks; `all_logits`: whether batches
    /// may ask for every position's logits.
    pub fn new(h: &HParams, sinks: usize, batch_cap: usize, all_logits: bool, n_threads: usize) -> Self {
        Self::with_pool(h, sinks, batch_cap, all_logits, crate::threads::shared_pool(n_threads))
    }

    /// [`Forward::new`] on a given pool (its thread count).
    pub fn with_pool(
        h: &HParams,
        sinks: usize,
        batch_cap: usize,
        all_logits: bool,
        pool: std::sync::Arc<crate::threads::ThreadPool>,
    ) -> Self {
        let n_threads = pool.n_threads();
        let dim = h.dim as usize;
        let q_dim = h.q_dim() as usize;
        let qkv_rows = q_dim + 2 * h.kv_dim() as usize;
        let ffn = h.ffn_dim as usize;
        let up_rows = if h.arch.gated_ffn() { 2 * ffn } else { ffn };
        let widest = dim.max(q_dim).max(ffn);
        let half = h.rope_dim() as usize / 2;
        let rope_len = if h.arch == Arch::Llama { (batch_cap + sinks) * half } else { 0 };
        let sliding_len = if h.has_sliding() { rope_len } else { 0 };
        let logits_rows = if all_logits { batch_cap } else { 1 };
        let group = (h.n_heads / h.n_kv_heads) as usize;
        let attn_tokens = (ATTN_ROWS / group).max(1);
        let attn_scratch_len = AttnShape::scratch_len(h.head_dim as usize, attn_tokens * group);
        let staging = if batch_cap > 1 { (batch_cap + attn_tokens) * q_dim } else { 0 };
        Self {
            batch_cap,
            dim,
            x: vec![0.0; batch_cap * dim],
            xn: vec![0.0; batch_cap * dim],
            qkv: vec![0.0; batch_cap * qkv_rows],
            att: vec![0.0; batch_cap * q_dim],
            proj: vec![0.0; batch_cap * dim],
            up: vec![0.0; batch_cap * up_rows],
            hidden: vec![0.0; batch_cap * ffn],
            attn_scratch: vec![0.0; n_threads.max(1) * attn_scratch_len],
            attn_scratch_len,
            attn_tokens,
            attn_staging: vec![0.0; staging],
            parallel: Parallel::new(pool, batch_cap * h.n_kv_heads as usize, batch_cap * widest),
            rope_cos: [vec![0.0; rope_len], vec![0.0; sliding_len]],
            rope_sin: [vec![0.0; rope_len], vec![0.0; sliding_len]],
            head_tmp: vec![0.0; h.head_dim as usize],
            logits: vec![0.0; logits_rows * h.vocab_size as usize],
            logits_rows,
        }
    }

    /// Bytes of scratch [`Forward::new`] allocates for these sizes (checked:
    /// `None` on overflow), so a session can refuse sizes before asking for them.
    pub fn scratch_bytes(
        h: &HParams,
        sinks: usize,
        batch_cap: usize,
        all_logits: bool,
        n_threads: usize,
    ) -> Option<u64> {
        let (batch, dim, ffn) = (batch_cap as u64, u64::from(h.dim), u64::from(h.ffn_dim));
        let q_dim = h.q_dim();
        let qkv_rows = q_dim.checked_add(h.kv_dim().checked_mul(2)?)?;
        let up_rows = if h.arch.gated_ffn() { 2 * ffn } else { ffn };
        let widest = dim.max(q_dim).max(ffn);
        // f32 rows per token: x, xn, proj, qkv, att, up, hidden.
        let f32_per_token =
            (3 * dim).checked_add(qkv_rows)?.checked_add(q_dim)?.checked_add(up_rows)?.checked_add(ffn)?;
        let mut total = batch.checked_mul(f32_per_token.checked_mul(4)?)?;
        total = total.checked_add(Parallel::scratch_bytes(batch.checked_mul(widest)?)?)?;
        let group = u64::from(h.n_heads / h.n_kv_heads);
        let attn_tokens = (ATTN_ROWS as u64 / group).max(1);
        let attn_scratch = AttnShape::scratch_len(h.head_dim as usize, (attn_tokens * group) as usize) as u64;
        total = total.checked_add((n_threads.max(1) as u64).checked_mul(attn_scratch)?.checked_mul(4)?)?;
        if batch_cap > 1 {
            total = total.checked_add(batch.checked_add(attn_tokens)?.checked_mul(q_dim)?.checked_mul(4)?)?;
        }
        if h.arch == Arch::Llama {
            // cos and sin, for the global layers and (if any) the sliding ones.
            let tables = if h.has_sliding() { 16 } else { 8 };
            total = total.checked_add(
                batch.checked_add(sinks as u64)?.checked_mul(u64::from(h.rope_dim()) / 2)?.checked_mul(tables)?,
            )?;
        }
        total = total.checked_add(u64::from(h.head_dim) * 4)?; // head_tmp
        let logits_rows = if all_logits { batch } else { 1 };
        total.checked_add(logits_rows.checked_mul(u64::from(h.vocab_size))?.checked_mul(4)?)
    }

    /// Bytes of the scratch buffers held (what [`Forward::scratch_bytes`] predicts).
    pub fn allocated_bytes(&self) -> usize {
        let f32s = [
            &self.x,
            &self.xn,
            &self.qkv,
            &self.att,
            &self.proj,
            &self.up,
            &self.hidden,
            &self.attn_scratch,
            &self.attn_staging,
            &self.rope_cos[0],
            &self.rope_cos[1],
            &self.rope_sin[0],
            &self.rope_sin[1],
            &self.head_tmp,
            &self.logits,
        ];
        f32s.iter().map(|v| v.len() * 4).sum::<usize>() + self.parallel.allocated_bytes()
    }

    pub fn batch_cap(&self) -> usize {
        self.batch_cap
    }

    /// Runs `tokens` at positions `pos..`, filling the cache; returns the logits
    /// (`(1 or tokens.len(), vocab)`). `tokens.len()` must be at most
    /// `batch_cap` (and at most 1 row of logits unless built with `all_logits`),
    /// and `pos + tokens.len()` at most the cache capacity.
    pub fn run(
        &mut self,
        w: &Weights,
        h: &HParams,
        k: &Kernels,
        cache: &mut KvCache,
        tokens: &[u32],
        pos: usize,
        mode: LogitsMode,
    ) -> &[f32] {
        let n = tokens.len();
        assert!(n >= 1 && n <= self.batch_cap, "batch of {n} tokens (cap {})", self.batch_cap);
        // Past the wrap, a later token of a batch would overwrite a slot an
        // earlier one attends to: the caller runs those one at a time.
        assert!(n == 1 || pos + n <= cache.capacity(), "a batch may not wrap the cache");
        let dim = self.dim;
        let (hd, n_heads, n_kv) = (h.head_dim as usize, h.n_heads as usize, h.n_kv_heads as usize);
        let (q_dim, kv_dim) = (n_heads * hd, n_kv * hd);
        let qkv_rows = q_dim + 2 * kv_dim;
        let ffn = h.ffn_dim as usize;
        let rope_dim = h.rope_dim() as usize;
        let half = rope_dim / 2;
        let llama = h.arch == Arch::Llama;
        let wrapped = pos + n > cache.capacity();
        // The kernels divide q·k by sqrt(head_dim); another scale goes into q.
        let q_mul = (h.variant.attn_scale != 0.0).then(|| h.attn_scale() * (hd as f32).sqrt());
        if llama {
            let kinds = if h.has_sliding() { 2 } else { 1 };
            for (kind, (cos, sin)) in self.rope_cos.iter_mut().zip(&mut self.rope_sin).take(kinds).enumerate() {
                let rope = Rope::new(h, kind == 1, w.rope_freqs);
                for t in 0..n {
                    rope.angles(pos + t, &mut cos[t * half..][..half], &mut sin[t * half..][..half]);
                }
                if wrapped {
                    // The sinks sit just before the oldest ring entry.
                    let first = pos + 1 - cache.capacity();
                    for sink in 0..cache.sinks() {
                        let at = (n + sink) * half;
                        rope.angles(first + sink, &mut cos[at..][..half], &mut sin[at..][..half]);
                    }
                }
            }
        }

        let embed_scale = h.embed_scale();
        for (t, &tok) in tokens.iter().enumerate() {
            let xt = &mut self.x[t * dim..][..dim];
            w.token_embd.row_to_f32(tok as usize, xt);
            if embed_scale != 1.0 {
                xt.iter_mut().for_each(|v| *v *= embed_scale);
            }
            if let Some(pe) = w.position_embd {
                (k.add)(xt, &pe[(pos + t) * dim..][..dim]);
            }
        }

        for (layer, lw) in w.layers.iter().enumerate() {
            let sliding = h.is_sliding(layer);
            let (cos, sin) = (&self.rope_cos[sliding as usize], &self.rope_sin[sliding as usize]);
            // Attention: x += W_o · attention(rope(W_qkv · norm(x)))
            norm(k, h, &lw.attn_norm, &self.x, &mut self.xn, n, dim);
            lw.attn_qkv.forward(&mut self.parallel, k, &self.xn, n, &mut self.qkv);
            for t in 0..n {
                let row = &mut self.qkv[t * qkv_rows..][..qkv_rows];
                if llama {
                    if let (Some(qn), Some(kn)) = (lw.attn_q_norm, lw.attn_k_norm) {
                        let (q, kv) = row.split_at_mut(q_dim);
                        head_norms(k, h, &mut q[..], qn, &mut self.head_tmp);
                        head_norms(k, h, &mut kv[..kv_dim], kn, &mut self.head_tmp);
                    }
                    if pos + t < cache.sinks() {
                        cache.store_sink_raw(layer, pos + t, &row[q_dim..q_dim + kv_dim]);
                    }
                    let (cos, sin) = (&cos[t * half..][..half], &sin[t * half..][..half]);
                    rotate(k, &mut row[..q_dim + kv_dim], hd, rope_dim, cos, sin);
                    if let Some(m) = q_mul {
                        row[..q_dim].iter_mut().for_each(|v| *v *= m);
                    }
                }
                cache.store(layer, pos + t, &row[q_dim..q_dim + kv_dim], &row[q_dim + kv_dim..]);
            }
            if llama && wrapped {
                cache.refresh_sinks(layer, |sink, key| {
                    let at = (n + sink) * half;
                    rotate(k, key, hd, rope_dim, &cos[at..][..half], &sin[at..][..half]);
                });
            }
            let scratch = Scratch { all: &mut self.attn_scratch, len: self.attn_scratch_len, tokens: self.attn_tokens };
            let window = sliding.then_some(h.variant.sliding_window as usize);
            let at = AttnAt { layer, pos, n, window };
            attention(&self.parallel, k, h, cache, at, &self.qkv, scratch, &mut self.attn_staging, &mut self.att);
            lw.attn_output.forward(&mut self.parallel, k, &self.att, n, &mut self.proj);
            residual(k, h, lw.attn_post_norm.as_ref(), &mut self.x, &self.proj, &mut self.xn, n, dim);

            // Feed-forward: x += W_down · act(W_up · norm(x))
            norm(k, h, &lw.ffn_norm, &self.x, &mut self.xn, n, dim);
            lw.ffn_up.forward(&mut self.parallel, k, &self.xn, n, &mut self.up);
            if h.arch.gated_ffn() {
                for t in 0..n {
                    let (gate, up) = self.up[t * 2 * ffn..][..2 * ffn].split_at(ffn);
                    let out = &mut self.hidden[t * ffn..][..ffn];
                    if h.variant.gelu_gate {
                        out.copy_from_slice(gate);
                        (k.gelu_tanh)(out);
                        out.iter_mut().zip(up).for_each(|(o, u)| *o *= u);
                    } else {
                        (k.swiglu)(gate, up, out);
                    }
                }
            } else {
                self.hidden[..n * ffn].copy_from_slice(&self.up[..n * ffn]);
                (k.gelu_tanh)(&mut self.hidden[..n * ffn]);
            }
            lw.ffn_down.forward(&mut self.parallel, k, &self.hidden, n, &mut self.proj);
            residual(k, h, lw.ffn_post_norm.as_ref(), &mut self.x, &self.proj, &mut self.xn, n, dim);
        }

        // Final norm and LM head, for the rows that need logits.
        let first = match mode {
            LogitsMode::Last => n - 1,
            LogitsMode::All => 0,
            LogitsMode::None => return &[],
        };
        let rows = n - first;
        assert!(rows <= self.logits_rows, "all-logits batch on a last-only state");
        norm(k, h, &w.output_norm, &self.x[first * dim..], &mut self.xn, rows, dim);
        let head = Linear { w: w.lm_head, bias: None };
        head.forward(&mut self.parallel, k, &self.xn, rows, &mut self.logits);
        &self.logits[..rows * h.vocab_size as usize]
    }
}

/// Query rows (tokens × a KV head's query heads) per attention call in
/// prefill: each block of keys and values is read from memory once per call
/// and serves all its rows from cache, and a call's scores and outputs
/// (64 rows × 64 keys, 64 rows × head_dim) stay within L2.
const ATTN_ROWS: usize = 64;

/// The attention kernels' per-thread scratch.
struct Scratch<'a> {
    /// `(threads, len)`
    all: &'a mut [f32],
    len: usize,
    /// Most tokens per call (the scratch is sized for that many rows).
    tokens: usize,
}

/// Where one layer's attention runs: the batch's `n` tokens at positions
/// `pos..`, and the layer's sliding window if it has one.
struct AttnAt {
    layer: usize,
    pos: usize,
    n: usize,
    window: Option<usize>,
}

/// One layer's attention for the batch's `n` tokens at positions `pos..`:
/// `att[t][head] = softmax(q·K^T / sqrt(head_dim)) V` over the slots token `t`
/// attends to (causal; within a sliding window, the last `window` positions).
///
/// Work items are (KV head, run of tokens) pairs, one kernel call each with
/// all the query heads of the group, so a KV head's keys and values are read
/// once per item rather than once per query head and token. The latest runs
/// (which attend to the most slots) are handed out first. A kernel's result
/// for a row does not depend on the other rows of its call, so cutting the
/// batch by thread count changes no bit of the output. Decode writes straight
/// into `att` (one token's `[kv_head][group][head_dim]` is its layout);
/// prefill writes each item's `[token][group][head_dim]` to `staging`, then
/// copies it into place.
///
/// A sliding window is chosen here, not in the kernels: a call's rows attend
/// to a prefix of the keys it is given that grows by one per token, so where
/// a window cuts off old positions each token gets its own call, starting at
/// its window's first slot ([`KvCache::window`]).
#[allow(clippy::too_many_arguments)]
fn attention(
    par: &Parallel,
    k: &Kernels,
    h: &HParams,
    cache: &KvCache,
    at: AttnAt,
    qkv: &[f32],
    scratch: Scratch,
    staging: &mut [f32],
    att: &mut [f32],
) {
    let AttnAt { layer, pos, n, window } = at;
    let (hd, n_heads, n_kv) = (h.head_dim as usize, h.n_heads as usize, h.n_kv_heads as usize);
    let (group, q_dim) = (n_heads / n_kv, n_heads * hd);
    let qkv_rows = q_dim + 2 * n_kv * hd;
    // Only a window that cuts off a position of this batch matters.
    let window = window.filter(|&w| pos + n > w);
    // About 4 items per thread (the runs' costs differ), within the scratch.
    let runs_wanted = (4 * par.n_threads()).div_ceil(n_kv);
    let tokens = if window.is_some() { 1 } else { n.div_ceil(runs_wanted).clamp(1, scratch.tokens) };
    let n_runs = n.div_ceil(tokens);
    let chunk = tokens * group * hd;
    let out = if n == 1 { &mut att[..q_dim] } else { &mut staging[..n_runs * tokens * q_dim] };
    let item = |i: usize| (i % n_kv, n_runs - 1 - i / n_kv); // (KV head, run)
    par.for_each_chunk(n_kv * n_runs, out, chunk, scratch.all, scratch.len, &|i, out, scratch| {
        let (head, run) = item(i);
        let t0 = run * tokens;
        // Within a batch `filled(pos + t0 + t)` is this plus t (a batch never wraps).
        let (first, n_pos) = match window {
            Some(w) => cache.window(pos + t0, w),
            None => (0, cache.filled(pos + t0)),
        };
        let shape = AttnShape { head_dim: hd, group, n_tokens: tokens.min(n - t0), n_pos, q_stride: qkv_rows };
        let q = &qkv[t0 * qkv_rows + head * group * hd..];
        match cache.head(layer, head, first, shape.slots()) {
            KvHead::F16 { keys, values } => (k.attention_f16)(&shape, q, keys, values, scratch, out),
            KvHead::F32 { keys, values } => (k.attention_f32)(&shape, q, keys, values, scratch, out),
        }
    });
    if n == 1 {
        return;
    }
    let row = group * hd;
    for i in 0..n_kv * n_runs {
        let (head, run) = item(i);
        let t0 = run * tokens;
        for t in 0..tokens.min(n - t0) {
            let from = &staging[i * chunk + t * row..][..row];
            att[(t0 + t) * q_dim + head * row..][..row].copy_from_slice(from);
        }
    }
}

/// `x += post_norm(proj)` (or `x += proj` without a post-norm) for `n` rows;
/// `tmp` is `(n, dim)` scratch.
#[allow(clippy::too_many_arguments)]
fn residual(
    k: &Kernels,
    h: &HParams,
    post_norm: Option<&Norm>,
    x: &mut [f32],
    proj: &[f32],
    tmp: &mut [f32],
    n: usize,
    dim: usize,
) {
    match post_norm {
        Some(p) => {
            norm(k, h, p, proj, tmp, n, dim);
            (k.add)(&mut x[..n * dim], &tmp[..n * dim]);
        }
        None => (k.add)(&mut x[..n * dim], &proj[..n * dim]),
    }
}

/// RMSNorm of every `head_dim` head of `x` in place, one weight for all (QK-norm).
fn head_norms(k: &Kernels, h: &HParams, x: &mut [f32], weight: &[f32], tmp: &mut [f32]) {
    for head in x.chunks_exact_mut(h.head_dim as usize) {
        tmp.copy_from_slice(head);
        (k.rmsnorm)(tmp, weight, h.norm_eps, head);
    }
}

/// RoPE of every `head_dim` head of `x`: all of each head, or its first
/// `rope_dim` dimensions (partial rotary) with the rest left as they are.
fn rotate(k: &Kernels, x: &mut [f32], head_dim: usize, rope_dim: usize, cos: &[f32], sin: &[f32]) {
    if rope_dim == head_dim {
        (k.rope)(x, head_dim, cos, sin);
    } else {
        for head in x.chunks_exact_mut(head_dim) {
            (k.rope)(&mut head[..rope_dim], rope_dim, cos, sin);
        }
    }
}

fn norm(k: &Kernels, h: &HParams, n_w: &Norm, x: &[f32], out: &mut [f32], n: usize, dim: usize) {
    for t in 0..n {
        let (xt, ot) = (&x[t * dim..][..dim], &mut out[t * dim..][..dim]);
        match n_w.bias {
            Some(bias) => (k.layernorm)(xt, n_w.weight, bias, h.norm_eps, ot),
            None => (k.rmsnorm)(xt, n_w.weight, h.norm_eps, ot),
        }
    }
}

/// The RoPE frequencies of one kind of layer (global or sliding).
struct Rope<'a> {
    theta: f64,
    rope_dim: f64,
    /// Divisors of the frequencies (RoPE scaling; global layers only).
    divisors: Option<&'a [f32]>,
}

impl<'a> Rope<'a> {
    fn new(h: &HParams, sliding: bool, rope_freqs: Option<&'a [f32]>) -> Self {
        let theta = f64::from(h.rope_theta_of(sliding));
        Self { theta, rope_dim: f64::from(h.rope_dim()), divisors: rope_freqs.filter(|_| !sliding) }
    }

    /// Angles of position `pos`: `cos/sin(pos × theta^(-2i / rope_dim) / divisor_i)`,
    /// computed in f64 (a position × frequency product loses precision in f32).
    fn angles(&self, pos: usize, cos: &mut [f32], sin: &mut [f32]) {
        for (i, (c, s)) in cos.iter_mut().zip(sin.iter_mut()).enumerate() {
            let mut freq = self.theta.powf(-((2 * i) as f64) / self.rope_dim);
            if let Some(d) = self.divisors {
                freq /= f64::from(d[i]);
            }
            let (sn, cs) = (pos as f64 * freq).sin_cos();
            *c = cs as f32;
            *s = sn as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_bytes_predicts_what_new_allocates() {
        for name in ["test-llama", "test-gpt2", "smollm2-135m"] {
            let h = crate::synthetic::config(name).unwrap();
            for (batch, all_logits, threads) in [(1, false, 1), (16, true, 3), (128, false, 2)] {
                let f = Forward::new(&h, 4, batch, all_logits, threads);
                let predicted = Forward::scratch_bytes(&h, 4, batch, all_logits, threads);
                assert_eq!(predicted, Some(f.allocated_bytes() as u64), "{name} batch {batch}");
            }
        }
    }
}
