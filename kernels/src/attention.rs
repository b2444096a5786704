//! The attention kernels' contract: the shape of one call and the scratch it
//! needs. The kernels themselves are [`crate::reference::attention`] (the
//! spec) and one per instruction set.

/// Keys per block in the SIMD kernels: scores are computed for one block of
/// keys at a time, and the online softmax rescales once per block rather than
/// once per key. 64 keys of head_dim 128 in f32 are 32 KiB for keys and values
/// together: a block stays in L1/L2 while every query row of a call uses it.
pub const KEY_BLOCK: usize = 64;

/// One attention call: one KV head and the `group` query heads that share it
/// (grouped-query attention), at `n_tokens` consecutive positions.
///
/// Row `r = t * group + g` is query head `g` of token `t`: its query is
/// `q[t * q_stride + g * head_dim..][..head_dim]`, it attends to the first
/// `n_pos + t` slots of `keys` and `values` (both `[slot][head_dim]`), and its
/// output is `out[r * head_dim..][..head_dim]`. Causal prefill of a batch at
/// positions `pos..` is `n_pos = pos + 1`; decode is `n_tokens = 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    /// Values per query, key and value vector.
    pub head_dim: usize,
    /// Query heads per KV head (1 without grouped-query attention).
    pub group: usize,
    /// Consecutive query positions (1 in decode).
    pub n_tokens: usize,
    /// Slots the first token attends to (at least 1); token `t` attends to `n_pos + t`.
    pub n_pos: usize,
    /// Distance between consecutive tokens' queries in `q`.
    pub q_stride: usize,
}

impl AttnShape {
    /// Query rows: `group × n_tokens`.
    pub fn rows(&self) -> usize {
        self.group * self.n_tokens
    }

    /// Slots the last token attends to: how many keys and values are read.
    pub fn slots(&self) -> usize {
        self.n_pos + self.n_tokens.max(1) - 1
    }

    /// f32 scratch an attention kernel needs for calls of up to `max_rows`
    /// rows with this `head_dim`: a block of keys and one of values widened to
    /// f32, and per row a block of scores plus its running max and sum.
    pub fn scratch_len(head_dim: usize, max_rows: usize) -> usize {
        2 * KEY_BLOCK * head_dim + max_rows * (KEY_BLOCK + 2)
    }

    /// Row `r`'s query.
    pub(crate) fn query<'q>(&self, q: &'q [f32], r: usize) -> &'q [f32] {
        let hd = self.head_dim;
        &q[(r / self.group) * self.q_stride + (r % self.group) * hd..][..hd]
    }

    /// Keys of the block starting at slot `j0` (holding `nk`) that row `r` attends to.
    pub(crate) fn valid(&self, r: usize, j0: usize, nk: usize) -> usize {
        (self.n_pos + r / self.group).saturating_sub(j0).min(nk)
    }

    /// The first row that attends to slot `j0`: counts grow with the row, so
    /// the rows that see a block are a suffix.
    pub(crate) fn first_row(&self, j0: usize) -> usize {
        (j0 + 1).saturating_sub(self.n_pos) * self.group
    }

    /// The entry checks every kernel makes once: lengths that let the loops
    /// index without further checks failing.
    pub fn check(&self, q: usize, kv: [usize; 2], scratch: usize, out: usize) {
        let hd = self.head_dim;
        assert!(self.n_pos >= 1 && hd >= 1, "attention: n_pos {} head_dim {hd}", self.n_pos);
        if self.rows() == 0 {
            return;
        }
        let need_q = (self.n_tokens - 1) * self.q_stride + self.group * hd;
        assert!(q >= need_q, "attention: q holds {q} values, {need_q} needed");
        let need_kv = self.slots() * hd;
        assert!(kv[0] >= need_kv && kv[1] >= need_kv, "attention: keys/values hold {kv:?}, {need_kv} needed");
        let need_out = self.rows() * hd;
        assert!(out >= need_out, "attention: out holds {out}, {need_out} needed");
        let need_scratch = Self::scratch_len(hd, self.rows());
        assert!(scratch >= need_scratch, "attention: scratch of {scratch}, {need_scratch} needed");
    }
}
