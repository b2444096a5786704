//! AVX2 attention: the contract of [`crate::reference::attention`], computed
//! flash-attention style.
//!
//! Keys are taken in blocks of [`KEY_BLOCK`]. For each block, every query row
//! of the call that attends to one of its keys
//! 1. gets its scores, in register tiles of [`S_ROWS`] rows × [`S_KEYS`] keys:
//!    each key vector is loaded (and widened) once for the tile's rows, and the
//!    8-lane partial sums of 4 keys are reduced together ([`reduce4`]);
//! 2. updates its running max and sum (online softmax) and turns its scores
//!    into weights `exp(s - max)`, 8 at a time; its output is rescaled only
//!    when the max grew;
//! 3. accumulates weights × values into its output, in tiles of [`PV_ROWS`]
//!    rows × 16 columns: each value vector is loaded once for the tile's rows.
//!
//! A call holds every query head of one KV head (grouped-query attention) for
//! a run of tokens, so each block of keys and values comes from memory once
//! per call and from L1 once per row tile. Causal masking costs something only
//! in the blocks that hold the diagonal. f16 keys and values are widened with
//! F16C as they are loaded, or, when more than one score tile will read a
//! block, once into scratch.
//!
//! A row's result depends only on its query, its slot count and the cache, not
//! on the other rows of the call: every score is reduced the same way in any
//! tile, weights past a row's count are exact zeros, and the blocks start at
//! slot 0 whatever the call. So the forward pass may cut a batch into calls
//! any way (by thread count) without changing a bit of the result.

use std::arch::x86_64::*;

use half::f16;

use super::simd::{exp, hmax, hsum, load8, load8_f16, store8};
use crate::attention::Scratch;
use crate::{AttnShape, KEY_BLOCK};

/// Rows of a score tile: 3 rows × 4 keys of accumulators and the 4 key
/// vectors fill the 16 registers.
const S_ROWS: usize = 3;
/// Keys of a score tile: one [`reduce4`].
const S_KEYS: usize = 4;
/// Rows of a weights × values tile: 4 rows × 2 vectors of accumulators.
const PV_ROWS: usize = 4;

const _: () = assert!(KEY_BLOCK.is_multiple_of(8), "weights are computed 8 at a time");

/// As [`crate::reference::attention`], for f32 keys and values.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn attention_f32(
    shape: &AttnShape,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    scratch: &mut [f32],
    out: &mut [f32],
) {
    attention(shape, q, keys, values, scratch, out, |s| load8(s));
}

