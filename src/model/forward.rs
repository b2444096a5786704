//! The decoder forward pass, shared by GPT-2 and the Llama family: embeddings
//! (+ learned positions) → N blocks of `x += attn(norm(x))`, `x += ffn(norm(x))`
//! → final norm → LM head. What differs between the families is data (`Arch`
//! and the Llama family's [`Variant`](crate::format::Variant): QKV biases,
//! QK-norm, RoPE scaling and partial rotary, sliding windows, post-norms,
//! GeGLU, embedding and query scales).

use gpt_fast_kernels::{AttnShape, Kernels, Role};

use super::attention::{attention, AttnAt, AttnRun, Scratch, ATTN_ROWS};
use super::kv_cache::KvCache;
use super::parallel::{Parallel, ROW_SPLIT_TOKENS};
use super::weights::{Linear, Norm, Weights};
use crate::format::{Arch, HParams};

/// Which positions of a sequence's tokens get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsMode {
    /// Only the last token (generation).
    Last,
    /// Every token (perplexity, tests).
    All,
    /// None (a prefill batch that is not the prompt's last).
    None,
}

/// One sequence's part of a batch: its next `len` tokens (the batch's token
/// list holds each sequence's tokens in turn), at positions `pos..` of cache
/// `seq`, which of them get logits, and their role. A sequence appears at
/// most once per batch.
#[derive(Clone, Copy, Debug)]
pub struct SeqRun {
    /// Index of the sequence's cache.
    pub seq: usize,
    /// Position of the first token.
    pub pos: usize,
    /// Tokens, at least 1.
    pub len: usize,
    /// Which of them get logits.
    pub logits: LogitsMode,
    /// Prompt tokens ([`Role::Prefill`], however few) or a generated token
    /// fed back ([`Role::Decode`]): the float matmuls sum each in its role's
    /// order, so a token's bits depend on its role and never on the batch.
    pub role: Role,
}

/// Scratch for the forward pass, allocated once for batches of up to
/// `batch_cap` tokens from up to `max_seqs` sequences.
#[doc(hidden)]
pub struct Forward {
    batch_cap: usize,
    max_seqs: usize,
    sinks: usize,
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
    /// `(batch_cap + max_seqs attn_tokens, n_heads head_dim)`: attention
    /// calls' outputs, `[call][token][group][head_dim]`, before they go to `att`.
    attn_staging: Vec<f32>,
    /// `(batch_cap)`: the attention calls of a layer.
    attn_runs: Vec<AttnRun>,
    parallel: Parallel,
    /// `[global, sliding][(batch_cap + max_seqs sinks, rope_dim / 2)]` each:
    /// RoPE cos and sin for the batch's positions, then for each sequence's
    /// re-rotated sinks, of the global layers and (if any) the sliding ones
    /// (their own base).
    rope_cos: [Vec<f32>; 2],
    rope_sin: [Vec<f32>; 2],
    /// `(head_dim)`: a query or key head being normalised (QK-norm).
    head_tmp: Vec<f32>,
    /// `(logits_rows, vocab)`
    logits: Vec<f32>,
    logits_rows: usize,
}

/// What a [`Forward`]'s buffers are sized for.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct ForwardSize {
    /// The KV caches' attention sinks.
    pub sinks: usize,
    /// The most tokens of a batch.
    pub batch_cap: usize,
    /// The most sequences of a batch.
    pub max_seqs: usize,
    /// Whether batches may ask for every position's logits.
    pub all_logits: bool,
}

/// The lengths of [`Forward`]'s buffers, in elements, computed with checked
/// math so that sizes can be refused before anything is allocated.
struct Lengths {
    x: u64,
    qkv: u64,
    att: u64,
    up: u64,
    hidden: u64,
    attn_scratch: u64,
    attn_scratch_len: u64,
    attn_tokens: u64,
    attn_staging: u64,
    attn_runs: u64,
    /// Activation values and staged outputs of [`Parallel`].
    acts: u64,
    staged: u64,
    rope: u64,
    sliding_rope: u64,
    logits_rows: u64,
    logits: u64,
}

