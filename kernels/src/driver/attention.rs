//! Attention's driver: the contract of [`crate::reference::attention`],
//! computed flash-attention style, with an ISA's register tiles.
//!
//! Keys are taken in blocks of [`KEY_BLOCK`]. For each block, every query row
//! of the call that attends to one of its keys
//! 1. gets its scores, in register tiles of [`AttnKernels::SCORE_ROWS`] rows
//!    ([`AttnTiles::score_tile`]): each key vector is loaded (and widened)
//!    once for the tile's rows;
//! 2. updates its running max and sum (online softmax) and turns its scores
//!    into weights `exp(s - max)` ([`AttnKernels::block_max`],
//!    [`AttnKernels::block_weights`]); its output is rescaled only when the
//!    max grew;
//! 3. accumulates weights × values into its output, in tiles of
//!    [`AttnKernels::VALUE_ROWS`] rows ([`AttnTiles::value_tile`]): each value
//!    vector is loaded once for the tile's rows.
//!
//! A call holds every query head of one KV head (grouped-query attention) for
//! a run of tokens, so each block of keys and values comes from memory once
//! per call and from L1 once per row tile. Causal masking costs something only
//! in the blocks that hold the diagonal. f16 keys and values are widened by
//! the tiles as they are loaded, or, when more than one score tile will read a
//! block, once into scratch ([`AttnTiles::widen`]).
//!
//! A row's result depends only on its query, its slot count and the cache, not
//! on the other rows of the call, as long as the ISA's tiles reduce every
//! score the same way in any tile and give weights past a row's count as
//! exact zeros: the blocks start at slot 0 whatever the call. So the forward
//! pass may cut a batch into calls any way (by thread count) without changing
//! a bit of the result.

use crate::{AttnShape, KEY_BLOCK};

/// The most rows a score tile may have (the query slices of a tile are
/// passed in an array of this length).
pub(crate) const MAX_SCORE_ROWS: usize = 4;

/// An ISA's attention tiles for keys and values of type `U` (f32, or f16
/// widened exactly).
pub(crate) trait AttnTiles<U> {
    /// `scores[i * KEY_BLOCK + j] = dot(q[i], k_j) × scale` for the
    /// `q.len()` rows (at most the ISA's `SCORE_ROWS`) and keys `0..nk` of
    /// the block `kb` (`[key][head_dim]`).
    fn score_tile(&self, q: &[&[f32]], kb: &[U], nk: usize, scale: f32, scores: &mut [f32]);
    /// `out[i] += Σ_j w[i * KEY_BLOCK + j] v_j` for the rows of `out`
    /// (`[rows][head_dim]`, at most the ISA's `VALUE_ROWS`) and keys `0..nk`
    /// of the block `vb`, in key order.
    fn value_tile(&self, w: &[f32], vb: &[U], head_dim: usize, nk: usize, out: &mut [f32]);
    /// `dst = src` widened to f32.
    fn widen(&self, src: &[U], dst: &mut [f32]);
}

/// An ISA's attention kernels: its tiles for f32 (and widened) keys, its
/// tile shapes and the online softmax's per-row vector steps.
pub(crate) trait AttnKernels: AttnTiles<f32> {
    /// Rows of a score tile (at most [`MAX_SCORE_ROWS`]).
    const SCORE_ROWS: usize;
    /// Rows of a weights × values tile.
    const VALUE_ROWS: usize;
    /// The largest of `scores[..n]`; may overwrite `scores[n..]` up to the
    /// ISA's vector width with -inf (padding [`Self::block_weights`] reads).
    fn block_max(&self, scores: &mut [f32], n: usize) -> f32;
    /// Turns `scores[..n]` into weights `exp(s - max)` in place and returns
    /// their sum; `scores[n..nk]` become exact zeros (a later row of a value
    /// tile may read that far).
    fn block_weights(&self, scores: &mut [f32], n: usize, nk: usize, max: f32) -> f32;
    /// `x *= s`.
    fn scale_row(&self, x: &mut [f32], s: f32);
}

/// The running state of a call's rows.
struct Rows<'a> {
    shape: AttnShape,
    q: &'a [f32],
    /// `[row][KEY_BLOCK]`: the current block's scores, then its weights.
    scores: &'a mut [f32],
    /// Each row's running maximum score.
    max: &'a mut [f32],
    /// Each row's running `Σ exp(s - max)`.
    sum: &'a mut [f32],
    /// `[row][head_dim]`: `Σ exp(s - max) v`, divided by `sum` at the end.
    out: &'a mut [f32],
}

