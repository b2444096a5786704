//! AVX2 attention: the register tiles of the driver in
//! [`crate::driver::attention`] (whose doc explains the design).
//!
//! Scores in tiles of [`S_ROWS`] rows × [`S_KEYS`] keys: each key vector is
//! loaded (and widened with F16C) once for the tile's rows, and the 8-lane
//! partial sums of 4 keys are reduced together ([`reduce4`]), by one fixed
//! tree, so a key's score is rounded the same in any tile. Weights × values
//! in tiles of [`PV_ROWS`] rows × 16 columns; the online softmax 8 weights at
//! a time.

use std::arch::x86_64::*;

use half::f16;

use super::simd::{exp, hmax, hsum, load8, load8_f16, store8};
use crate::driver::attention::{self, AttnKernels, AttnTiles};
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
    attention::attention(&Avx2Attn(()), shape, q, keys, values, scratch, out);
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
    attention::attention(&Avx2Attn(()), shape, q, keys, values, scratch, out);
}

/// The AVX2 attention kernels, for [`attention::attention`]. A value exists
/// only inside [`attention_f32`] and [`attention_f16`], which require AVX2,
/// FMA and F16C: that is the proof every `SAFETY` comment of its methods
/// cites.
struct Avx2Attn(());

/// Keys and values the AVX2 tiles read: 8 at a time, widened to f32.
trait Lanes: Copy + Into<f32> {
    fn load8(s: &[Self]) -> __m256;
}

impl Lanes for f32 {
    #[inline(always)]
    fn load8(s: &[f32]) -> __m256 {
        // SAFETY: only called by the tiles below, which run with AVX2, FMA
        // and F16C (see `Avx2Attn`).
        unsafe { load8(s) }
    }
}

impl Lanes for f16 {
    #[inline(always)]
    fn load8(s: &[f16]) -> __m256 {
        // SAFETY: as for f32.
        unsafe { load8_f16(s) }
    }
}

impl<U: Lanes> AttnTiles<U> for Avx2Attn {
    #[inline(always)]
    fn score_tile(&self, q: &[&[f32]], kb: &[U], nk: usize, scale: f32, scores: &mut [f32]) {
        // SAFETY: `self` exists only where AVX2, FMA and F16C are available (see `Avx2Attn`).
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

impl AttnKernels for Avx2Attn {
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

/// The largest of `scores[..n]`, 8 at a time (`scores[n..]` padded to a
/// multiple of 8 with -inf).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_max(scores: &mut [f32], n: usize) -> f32 {
    let n8 = n.next_multiple_of(8);
    scores[n..n8].fill(f32::NEG_INFINITY);
    let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
    for c in (0..n8).step_by(8) {
        m = _mm256_max_ps(load8(&scores[c..]), m);
    }
    hmax(m)
}

/// `scores[..n]` to weights `exp(s - max)`, 8 at a time (after
/// [`block_max`]: the padding gives zeros), and their sum; zeros up to `nk`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_weights(scores: &mut [f32], n: usize, nk: usize, max: f32) -> f32 {
    let n8 = n.next_multiple_of(8);
    let max = _mm256_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    for c in (0..n8).step_by(8) {
        let p = exp(_mm256_sub_ps(load8(&scores[c..]), max));
        store8(&mut scores[c..], p);
        acc = _mm256_add_ps(acc, p);
    }
    scores[n8.min(nk)..nk].fill(0.0);
    hsum(acc)
}

/// [`score_tile`] for the `q.len()` rows of a tile.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn score_tiles<U: Lanes>(q: &[&[f32]], kb: &[U], nk: usize, scale: f32, scores: &mut [f32]) {
    let load = |s: &[U]| U::load8(s);
    match *q {
        [a, b, c] => score_tile::<U, 3>([a, b, c], kb, nk, scale, scores, load),
        [a, b] => score_tile::<U, 2>([a, b], kb, nk, scale, scores, load),
        _ => score_tile::<U, 1>([q[0]], kb, nk, scale, scores, load),
    }
}

/// [`value_tile`] for the rows of `out`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
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