impl Lengths {
    fn of(h: &HParams, size: ForwardSize, n_threads: usize) -> Option<Self> {
        let ForwardSize { sinks, batch_cap, max_seqs, all_logits } = size;
        let (batch, seqs, dim, ffn) =
            (batch_cap as u64, max_seqs.max(1) as u64, u64::from(h.dim), u64::from(h.ffn_dim));
        let q_dim = h.q_dim();
        let qkv_rows = q_dim.checked_add(h.kv_dim().checked_mul(2)?)?;
        let up_rows = if h.arch.gated_ffn() { 2 * ffn } else { ffn };
        let widest = dim.max(q_dim).max(ffn);
        let group = u64::from(h.n_heads / h.n_kv_heads);
        let attn_tokens = (ATTN_ROWS as u64 / group).max(1);
        let attn_scratch_len = AttnShape::scratch_len(h.head_dim as usize, (attn_tokens * group) as usize) as u64;
        let half = u64::from(h.rope_dim()) / 2;
        let rope = if h.arch == Arch::Llama {
            batch.checked_add(seqs.checked_mul(sinks as u64)?)?.checked_mul(half)?
        } else {
            0
        };
        let logits_rows = if all_logits { batch.max(seqs) } else { seqs };
        let vocab = u64::from(h.vocab_size);
        // A few tokens' matmul outputs are staged (see Parallel::matmul): the
        // widest layer's, and the LM head's when it has more than one row.
        let few = batch.min(ROW_SPLIT_TOKENS as u64);
        let staged = if batch > 1 { few.checked_mul(qkv_rows.max(up_rows).max(dim))? } else { 0 };
        let head_staged =
            if logits_rows > 1 { logits_rows.min(ROW_SPLIT_TOKENS as u64).checked_mul(vocab)? } else { 0 };
        Some(Self {
            x: batch.checked_mul(dim)?,
            qkv: batch.checked_mul(qkv_rows)?,
            att: batch.checked_mul(q_dim)?,
            up: batch.checked_mul(up_rows)?,
            hidden: batch.checked_mul(ffn)?,
            attn_scratch: (n_threads.max(1) as u64).checked_mul(attn_scratch_len)?,
            attn_scratch_len,
            attn_tokens,
            attn_staging: if batch > 1 {
                batch.checked_add(seqs.checked_mul(attn_tokens)?)?.checked_mul(q_dim)?
            } else {
                0
            },
            attn_runs: batch,
            acts: batch.checked_mul(widest)?,
            staged: staged.max(head_staged),
            rope,
            sliding_rope: if h.has_sliding() { rope } else { 0 },
            logits_rows,
            logits: logits_rows.checked_mul(vocab)?,
        })
    }

    /// Bytes of every buffer.
    fn bytes(&self, h: &HParams) -> Option<u64> {
        // x, xn and proj are `x` long each; cos and sin for both kinds of layer.
        let f32s = [
            3 * self.x,
            self.qkv,
            self.att,
            self.up,
            self.hidden,
            self.attn_scratch,
            self.attn_staging,
            2 * self.rope,
            2 * self.sliding_rope,
            u64::from(h.head_dim),
            self.logits,
        ];
        let mut total = 0u64;
        for len in f32s {
            total = total.checked_add(len.checked_mul(4)?)?;
        }
        total = total.checked_add(self.attn_runs.checked_mul(std::mem::size_of::<AttnRun>() as u64)?)?;
        total.checked_add(Parallel::scratch_bytes(self.acts, self.staged)?)
    }
}

// Internal (hidden from the docs, so missing_docs does not ask for its items).
#[doc(hidden)]
impl Forward {
    /// A forward pass for batches of `size`, on the process's shared pool of
    /// `n_threads`.
    pub fn new(h: &HParams, size: ForwardSize, n_threads: usize) -> Self {
        Self::with_pool(h, size, crate::threads::shared_pool(n_threads))
    }