/// As [`crate::reference::attention`], for f16 keys and values.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn attention_f16(
    shape: &AttnShape,
    q: &[f32],
    keys: &[f16],
    values: &[f16],
    scratch: &mut [f32],
    out: &mut [f32],
) {
    attention(shape, q, keys, values, scratch, out, |s| load8_f16(s));
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

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn attention<T: Copy + Into<f32>>(
    shape: &AttnShape,
    q: &[f32],
    keys: &[T],
    values: &[T],
    scratch: &mut [f32],
    out: &mut [f32],
    load: impl Fn(&[T]) -> __m256 + Copy,
) {
    shape.check(q.len(), [keys.len(), values.len()], scratch.len(), out.len());
    let (rows, hd) = (shape.rows(), shape.head_dim);
    if rows == 0 {
        return;
    }
    let Scratch { keys: kbuf, values: vbuf, scores, max, sum } = Scratch::new(scratch, hd, rows);
    let out = &mut out[..rows * hd];
    out.fill(0.0);
    let mut st = Rows { shape: *shape, q, scores, max, sum, out };
    let widen = size_of::<T>() != size_of::<f32>() && rows > S_ROWS;
    let slots = shape.slots();
    for j0 in (0..slots).step_by(KEY_BLOCK) {
        let nk = KEY_BLOCK.min(slots - j0);
        let (kb, vb) = (&keys[j0 * hd..(j0 + nk) * hd], &values[j0 * hd..(j0 + nk) * hd]);
        if widen {
            let (kw, vw) = (&mut kbuf[..nk * hd], &mut vbuf[..nk * hd]);
            widen_into(kb, kw, load);
            widen_into(vb, vw, load);
            block(&mut st, j0, nk, kw, vw, |s| load8(s));
        } else {
            block(&mut st, j0, nk, kb, vb, load);
        }
    }
    for (o, &l) in st.out.chunks_exact_mut(hd).zip(st.sum.iter()) {
        scale_row(o, 1.0 / l);
    }
}

/// One block of `nk` keys from slot `j0`: the three steps of the module doc
/// for every row that attends to one of them.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block<U: Copy + Into<f32>>(
    st: &mut Rows,
    j0: usize,
    nk: usize,
    kb: &[U],
    vb: &[U],
    load: impl Fn(&[U]) -> __m256 + Copy,
) {
    let Rows { shape, q, scores, max, sum, out } = st;
    let (shape, q) = (&*shape, *q);
    let (rows, hd) = (shape.rows(), shape.head_dim);
    let first = shape.first_row(j0);
    let scale = 1.0 / (hd as f32).sqrt();

    let mut r = first;
    while r < rows {
        let rn = S_ROWS.min(rows - r);
        let nk_tile = shape.valid(r + rn - 1, j0, nk);
        let s = &mut scores[r * KEY_BLOCK..(r + rn) * KEY_BLOCK];
        // The tile's queries (repeating the last when the tile is short).
        let qr = |i: usize| shape.query(q, r + i.min(rn - 1));
        let qs = [qr(0), qr(1), qr(2)];
        match rn {
            3 => score_tile::<U, 3>(qs, kb, nk_tile, scale, s, load),
            2 => score_tile::<U, 2>([qs[0], qs[1]], kb, nk_tile, scale, s, load),
            _ => score_tile::<U, 1>([qs[0]], kb, nk_tile, scale, s, load),
        }
        r += rn;
    }

    for r in first..rows {
        let n = shape.valid(r, j0, nk);
        let s = &mut scores[r * KEY_BLOCK..][..KEY_BLOCK];
        let n8 = n.next_multiple_of(8);
        s[n..n8].fill(f32::NEG_INFINITY);
        let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
        for c in (0..n8).step_by(8) {
            m = _mm256_max_ps(load8(&s[c..]), m);
        }
        let (old, new) = (max[r], max[r].max(hmax(m)));
        // exp(0) = 1: the common case (the max held) needs no exp.
        let alpha = if new == old { 1.0 } else { (old - new).exp() };
        if alpha != 1.0 {
            scale_row(&mut out[r * hd..][..hd], alpha);
        }
        let new_v = _mm256_set1_ps(new);
        let mut acc = _mm256_setzero_ps();
        for c in (0..n8).step_by(8) {
            let p = exp(_mm256_sub_ps(load8(&s[c..]), new_v));
            store8(&mut s[c..], p);
            acc = _mm256_add_ps(acc, p);
        }
        // A later row of a weights × values tile may read this block further.
        s[n8.min(nk)..nk].fill(0.0);
        sum[r] = sum[r] * alpha + hsum(acc);
        max[r] = new;
    }

    let mut r = first;
    while r < rows {
        let rn = PV_ROWS.min(rows - r);
        let nk_tile = shape.valid(r + rn - 1, j0, nk);
        let w = &scores[r * KEY_BLOCK..(r + rn) * KEY_BLOCK];
        let o = &mut out[r * hd..(r + rn) * hd];
        match rn {
            4 => value_tile::<U, 4>(w, vb, hd, nk_tile, o, load),
            3 => value_tile::<U, 3>(w, vb, hd, nk_tile, o, load),
            2 => value_tile::<U, 2>(w, vb, hd, nk_tile, o, load),
            _ => value_tile::<U, 1>(w, vb, hd, nk_tile, o, load),
        }
        r += rn;
    }
}

