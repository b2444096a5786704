//! NEON attention: the register tiles of the driver in
//! [`crate::driver::attention`] (whose doc explains the design), shaped as
//! the AVX2 ones: scores in tiles of [`S_ROWS`] rows × [`S_KEYS`] keys, the
//! online softmax 4 weights at a time, then weights × values in tiles of
//! [`PV_ROWS`] rows × 16 columns. With 32 registers the score tile is 4 × 4
//! (16 accumulators, 8 key and 2 query registers for a step of 8 columns).
//!
//! f16 keys and values are widened with `fcvtl` ([`load8_f16`]) as they are
//! loaded, or once into scratch (the driver decides). As in AVX2, a row's
//! result does not depend on the other rows of the call, bit for bit.

use std::arch::aarch64::*;

use half::f16;

use super::simd::{exp, hmax, hsum, load4, load8, load8_f16, store4};
use crate::driver::attention::{self, AttnKernels, AttnTiles};
use crate::{AttnShape, KEY_BLOCK};

/// Rows of a score tile.
const S_ROWS: usize = 4;
/// Keys of a score tile: one [`reduce4`].
const S_KEYS: usize = 4;
/// Rows of a weights × values tile: 4 rows × 4 vectors of accumulators.
const PV_ROWS: usize = 4;

const _: () = assert!(KEY_BLOCK.is_multiple_of(4), "weights are computed 4 at a time");

/// As [`crate::reference::attention`], for f32 keys and values.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn attention_f32(
    shape: &AttnShape,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    scratch: &mut [f32],
    out: &mut [f32],
) {
    attention::attention(&NeonAttn(()), shape, q, keys, values, scratch, out);
}

/// As [`crate::reference::attention`], for f16 keys and values.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn attention_f16(
    shape: &AttnShape,
    q: &[f32],
    keys: &[f16],
    values: &[f16],
    scratch: &mut [f32],
    out: &mut [f32],
) {
    attention::attention(&NeonAttn(()), shape, q, keys, values, scratch, out);
}

/// The NEON attention kernels, for [`attention::attention`]. A value exists
/// only inside [`attention_f32`] and [`attention_f16`], which require NEON:
/// that is the proof every `SAFETY` comment of its methods cites.
struct NeonAttn(());

/// Keys and values the NEON tiles read: 8 at a time, widened to f32.
trait Lanes: Copy + Into<f32> {
    fn load8(s: &[Self]) -> [float32x4_t; 2];
}

impl Lanes for f32 {
    #[inline(always)]
    fn load8(s: &[f32]) -> [float32x4_t; 2] {
        // SAFETY: only called by the tiles below, which run with NEON (see
        // `NeonAttn`).
        unsafe { load8(s) }
    }
}

impl Lanes for f16 {
    #[inline(always)]
    fn load8(s: &[f16]) -> [float32x4_t; 2] {
        // SAFETY: as for f32.
        unsafe { load8_f16(s) }
    }
}

impl<U: Lanes> AttnTiles<U> for NeonAttn {
    #[inline(always)]
    fn score_tile(&self, q: &[&[f32]], kb: &[U], nk: usize, scale: f32, scores: &mut [f32]) {
        // SAFETY: `self` exists only where NEON is available (see `NeonAttn`).
        unsafe { score_tiles(q, kb, nk, scale, scores) }
    }

    #[inline(always)]
    fn value_tile(&self, w: &[f32], vb: &[U], head_dim: usize, nk: usize, out: &mut [f32]) {
        // SAFETY: as in `score_tile`.
        unsafe { value_tiles(w, vb, head_dim, nk, out) }
    }

    #[inline(always)]
    fn widen(&self, src: &[U], dst: &mut [f32]) {
        // SAFETY: as in `score_tile`.
        unsafe { widen_into(src, dst, |s| U::load8(s)) }
    }
}

impl AttnKernels for NeonAttn {
    const SCORE_ROWS: usize = S_ROWS;
    const VALUE_ROWS: usize = PV_ROWS;

    #[inline(always)]
    fn block_max(&self, scores: &mut [f32], n: usize) -> f32 {
        // SAFETY: as in `score_tile`.
        unsafe { block_max(scores, n) }
    }

    #[inline(always)]
    fn block_weights(&self, scores: &mut [f32], n: usize, nk: usize, max: f32) -> f32 {
        // SAFETY: as in `score_tile`.
        unsafe { block_weights(scores, n, nk, max) }
    }

    #[inline(always)]
    fn scale_row(&self, x: &mut [f32], s: f32) {
        // SAFETY: as in `score_tile`.
        unsafe { scale_row(x, s) }
    }
}

/// The largest of `scores[..n]`, 4 at a time (`scores[n..]` padded to a
/// multiple of 4 with -inf).
#[inline]
#[target_feature(enable = "neon")]
fn block_max(scores: &mut [f32], n: usize) -> f32 {
    let n4 = n.next_multiple_of(4);
    scores[n..n4].fill(f32::NEG_INFINITY);
    let mut m = vdupq_n_f32(f32::NEG_INFINITY);
    for c in (0..n4).step_by(4) {
        m = vmaxnmq_f32(m, load4(&scores[c..]));
    }
    hmax(m)
}