    /// [`Forward::new`] on a given pool (its thread count).
    pub fn with_pool(h: &HParams, size: ForwardSize, pool: std::sync::Arc<crate::threads::ThreadPool>) -> Self {
        let l = Lengths::of(h, size, pool.n_threads()).expect("scratch sizes overflow");
        let ForwardSize { sinks, batch_cap, max_seqs, .. } = size;
        let len = |n: u64| usize::try_from(n).expect("scratch sizes overflow");
        let f32s = |n: u64| vec![0f32; len(n)];
        Self {
            batch_cap,
            max_seqs: max_seqs.max(1),
            sinks,
            dim: h.dim as usize,
            x: f32s(l.x),
            xn: f32s(l.x),
            qkv: f32s(l.qkv),
            att: f32s(l.att),
            proj: f32s(l.x),
            up: f32s(l.up),
            hidden: f32s(l.hidden),
            attn_scratch: f32s(l.attn_scratch),
            attn_scratch_len: len(l.attn_scratch_len),
            attn_tokens: len(l.attn_tokens),
            attn_staging: f32s(l.attn_staging),
            attn_runs: Vec::with_capacity(len(l.attn_runs)),
            parallel: Parallel::new(pool, batch_cap * h.n_kv_heads as usize, len(l.acts), len(l.staged)),
            rope_cos: [f32s(l.rope), f32s(l.sliding_rope)],
            rope_sin: [f32s(l.rope), f32s(l.sliding_rope)],
            head_tmp: f32s(u64::from(h.head_dim)),
            logits: f32s(l.logits),
            logits_rows: len(l.logits_rows),
        }
    }

    /// Bytes of scratch [`Forward::new`] allocates for these sizes (checked:
    /// `None` on overflow), so a session can refuse sizes before asking for them.
    pub fn scratch_bytes(h: &HParams, size: ForwardSize, n_threads: usize) -> Option<u64> {
        Lengths::of(h, size, n_threads)?.bytes(h)
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
        f32s.iter().map(|v| v.len() * 4).sum::<usize>()
            + self.attn_runs.capacity() * std::mem::size_of::<AttnRun>()
            + self.parallel.allocated_bytes()
    }

    /// The thread pool the passes run on.
    pub fn pool(&self) -> &std::sync::Arc<crate::threads::ThreadPool> {
        self.parallel.pool()
    }

    pub fn batch_cap(&self) -> usize {
        self.batch_cap
    }