/// `scores[i * KEY_BLOCK + j] = dot(q[i], k_j) × scale` for the `R` rows and
/// keys `0..nk` of the block `kb` (`[key][head_dim]`), [`S_KEYS`] at a time.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn score_tile<U: Copy + Into<f32>, const R: usize>(
    q: [&[f32]; R],
    kb: &[U],
    nk: usize,
    scale: f32,
    scores: &mut [f32],
    load: impl Fn(&[U]) -> __m256 + Copy,
) {
    let hd = q[0].len();
    let (steps, main) = (hd / 8, hd / 8 * 8);
    let mut q8: [&[[f32; 8]]; R] = [&[]; R];
    for (q8, q) in q8.iter_mut().zip(q) {
        *q8 = &q.as_chunks::<8>().0[..steps];
    }
    let scale_v = _mm_set1_ps(scale);
    let mut j = 0;
    while j < nk {
        let kn = S_KEYS.min(nk - j);
        let k = &kb[j * hd..(j + kn) * hd];
        let mut sums = match kn {
            4 => dots::<U, R, 4>(q8, k, hd, load),
            3 => dots::<U, R, 3>(q8, k, hd, load),
            2 => dots::<U, R, 2>(q8, k, hd, load),
            _ => dots::<U, R, 1>(q8, k, hd, load),
        };
        if main < hd {
            // The last `head_dim % 8` columns, one at a time.
            for (s, qi) in sums.iter_mut().zip(q) {
                let mut tails = [0f32; 4];
                for (c, t) in tails.iter_mut().enumerate().take(kn) {
                    let key = &k[c * hd + main..(c + 1) * hd];
                    *t = key.iter().zip(&qi[main..]).map(|(&a, b)| a.into() * b).sum();
                }
                *s = _mm_add_ps(*s, load4(&tails));
            }
        }
        for (i, s) in sums.iter().enumerate() {
            let v = _mm_mul_ps(*s, scale_v);
            let row = &mut scores[i * KEY_BLOCK + j..];
            if kn == S_KEYS {
                store4(row, v);
            } else {
                row[..kn].copy_from_slice(&to_array(v)[..kn]);
            }
        }
        j += kn;
    }
}

/// The dot products of `R` query rows (`q8`: their first `head_dim / 8`
/// groups of 8) with `K` keys (`k` is `[K][head_dim]`) over those columns:
/// lane `c` of result `i` is `q[i]·k_c`. Each key vector is loaded once for
/// the `R` rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dots<U: Copy + Into<f32>, const R: usize, const K: usize>(
    q8: [&[[f32; 8]]; R],
    k: &[U],
    hd: usize,
    load: impl Fn(&[U]) -> __m256 + Copy,
) -> [__m128; R] {
    let steps = hd / 8;
    let mut q8 = q8;
    for q8 in &mut q8 {
        *q8 = &q8[..steps];
    }
    let mut k8: [&[[U; 8]]; K] = [&[]; K];
    for (c, k8) in k8.iter_mut().enumerate() {
        *k8 = &k[c * hd..][..hd].as_chunks::<8>().0[..steps];
    }
    let mut acc = [[_mm256_setzero_ps(); K]; R];
    for s in 0..steps {
        // Loops, not `array::from_fn`: a closure with target features is not
        // inlined into `from_fn`, which has none.
        let mut kv = [_mm256_setzero_ps(); K];
        for c in 0..K {
            // Unchecked: LLVM does not see that the R + K slices share one length.
            // SAFETY: s < steps, and every `k8[c]` is `[..steps]` above.
            kv[c] = load(unsafe { k8[c].get_unchecked(s) });
        }
        for i in 0..R {
            // SAFETY: s < steps, and every `q8[i]` is `[..steps]` above.
            let qv = load8(unsafe { q8[i].get_unchecked(s) });
            for c in 0..K {
                acc[i][c] = _mm256_fmadd_ps(qv, kv[c], acc[i][c]);
            }
        }
    }
    let mut sums = [_mm_setzero_ps(); R];
    for i in 0..R {
        let mut four = [_mm256_setzero_ps(); 4];
        four[..K].copy_from_slice(&acc[i]);
        sums[i] = reduce4(four);
    }
    sums
}

/// The lane sums of 4 vectors, `[Σa[0], Σa[1], Σa[2], Σa[3]]`, by one fixed
/// tree (so a key's score is rounded the same in any tile).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn reduce4(a: [__m256; 4]) -> __m128 {
    // hadd(x, y) = [x0+x1, x2+x3, y0+y1, y2+y3 | x4+x5, x6+x7, y4+y5, y6+y7].
    let s = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s))
}