/// `scores[..n]` to weights `exp(s - max)`, 4 at a time (after
/// [`block_max`]: the padding gives zeros), and their sum; zeros up to `nk`.
#[inline]
#[target_feature(enable = "neon")]
fn block_weights(scores: &mut [f32], n: usize, nk: usize, max: f32) -> f32 {
    let n4 = n.next_multiple_of(4);
    let max = vdupq_n_f32(max);
    let mut acc = vdupq_n_f32(0.0);
    for c in (0..n4).step_by(4) {
        let p = exp(vsubq_f32(load4(&scores[c..]), max));
        store4(&mut scores[c..], p);
        acc = vaddq_f32(acc, p);
    }
    scores[n4.min(nk)..nk].fill(0.0);
    hsum(acc)
}

/// [`score_tile`] for the `q.len()` rows of a tile.
#[inline]
#[target_feature(enable = "neon")]
fn score_tiles<U: Lanes>(q: &[&[f32]], kb: &[U], nk: usize, scale: f32, scores: &mut [f32]) {
    let load = |s: &[U]| U::load8(s);
    match *q {
        [a, b, c, d] => score_tile::<U, 4>([a, b, c, d], kb, nk, scale, scores, load),
        [a, b, c] => score_tile::<U, 3>([a, b, c], kb, nk, scale, scores, load),
        [a, b] => score_tile::<U, 2>([a, b], kb, nk, scale, scores, load),
        _ => score_tile::<U, 1>([q[0]], kb, nk, scale, scores, load),
    }
}

/// [`value_tile`] for the rows of `out`.
#[inline]
#[target_feature(enable = "neon")]
fn value_tiles<U: Lanes>(w: &[f32], vb: &[U], hd: usize, nk: usize, out: &mut [f32]) {
    let load = |s: &[U]| U::load8(s);
    match out.len() / hd {
        4 => value_tile::<U, 4>(w, vb, hd, nk, out, load),
        3 => value_tile::<U, 3>(w, vb, hd, nk, out, load),
        2 => value_tile::<U, 2>(w, vb, hd, nk, out, load),
        _ => value_tile::<U, 1>(w, vb, hd, nk, out, load),
    }
}