    /// Runs one sequence's `tokens` of `role` at positions `pos..` of `cache`
    /// (the batch of one sequence: see [`Forward::run_seqs`]).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &mut self,
        w: &Weights,
        h: &HParams,
        k: &Kernels,
        cache: &mut KvCache,
        tokens: &[u32],
        pos: usize,
        mode: LogitsMode,
        role: Role,
    ) -> &[f32] {
        let seq = [SeqRun { seq: 0, pos, len: tokens.len(), logits: mode, role }];
        self.run_seqs(w, h, k, std::slice::from_mut(cache), tokens, &seq)
    }

    /// Runs a batch of sequences in one pass over the weights: `tokens`
    /// holds each of `seqs`'s tokens in turn, sequence `s` at its positions
    /// of `caches[s.seq]`, which it fills; each token attends to its own
    /// sequence only. Returns the logits the sequences ask for, in order
    /// (`(rows, vocab)`; the caller may change them in place, as a sampler's
    /// penalties do, rather than copy them). A token's results do not depend
    /// on the rest of the batch (bit for bit: the kernels' outputs do not
    /// depend on the call they were computed in, and where a weight's sum
    /// order depends on the tokens' [`Role`], each role's tokens are
    /// multiplied in calls of their own).
    ///
    /// At most `batch_cap` tokens, `max_seqs` sequences and the logits rows
    /// the state was made for; a sequence's tokens may not wrap its cache
    /// (past the wrap, a later token would overwrite a slot an earlier one
    /// attends to: such a sequence runs one token at a time).
    pub fn run_seqs(
        &mut self,
        w: &Weights,
        h: &HParams,
        k: &Kernels,
        caches: &mut [KvCache],
        tokens: &[u32],
        seqs: &[SeqRun],
    ) -> &mut [f32] {
        let n = tokens.len();
        assert!(n >= 1 && n <= self.batch_cap, "batch of {n} tokens (cap {})", self.batch_cap);
        assert!(seqs.len() <= self.max_seqs, "batch of {} sequences (cap {})", seqs.len(), self.max_seqs);
        assert_eq!(seqs.iter().map(|s| s.len).sum::<usize>(), n, "the sequences' tokens are the batch's");
        for s in seqs {
            assert!(s.len >= 1, "a sequence without tokens");
            assert!(s.len == 1 || s.pos + s.len <= caches[s.seq].capacity(), "a batch may not wrap the cache");
        }
        let dim = self.dim;
        let (hd, n_heads, n_kv) = (h.head_dim as usize, h.n_heads as usize, h.n_kv_heads as usize);
        let (q_dim, kv_dim) = (n_heads * hd, n_kv * hd);
        let qkv_rows = q_dim + 2 * kv_dim;
        let ffn = h.ffn_dim as usize;
        let rope_dim = h.rope_dim() as usize;
        let half = rope_dim / 2;
        let llama = h.arch == Arch::Llama;
        let wrapped = |s: &SeqRun, caches: &[KvCache]| s.pos + s.len > caches[s.seq].capacity();
        // Where sequence `i`'s re-rotated sinks' angles are (after the tokens').
        let sinks_at = |i: usize, sink: usize| (n + i * self.sinks + sink) * half;
        // The kernels divide q·k by sqrt(head_dim); another scale goes into q.
        let q_mul = (h.variant.attn_scale != 0.0).then(|| h.attn_scale() * (hd as f32).sqrt());
        if llama {
            let kinds = if h.has_sliding() { 2 } else { 1 };
            for (kind, (cos, sin)) in self.rope_cos.iter_mut().zip(&mut self.rope_sin).take(kinds).enumerate() {
                let rope = Rope::new(h, kind == 1, w.rope_freqs);
                let mut t = 0;
                for (i, s) in seqs.iter().enumerate() {
                    for p in s.pos..s.pos + s.len {
                        rope.angles(p, &mut cos[t * half..][..half], &mut sin[t * half..][..half]);
                        t += 1;
                    }
                    if wrapped(s, caches) {
                        // The sinks sit just before the oldest ring entry.
                        let cache = &caches[s.seq];
                        let first = s.pos + 1 - cache.capacity();
                        for sink in 0..cache.sinks() {
                            let at = sinks_at(i, sink);
                            rope.angles(first + sink, &mut cos[at..][..half], &mut sin[at..][..half]);
                        }
                    }
                }
            }
        }

        // Each token's role, as (tokens, role) runs in batch order.
        let roles = || seqs.iter().map(|s| (s.len, s.role));
        let embed_scale = h.embed_scale();
        let positions = || seqs.iter().flat_map(|s| s.pos..s.pos + s.len);
        for (t, (&tok, p)) in tokens.iter().zip(positions()).enumerate() {
            let xt = &mut self.x[t * dim..][..dim];
            w.token_embd.row_to_f32(tok as usize, xt);
            if embed_scale != 1.0 {
                xt.iter_mut().for_each(|v| *v *= embed_scale);
            }
            if let Some(pe) = w.position_embd {
                (k.add)(xt, &pe[p * dim..][..dim]);
            }
        }

        for (layer, lw) in w.layers.iter().enumerate() {
            let sliding = h.is_sliding(layer);
            let (cos, sin) = (&self.rope_cos[sliding as usize], &self.rope_sin[sliding as usize]);
            // Attention: x += W_o · attention(rope(W_qkv · norm(x)))
            norm(k, h, &lw.attn_norm, &self.x, &mut self.xn, n, dim);
            by_role(&mut self.parallel, k, &lw.attn_qkv, roles(), &self.xn, &mut self.qkv);
            let mut t = 0;
            for s in seqs {
                let cache = &mut caches[s.seq];
                for p in s.pos..s.pos + s.len {
                    let row = &mut self.qkv[t * qkv_rows..][..qkv_rows];
                    if llama {
                        if let (Some(qn), Some(kn)) = (lw.attn_q_norm, lw.attn_k_norm) {
                            let (q, kv) = row.split_at_mut(q_dim);
                            head_norms(k, h, &mut q[..], qn, &mut self.head_tmp);
                            head_norms(k, h, &mut kv[..kv_dim], kn, &mut self.head_tmp);
                        }
                        if p < cache.sinks() {
                            cache.store_sink_raw(layer, p, &row[q_dim..q_dim + kv_dim]);
                        }
                        let (cos, sin) = (&cos[t * half..][..half], &sin[t * half..][..half]);
                        rotate(k, &mut row[..q_dim + kv_dim], hd, rope_dim, cos, sin);
                        if let Some(m) = q_mul {
                            row[..q_dim].iter_mut().for_each(|v| *v *= m);
                        }
                    }
                    cache.store(layer, p, &row[q_dim..q_dim + kv_dim], &row[q_dim + kv_dim..]);
                    t += 1;
                }
            }
            if llama {
                for (i, s) in seqs.iter().enumerate() {
                    if !wrapped(s, caches) {
                        continue;
                    }
                    caches[s.seq].refresh_sinks(layer, |sink, key| {
                        let at = sinks_at(i, sink);
                        rotate(k, key, hd, rope_dim, &cos[at..][..half], &sin[at..][..half]);
                    });
                }
            }
            let scratch = Scratch { all: &mut self.attn_scratch, len: self.attn_scratch_len, tokens: self.attn_tokens };
            let window = sliding.then_some(h.variant.sliding_window as usize);
            let at = AttnAt { layer, seqs, window };
            let (runs, staging) = (&mut self.attn_runs, &mut self.attn_staging);
            attention(&self.parallel, k, h, caches, at, &self.qkv, scratch, runs, staging, &mut self.att);
            by_role(&mut self.parallel, k, &lw.attn_output, roles(), &self.att, &mut self.proj);
            residual(k, h, lw.attn_post_norm.as_ref(), &mut self.x, &self.proj, &mut self.xn, n, dim);

            // Feed-forward: x += W_down · act(W_up · norm(x))
            norm(k, h, &lw.ffn_norm, &self.x, &mut self.xn, n, dim);
            by_role(&mut self.parallel, k, &lw.ffn_up, roles(), &self.xn, &mut self.up);
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
            by_role(&mut self.parallel, k, &lw.ffn_down, roles(), &self.hidden, &mut self.proj);
            residual(k, h, lw.ffn_post_norm.as_ref(), &mut self.x, &self.proj, &mut self.xn, n, dim);
        }

        // Final norm and LM head, for the rows that need logits.
        let mut rows = 0;
        let mut t0 = 0;
        for s in seqs {
            for t in t0 + s.len - s.logits_rows()..t0 + s.len {
                assert!(rows < self.logits_rows, "more logits rows than the state was made for");
                norm(k, h, &w.output_norm, &self.x[t * dim..], &mut self.xn[rows * dim..], 1, dim);
                rows += 1;
            }
            t0 += s.len;
        }
        if rows == 0 {
            return &mut [];
        }
        let head = Linear { w: w.lm_head, bias: None };
        let logits_roles = seqs.iter().map(|s| (s.logits_rows(), s.role));
        by_role(&mut self.parallel, k, &head, logits_roles, &self.xn, &mut self.logits);
        &mut self.logits[..rows * h.vocab_size as usize]
    }
}