/// 4 f32 from the front of `s` (panics if shorter).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load4(s: &[f32]) -> __m128 {
    let a: &[f32; 4] = s.first_chunk().expect("load4: fewer than 4 values");
    // SAFETY: `a` is 4 readable f32 (16 bytes); `loadu` has no alignment requirement.
    unsafe { _mm_loadu_ps(a.as_ptr()) }
}

/// Stores 4 f32 to the front of `s` (panics if shorter).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store4(s: &mut [f32], v: __m128) {
    let a: &mut [f32; 4] = s.first_chunk_mut().expect("store4: fewer than 4 values");
    // SAFETY: `a` is 4 writable f32 (16 bytes); `storeu` has no alignment requirement.
    unsafe { _mm_storeu_ps(a.as_mut_ptr(), v) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn to_array(v: __m128) -> [f32; 4] {
    let mut a = [0f32; 4];
    store4(&mut a, v);
    a
}

/// `out[i] += Σ_j w[i * KEY_BLOCK + j] v_j` for the `R` rows of `out`
/// (`[R][head_dim]`) and keys `0..nk` of the block `vb`, 16 columns at a time
/// (then 8, then one), in key order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn value_tile<U: Copy + Into<f32>, const R: usize>(
    w: &[f32],
    vb: &[U],
    hd: usize,
    nk: usize,
    out: &mut [f32],
    load: impl Fn(&[U]) -> __m256 + Copy,
) {
    let mut wr: [&[f32]; R] = [&[]; R];
    for (i, wr) in wr.iter_mut().enumerate() {
        *wr = &w[i * KEY_BLOCK..][..nk];
    }
    let vb = &vb[..nk * hd];
    let main = hd / 8 * 8;
    let mut c = 0;
    while c + 16 <= main {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = [load8(&out[i * hd + c..]), load8(&out[i * hd + c + 8..])];
        }
        for (j, v) in vb.chunks_exact(hd).enumerate() {
            let (v0, v1) = (load(&v[c..]), load(&v[c + 8..]));
            for i in 0..R {
                // SAFETY: j < nk (the chunks of `vb`, cut to `nk` rows), and
                // every `wr[i]` is `[..nk]` above.
                let p = _mm256_set1_ps(unsafe { *wr[i].get_unchecked(j) });
                acc[i][0] = _mm256_fmadd_ps(p, v0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(p, v1, acc[i][1]);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            store8(&mut out[i * hd + c..], a[0]);
            store8(&mut out[i * hd + c + 8..], a[1]);
        }
        c += 16;
    }
    if c < main {
        let mut acc = [_mm256_setzero_ps(); R];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = load8(&out[i * hd + c..]);
        }
        for (j, v) in vb.chunks_exact(hd).enumerate() {
            let v0 = load(&v[c..]);
            for i in 0..R {
                acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(wr[i][j]), v0, acc[i]);
            }
        }
        for (i, &a) in acc.iter().enumerate() {
            store8(&mut out[i * hd + c..], a);
        }
    }
    for c in main..hd {
        for i in 0..R {
            let o = &mut out[i * hd + c];
            for (j, v) in vb.chunks_exact(hd).enumerate() {
                *o = wr[i][j].mul_add(v[c].into(), *o);
            }
        }
    }
}

/// `x *= s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_row(x: &mut [f32], s: f32) {
    let sv = _mm256_set1_ps(s);
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        store8(c, _mm256_mul_ps(load8(c), sv));
    }
    for v in chunks.into_remainder() {
        *v *= s;
    }
}

/// `dst = src` widened to f32, 8 at a time with `load`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn widen_into<T: Copy + Into<f32>>(src: &[T], dst: &mut [f32], load: impl Fn(&[T]) -> __m256 + Copy) {
    let (s8, s_tail) = src.as_chunks::<8>();
    let (d8, d_tail) = dst.as_chunks_mut::<8>();
    for (s, d) in s8.iter().zip(d8) {
        store8(d, load(s));
    }
    for (s, d) in s_tail.iter().zip(d_tail) {
        *d = (*s).into();
    }
}