/// `scores[i * KEY_BLOCK + j] = dot(q[i], k_j) × scale` for the `R` rows and
/// keys `0..nk` of the block `kb` (`[key][head_dim]`), [`S_KEYS`] at a time.
#[inline]
#[target_feature(enable = "neon")]
fn score_tile<U: Copy + Into<f32>, const R: usize>(
    q: [&[f32]; R],
    kb: &[U],
    nk: usize,
    scale: f32,
    scores: &mut [f32],
    load: impl Fn(&[U]) -> [float32x4_t; 2] + Copy,
) {
    let hd = q[0].len();
    let (steps, main) = (hd / 8, hd / 8 * 8);
    let mut q8: [&[[f32; 8]]; R] = [&[]; R];
    for (q8, q) in q8.iter_mut().zip(q) {
        *q8 = &q.as_chunks::<8>().0[..steps];
    }
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
                *s = vaddq_f32(*s, load4(&tails));
            }
        }
        for (i, s) in sums.iter().enumerate() {
            let v = vmulq_n_f32(*s, scale);
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
#[target_feature(enable = "neon")]
fn dots<U: Copy + Into<f32>, const R: usize, const K: usize>(
    q8: [&[[f32; 8]]; R],
    k: &[U],
    hd: usize,
    load: impl Fn(&[U]) -> [float32x4_t; 2] + Copy,
) -> [float32x4_t; R] {
    let steps = hd / 8;
    let mut q8 = q8;
    for q8 in &mut q8 {
        *q8 = &q8[..steps];
    }
    let mut k8: [&[[U; 8]]; K] = [&[]; K];
    for (c, k8) in k8.iter_mut().enumerate() {
        *k8 = &k[c * hd..][..hd].as_chunks::<8>().0[..steps];
    }
    let mut acc = [[vdupq_n_f32(0.0); K]; R];
    for s in 0..steps {
        // Loops, not `array::from_fn`: a closure with target features is not
        // inlined into `from_fn`, which has none.
        let mut kv = [[vdupq_n_f32(0.0); 2]; K];
        for c in 0..K {
            // Unchecked: LLVM does not see that the R + K slices share one length.
            // SAFETY: s < steps, and every `k8[c]` is `[..steps]` above.
            kv[c] = load(unsafe { k8[c].get_unchecked(s) });
        }
        for i in 0..R {
            // SAFETY: s < steps, and every `q8[i]` is `[..steps]` above.
            let qv = load8(unsafe { q8[i].get_unchecked(s) });
            for c in 0..K {
                acc[i][c] = vfmaq_f32(vfmaq_f32(acc[i][c], qv[0], kv[c][0]), qv[1], kv[c][1]);
            }
        }
    }
    let mut sums = [vdupq_n_f32(0.0); R];
    for i in 0..R {
        let mut four = [vdupq_n_f32(0.0); 4];
        four[..K].copy_from_slice(&acc[i]);
        sums[i] = reduce4(four);
    }
    sums
}

/// The lane sums of 4 vectors, `[Σa[0], Σa[1], Σa[2], Σa[3]]`, by one fixed
/// tree (so a key's score is rounded the same in any tile).
#[inline]
#[target_feature(enable = "neon")]
fn reduce4(a: [float32x4_t; 4]) -> float32x4_t {
    // faddp(x, y) = [x0+x1, x2+x3, y0+y1, y2+y3].
    vpaddq_f32(vpaddq_f32(a[0], a[1]), vpaddq_f32(a[2], a[3]))
}

#[inline]
#[target_feature(enable = "neon")]
fn to_array(v: float32x4_t) -> [f32; 4] {
    [vgetq_lane_f32::<0>(v), vgetq_lane_f32::<1>(v), vgetq_lane_f32::<2>(v), vgetq_lane_f32::<3>(v)]
}

/// `out[i] += Σ_j w[i * KEY_BLOCK + j] v_j` for the `R` rows of `out`
/// (`[R][head_dim]`) and keys `0..nk` of the block `vb`, 16 columns at a time
/// (then 8, then one), in key order.
#[inline]
#[target_feature(enable = "neon")]
fn value_tile<U: Copy + Into<f32>, const R: usize>(
    w: &[f32],
    vb: &[U],
    hd: usize,
    nk: usize,
    out: &mut [f32],
    load: impl Fn(&[U]) -> [float32x4_t; 2] + Copy,
) {
    let mut wr: [&[f32]; R] = [&[]; R];
    for (i, wr) in wr.iter_mut().enumerate() {
        *wr = &w[i * KEY_BLOCK..][..nk];
    }
    let vb = &vb[..nk * hd];
    let main = hd / 8 * 8;
    let mut c = 0;
    while c + 16 <= main {
        let mut acc = [[vdupq_n_f32(0.0); 4]; R];
        for (i, a) in acc.iter_mut().enumerate() {
            let o = &out[i * hd + c..];
            *a = [load4(o), load4(&o[4..]), load4(&o[8..]), load4(&o[12..])];
        }
        for (j, v) in vb.chunks_exact(hd).enumerate() {
            let ([v0, v1], [v2, v3]) = (load(&v[c..]), load(&v[c + 8..]));
            for i in 0..R {
                // SAFETY: j < nk (the chunks of `vb`, cut to `nk` rows), and
                // every `wr[i]` is `[..nk]` above.
                let p = vdupq_n_f32(unsafe { *wr[i].get_unchecked(j) });
                acc[i][0] = vfmaq_f32(acc[i][0], p, v0);
                acc[i][1] = vfmaq_f32(acc[i][1], p, v1);
                acc[i][2] = vfmaq_f32(acc[i][2], p, v2);
                acc[i][3] = vfmaq_f32(acc[i][3], p, v3);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (h, &v) in a.iter().enumerate() {
                store4(&mut out[i * hd + c + 4 * h..], v);
            }
        }
        c += 16;
    }
    if c < main {
        let mut acc = [[vdupq_n_f32(0.0); 2]; R];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = load8(&out[i * hd + c..]);
        }
        for (j, v) in vb.chunks_exact(hd).enumerate() {
            let [v0, v1] = load(&v[c..]);
            for i in 0..R {
                let p = vdupq_n_f32(wr[i][j]);
                acc[i][0] = vfmaq_f32(acc[i][0], p, v0);
                acc[i][1] = vfmaq_f32(acc[i][1], p, v1);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            store4(&mut out[i * hd + c..], a[0]);
            store4(&mut out[i * hd + c + 4..], a[1]);
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
#[target_feature(enable = "neon")]
fn scale_row(x: &mut [f32], s: f32) {
    let mut chunks = x.chunks_exact_mut(4);
    for c in &mut chunks {
        store4(c, vmulq_n_f32(load4(c), s));
    }
    for v in chunks.into_remainder() {
        *v *= s;
    }
}

/// `dst = src` widened to f32, 8 at a time with `load`.
#[inline]
#[target_feature(enable = "neon")]
fn widen_into<T: Copy + Into<f32>>(src: &[T], dst: &mut [f32], load: impl Fn(&[T]) -> [float32x4_t; 2] + Copy) {
    let (s8, s_tail) = src.as_chunks::<8>();
    let (d8, d_tail) = dst.as_chunks_mut::<8>();
    for (s, d) in s8.iter().zip(d8) {
        let [lo, hi] = load(s);
        store4(d, lo);
        store4(&mut d[4..], hi);
    }
    for (s, d) in s_tail.iter().zip(d_tail) {
        *d = (*s).into();
    }
}