impl SeqRun {
    /// How many of its tokens get logits (its last ones).
    fn logits_rows(&self) -> usize {
        match self.logits {
            LogitsMode::Last => 1,
            LogitsMode::All => self.len,
            LogitsMode::None => 0,
        }
    }
}

/// `out[t] = lin(x[t])` for the rows `roles` describes, `(rows, role)` in
/// order: in one call when `lin`'s kernels sum the same way for both roles
/// (the quantized dtypes, the scalar table), else one call per run of rows
/// of one role (the float dtypes' SIMD kernels: see [`Role`]), so that no
/// row's order depends on the rows beside it.
fn by_role(
    par: &mut Parallel,
    k: &Kernels,
    lin: &Linear,
    roles: impl Iterator<Item = (usize, Role)>,
    x: &[f32],
    out: &mut [f32],
) {
    let (cols, rows) = (lin.w.cols, lin.w.rows);
    let split = k.role_changes_order(lin.w.dtype);
    // (first row, rows, role) of the run being gathered.
    let mut run: Option<(usize, usize, Role)> = None;
    let mut t = 0;
    for (len, role) in roles.filter(|&(len, _)| len > 0) {
        run = match run {
            Some((t0, n, r)) if r == role || !split => Some((t0, n + len, r)),
            Some((t0, n, r)) => {
                lin.forward(par, k, r, &x[t0 * cols..], n, &mut out[t0 * rows..]);
                Some((t, len, role))
            }
            None => Some((t, len, role)),
        };
        t += len;
    }
    if let Some((t0, n, r)) = run {
        lin.forward(par, k, r, &x[t0 * cols..], n, &mut out[t0 * rows..]);
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
            for (batch, seqs, all_logits, threads) in
                [(1, 1, false, 1), (16, 1, true, 3), (128, 1, false, 2), (72, 8, false, 2)]
            {
                let size = ForwardSize { sinks: 4, batch_cap: batch, max_seqs: seqs, all_logits };
                let f = Forward::new(&h, size, threads);
                let predicted = Forward::scratch_bytes(&h, size, threads);
                assert_eq!(predicted, Some(f.allocated_bytes() as u64), "{name} batch {batch}");
            }
        }
    }
}