/// As [`crate::reference::attention`], with `k`'s tiles.
#[inline(always)]
pub(crate) fn attention<T, K: AttnKernels + AttnTiles<T>>(
    k: &K,
    shape: &AttnShape,
    q: &[f32],
    keys: &[T],
    values: &[T],
    scratch: &mut [f32],
    out: &mut [f32],
) {
    const { assert!(K::SCORE_ROWS <= MAX_SCORE_ROWS) };
    shape.check(q.len(), [keys.len(), values.len()], scratch.len(), out.len());
    let (rows, hd) = (shape.rows(), shape.head_dim);
    if rows == 0 {
        return;
    }
    let Scratch { keys: kbuf, values: vbuf, scores, max, sum } = Scratch::new(scratch, hd, rows);
    let out = &mut out[..rows * hd];
    out.fill(0.0);
    let mut st = Rows { shape: *shape, q, scores, max, sum, out };
    let widen = size_of::<T>() != size_of::<f32>() && rows > K::SCORE_ROWS;
    let slots = shape.slots();
    for j0 in (0..slots).step_by(KEY_BLOCK) {
        let nk = KEY_BLOCK.min(slots - j0);
        let (kb, vb) = (&keys[j0 * hd..(j0 + nk) * hd], &values[j0 * hd..(j0 + nk) * hd]);
        if widen {
            let (kw, vw) = (&mut kbuf[..nk * hd], &mut vbuf[..nk * hd]);
            k.widen(kb, kw);
            k.widen(vb, vw);
            block::<f32, K>(k, &mut st, j0, nk, kw, vw);
        } else {
            block::<T, K>(k, &mut st, j0, nk, kb, vb);
        }
    }
    for (o, &l) in st.out.chunks_exact_mut(hd).zip(st.sum.iter()) {
        k.scale_row(o, 1.0 / l);
    }
}

/// One block of `nk` keys from slot `j0`: the three steps of the module doc
/// for every row that attends to one of them.
#[inline(always)]
fn block<U, K: AttnKernels + AttnTiles<U>>(k: &K, st: &mut Rows, j0: usize, nk: usize, kb: &[U], vb: &[U]) {
    let Rows { shape, q, scores, max, sum, out } = st;
    let (shape, q) = (&*shape, *q);
    let (rows, hd) = (shape.rows(), shape.head_dim);
    let first = shape.first_row(j0);
    let scale = 1.0 / (hd as f32).sqrt();

    let mut r = first;
    while r < rows {
        let rn = K::SCORE_ROWS.min(rows - r);
        let nk_tile = shape.valid(r + rn - 1, j0, nk);
        let s = &mut scores[r * KEY_BLOCK..(r + rn) * KEY_BLOCK];
        let mut qs: [&[f32]; MAX_SCORE_ROWS] = [&[]; MAX_SCORE_ROWS];
        for (i, qi) in qs.iter_mut().enumerate().take(rn) {
            *qi = shape.query(q, r + i);
        }
        k.score_tile(&qs[..rn], kb, nk_tile, scale, s);
        r += rn;
    }

    for r in first..rows {
        let n = shape.valid(r, j0, nk);
        let s = &mut scores[r * KEY_BLOCK..][..KEY_BLOCK];
        let (old, new) = (max[r], max[r].max(k.block_max(s, n)));
        // exp(0) = 1: the common case (the max held) needs no exp.
        let alpha = if new == old { 1.0 } else { (old - new).exp() };
        if alpha != 1.0 {
            k.scale_row(&mut out[r * hd..][..hd], alpha);
        }
        sum[r] = sum[r] * alpha + k.block_weights(s, n, nk, new);
        max[r] = new;
    }

    let mut r = first;
    while r < rows {
        let rn = K::VALUE_ROWS.min(rows - r);
        let nk_tile = shape.valid(r + rn - 1, j0, nk);
        let w = &scores[r * KEY_BLOCK..(r + rn) * KEY_BLOCK];
        k.value_tile(w, vb, hd, nk_tile, &mut out[r * hd..(r + rn) * hd]);
        r += rn;
    }
}

/// The driver's scratch, cut from one slice of at least
/// [`AttnShape::scratch_len`] for `rows` rows.
struct Scratch<'a> {
    /// `[KEY_BLOCK][head_dim]` each: a block of f16 keys and values widened.
    pub keys: &'a mut [f32],
    pub values: &'a mut [f32],
    /// `[row][KEY_BLOCK]`: the current block's scores, then its weights.
    pub scores: &'a mut [f32],
    /// Each row's running maximum score.
    pub max: &'a mut [f32],
    /// Each row's running `Σ exp(s - max)`.
    pub sum: &'a mut [f32],
}

impl<'a> Scratch<'a> {
    /// Cuts the scratch, with every row's max at -inf and sum at 0.
    fn new(scratch: &'a mut [f32], head_dim: usize, rows: usize) -> Self {
        let (keys, rest) = scratch.split_at_mut(KEY_BLOCK * head_dim);
        let (values, rest) = rest.split_at_mut(KEY_BLOCK * head_dim);
        let (scores, rest) = rest.split_at_mut(rows * KEY_BLOCK);
        let (max, rest) = rest.split_at_mut(rows);
        let sum = &mut rest[..rows];
        max.fill(f32::NEG_INFINITY);
        sum.fill(0.0);
        Self { keys, values, scores, max, sum }
    }
}
