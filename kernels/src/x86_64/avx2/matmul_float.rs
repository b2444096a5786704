//! AVX2 f32/f16 matmuls: the GEMV, and the register tiles and packing the
//! drivers in [`crate::driver::float`] run (which also serve AVX-512).
//!
//! - one token (decode, [`gemv`]): every weight is used once, so the kernel
//!   only has to keep up with memory. Enough independent FMA chains and loads
//!   in flight that neither FMA latency nor f16 widening is the bottleneck.
//! - several tokens: the drivers' GEMM and few-token paths (their doc
//!   explains the blocking) with the tiles here: [`tile_kernel`] (6 rows × 16
//!   tokens) and [`few_tile`].
//!
//! Both prefetch in software: the weight rows of a model are short streams
//! that the hardware prefetcher ramps up on too late (see
//! [`GEMV_PREFETCH_GROUPS`]).

use std::arch::x86_64::*;
use std::ops::Range;

use half::f16;

use super::simd::{hsum, load8, load8_f16, store8};
use crate::driver::float::{
    self, few_tokens, fill_chunk, gemm, FloatWeight, Prefetch, PrefetchCursor, Tile, TileShape, FEW_CHUNK, FEW_TOKENS,
};

/// Weight rows per GEMV step: each activation load serves 4 rows, and with
/// two accumulators per row (16 columns a step) 8 FMA chains hide the FMA
/// latency while 8 weight loads are in flight.
const GEMV_ROWS: usize = 4;
/// How far ahead the GEMV prefetches, in row groups. The weight rows of a
/// model are short (SmolLM2: 576 columns, 1152 bytes in f16): each is a new
/// stream of a dozen cache lines, too short for the hardware prefetcher to
/// ramp up on, and without software prefetch the GEMV reaches about half the
/// bandwidth it does on long rows. Into L2 (`T1`), two groups ahead: measured
/// best among T0/T1/NTA at 1, 2 and 4 groups (NTA halves the bandwidth).
pub(in crate::x86_64) const GEMV_PREFETCH_GROUPS: usize = 2;
/// The farthest the GEMV prefetches, in bytes: on long rows (8192 f32 = 32
/// KiB) two groups ahead is 256 KiB per row, and the prefetched lines of the
/// 4 rows crowd L2 enough to cost a third of the bandwidth; 64 KiB does not
/// (and leaves SmolLM2-sized rows at two groups).
pub(in crate::x86_64) const GEMV_PREFETCH_MAX: usize = 64 * 1024;

/// Weight rows × token vectors of the AVX2 GEMM register tile: 6 × 2 × 8 = 96
/// outputs in 12 accumulators; per column, 2 activation loads and 6 weight
/// broadcasts feed 12 FMAs (the 6 × 16 shape of BLIS's Haswell kernel, with
/// weights in the role of its broadcast operand), and the 2 activation
/// vectors and one broadcast fit the 4 spare ymm registers.
const TILE_ROWS: usize = 6;
const TILE_VECTORS: usize = 2;

/// Weight rows of the AVX2 few-token tile for up to 8 tokens (one vector):
/// 12 FMA chains, as many as the GEMM tile's 6 × 2 (6 would leave the FMA
/// units idle for their latency). Up to 16 tokens use the GEMM tile's shape.
const FEW_ROWS: usize = 12;
/// As [`crate::reference::matmul_f32`]: [`gemv`] for one token, [`gemm`] with
/// the AVX2 register tile for more.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matmul_f32(
    w: &[f32],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    float_matmul(w, cols, rows, x, n, out, out_stride, |s| load8(s));
}

/// As [`crate::reference::matmul_f16`]: as [`matmul_f32`], F16C widening 8
/// weights at a time (in the GEMV as they are loaded; in the GEMM once per
/// block of rows, into scratch).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matmul_f16(
    w: &[f16],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    float_matmul(w, cols, rows, x, n, out, out_stride, |s| load8_f16(s));
}

/// The body of [`matmul_f32`] and [`matmul_f16`]: the GEMV, the few-token
/// tiles or the GEMM; `load` widens 8 weights to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn float_matmul<W: FloatWeight>(
    w: &[W],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    load: impl Fn(&[W]) -> __m256 + Copy,
) {
    let pack = |x: &[f32], cols, tn, kc, tokens, out: &mut [f32]| pack_tokens(x, cols, tn, kc, tokens, out);
    let few = |w: &[W], x: &[f32], out: &mut [f32]| {
        let n = x.len() / cols;
        if n <= 8 {
            let shape = TileShape { rows: FEW_ROWS, tokens: 8 };
            few_tokens(w, cols, x, out, out_stride, shape, 1, pack, |tile| few_tile::<W, FEW_ROWS, 1>(tile, load));
        } else if n <= FEW_TOKENS && W::as_f32(w).is_none() {
            // f32 weights: the GEMM broadcasts them in place, measured faster
            // than this tile's copies for 9 to 16 tokens (390 vs 490 µs for
            // 1536 × 576); the results are the same.
            let shape = TileShape { rows: TILE_ROWS, tokens: 16 };
            few_tokens(w, cols, x, out, out_stride, shape, 1, pack, |tile| few_tile::<W, TILE_ROWS, 2>(tile, load));
        } else {
            let widen = |w: &[W], out: &mut [f32]| widen(w, out, load);
            let shape = TileShape { rows: TILE_ROWS, tokens: TILE_VECTORS * 8 };
            gemm(w, cols, x, out, out_stride, shape, pack, widen, |tile| match tile.token_vectors {
                2 => tile_kernel::<2>(tile),
                _ => tile_kernel::<1>(tile),
            });
        }
    };
    float::matmul(w, cols, rows, x, n, out, out_stride, |w, x, out| gemv(w, cols, x, out, load), few);
}

// ------------------------------------------------------------------- GEMV

/// `out[r] = dot(w[r], x)` for the `out.len()` rows of the row-major `w`
/// (`cols` wide), [`GEMV_ROWS`] rows at a time; `load` widens 8 weights to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn gemv<W: FloatWeight>(w: &[W], cols: usize, x: &[f32], out: &mut [f32], load: impl Fn(&[W]) -> __m256 + Copy) {
    let mut row_groups = w.chunks_exact(GEMV_ROWS * cols);
    let mut out_groups = out.chunks_exact_mut(GEMV_ROWS);
    for (wg, og) in (&mut row_groups).zip(&mut out_groups) {
        og.copy_from_slice(&dot_rows::<W, GEMV_ROWS>(wg, cols, x, load));
    }
    for (wr, o) in row_groups.remainder().chunks_exact(cols).zip(out_groups.into_remainder()) {
        *o = dot_rows::<W, 1>(wr, cols, x, load)[0];
    }
}

/// The dot products of the `R` consecutive rows of `w` (`cols` wide) with
/// `x`, sharing each load of `x`. Two accumulators per row, 16 columns a step;
/// each step prefetches the same columns [`GEMV_PREFETCH_GROUPS`] row groups
/// ahead, or [`GEMV_PREFETCH_MAX`] bytes ahead if that is nearer (a prefetch
/// is a hint: past the end of `w` it is simply dropped).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_rows<W: FloatWeight, const R: usize>(
    w: &[W],
    cols: usize,
    x: &[f32],
    load: impl Fn(&[W]) -> __m256 + Copy,
) -> [f32; R] {
    let steps = cols / 16;
    let x16 = &x.as_chunks::<16>().0[..steps];
    // Loops, not `array::from_fn`: its closure is not inlined into
    // `#[target_feature]` code, which costs a call per row group.
    let mut w16: [&[[W; 16]]; R] = [&[]; R];
    for (r, wr) in w16.iter_mut().enumerate() {
        *wr = &w[r * cols..][..cols].as_chunks::<16>().0[..steps];
    }
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for (c, xc) in x16.iter().enumerate() {
        let xv = [load8(xc), load8(&xc[8..])];
        for r in 0..R {
            let ahead = (GEMV_PREFETCH_GROUPS * R * cols * size_of::<W>()).min(GEMV_PREFETCH_MAX);
            _mm_prefetch::<_MM_HINT_T1>(w16[r].as_ptr().wrapping_add(c).wrapping_byte_add(ahead).cast());
            // Unchecked: LLVM does not see that the R slices share x16's
            // length and keeps a compare-and-branch per row otherwise.
            // SAFETY: c < steps, and every `w16[r]` is `[..steps]` above.
            let wc = unsafe { w16[r].get_unchecked(c) };
            acc[r][0] = _mm256_fmadd_ps(load(wc), xv[0], acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(load(&wc[8..]), xv[1], acc[r][1]);
        }
    }
    let mut main = steps * 16;
    if cols - main >= 8 {
        let xv = load8(&x[main..]);
        for r in 0..R {
            acc[r][0] = _mm256_fmadd_ps(load(&w[r * cols + main..]), xv, acc[r][0]);
        }
        main += 8;
    }
    let mut sums = [0f32; R];
    for (r, sum) in sums.iter_mut().enumerate() {
        let tail: f32 = w[r * cols + main..(r + 1) * cols].iter().zip(&x[main..]).map(|(&a, b)| a.into() * b).sum();
        *sum = hsum(_mm256_add_ps(acc[r][0], acc[r][1])) + tail;
    }
    sums
}

// ------------------------------------------------------------ several tokens
/// Packs `tn` activation rows (row `t` at `x[t * cols..][..kc]`) token-major:
/// `out[k * tokens + t] = x[t * cols + k]`, tokens `tn..tokens` zero.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn pack_tokens(x: &[f32], cols: usize, tn: usize, kc: usize, tokens: usize, out: &mut [f32]) {
    let out = &mut out[..kc * tokens];
    if tn < tokens {
        out.fill(0.0);
    }
    // Blocks of 8 tokens × 8 columns, transposed in registers.
    let full = tn / 8 * 8;
    let k8 = kc / 8 * 8;
    for t0 in (0..full).step_by(8) {
        for k0 in (0..k8).step_by(8) {
            let mut v = [_mm256_setzero_ps(); 8];
            for (i, v) in v.iter_mut().enumerate() {
                *v = load8(&x[(t0 + i) * cols + k0..]);
            }
            let tr = transpose8(v);
            for (i, &col) in tr.iter().enumerate() {
                store8(&mut out[(k0 + i) * tokens + t0..], col);
            }
        }
    }
    // The columns and tokens the blocks did not cover, one at a time.
    for t in 0..tn {
        let ks = if t < full { k8 } else { 0 };
        for k in ks..kc {
            out[k * tokens + t] = x[t * cols + k];
        }
    }
}

/// The transpose of the 8 × 8 matrix whose rows are `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn transpose8(v: [__m256; 8]) -> [__m256; 8] {
    // Pairs of rows interleaved within each 128-bit half, then
    // b[c] = column c (low half) and c + 4 (high half) of rows 0-3,
    // b[4 + c] the same for rows 4-7; then the halves swapped.
    let mut a = [_mm256_setzero_ps(); 8];
    for i in 0..4 {
        a[2 * i] = _mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]);
        a[2 * i + 1] = _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]);
    }
    let mut b = [_mm256_setzero_ps(); 8];
    for g in [0, 4] {
        for h in 0..2 {
            let (p, q) = (a[g + h], a[g + h + 2]);
            b[g + 2 * h] = _mm256_shuffle_ps::<0x44>(p, q);
            b[g + 2 * h + 1] = _mm256_shuffle_ps::<0xEE>(p, q);
        }
    }
    let mut out = [_mm256_setzero_ps(); 8];
    for c in 0..4 {
        out[c] = _mm256_permute2f128_ps::<0x20>(b[c], b[c + 4]);
        out[c + 4] = _mm256_permute2f128_ps::<0x31>(b[c], b[c + 4]);
    }
    out
}

/// Widens `w` to f32 into `out` (same length), 8 at a time with `load`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn widen<W: FloatWeight>(w: &[W], out: &mut [f32], load: impl Fn(&[W]) -> __m256) {
    let (w8, w_tail) = w.as_chunks::<8>();
    let (o8, o_tail) = out.as_chunks_mut::<8>();
    for (o, w) in o8.iter_mut().zip(w8) {
        store8(o, load(w));
    }
    for (o, &v) in o_tail.iter_mut().zip(w_tail) {
        *o = v.into();
    }
}

/// The AVX2 register tile: [`TILE_ROWS`] weight rows × `V` vectors of 8
/// tokens, one FMA chain per output, summed over the tile's columns in order.
/// The accumulators hold rows; each vector of 8 tokens is transposed in
/// registers into per-token vectors of the tile's rows for the output.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_kernel<const V: usize>(tile: Tile) {
    const R: usize = TILE_ROWS;
    let Tile { w, w_stride, x, kc, prefetch, mut out, .. } = tile;
    let x8 = &x.as_chunks::<8>().0[..kc * V];
    assert!(w.len() >= (R - 1) * w_stride + kc);
    let prefetch = Prefetch::new(prefetch, kc);
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    for (i, x_chunk) in x8.chunks(prefetch.chunk * V).enumerate() {
        prefetch_l2(prefetch.line(i));
        let k0 = i * prefetch.chunk;
        for (k, xk) in (k0..).zip(x_chunk.chunks_exact(V)) {
            let mut xv = [_mm256_setzero_ps(); V];
            for (v, xv) in xv.iter_mut().enumerate() {
                *xv = load8(&xk[v]);
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // SAFETY: r * w_stride + k < (R - 1) * w_stride + kc <= w.len(),
                // asserted above.
                let b = _mm256_set1_ps(unsafe { *w.get_unchecked(r * w_stride + k) });
                for (a, &xv) in acc_r.iter_mut().zip(&xv) {
                    *a = _mm256_fmadd_ps(b, xv, *a);
                }
            }
        }
    }
    // by_row[v][r]: the accumulators of token vector v (rows R.. zero).
    let mut by_row = [[_mm256_setzero_ps(); 8]; V];
    for (r, acc_r) in acc.iter().enumerate() {
        for (by_row, &a) in by_row.iter_mut().zip(acc_r) {
            by_row[r] = a;
        }
    }
    for (v, by_row) in by_row.into_iter().enumerate() {
        let by_token = transpose8(by_row);
        for (i, &col) in by_token.iter().enumerate().take(out.tokens.saturating_sub(v * 8)) {
            let mut rows = [0f32; 8];
            store8(&mut rows, col);
            out.put::<R>(v * 8 + i, rows.first_chunk().expect("R <= 8"));
        }
    }
}

/// The AVX2 few-token register tile: `R` weight rows × `V` vectors of 8
/// tokens, one FMA chain per output, summed over the tile's columns in order
/// (as [`tile_kernel`]), [`FEW_CHUNK`] columns at a time (see
/// [`fill_chunk`]). Rows past `out.rows` repeat the last row; their results
/// are dropped.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn few_tile<W: FloatWeight, const R: usize, const V: usize>(tile: Tile<W>, load: impl Fn(&[W]) -> __m256 + Copy) {
    let Tile { w, w_stride, x, kc, prefetch, mut out, .. } = tile;
    let x8 = &x.as_chunks::<8>().0[..kc * V];
    let mut rows: [&[W]; R] = [&[]; R];
    for (r, row) in rows.iter_mut().enumerate() {
        *row = &w[r.min(out.rows - 1) * w_stride..][..kc];
    }
    let mut prefetch = PrefetchCursor::new(prefetch, kc);
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    let mut buf = [[0f32; FEW_CHUNK]; R];
    for k0 in (0..kc).step_by(FEW_CHUNK) {
        let len = (kc - k0).min(FEW_CHUNK);
        fill_chunk(&rows, k0, len, &mut buf, |w, out| widen(w, out, load));
        few_columns(&mut acc, &buf, &x8[k0 * V..(k0 + len) * V], &mut prefetch, k0);
    }
    // by_row[g][v][i]: the accumulators of rows 8g + i, token vector v
    // (rows R.. zero), each 8 × 8 block transposed into by_token[t][r], the
    // results of token t, row r (R <= 16, 8 * V <= 16).
    let mut by_row = [[[_mm256_setzero_ps(); 8]; V]; 2];
    for (r, acc_r) in acc.iter().enumerate() {
        for (v, &a) in acc_r.iter().enumerate() {
            by_row[r / 8][v][r % 8] = a;
        }
    }
    let mut by_token = [[0f32; 16]; 16];
    for (g, by_row) in by_row.iter().enumerate().take(R.div_ceil(8)) {
        for (v, &by_row) in by_row.iter().enumerate() {
            for (i, &col) in transpose8(by_row).iter().enumerate() {
                store8(&mut by_token[v * 8 + i][g * 8..], col);
            }
        }
    }
    for (t, rows) in by_token.iter().enumerate().take(out.tokens) {
        out.put::<R>(t, rows.first_chunk().expect("R <= 16"));
    }
}

/// The FMAs of [`few_tile`] over one chunk of columns `k0..`:
/// `acc[r][v] += buf[r][k] × x8[k * V + v]` for each column `k` in order.
/// Not inlined: with the chunk's widening in the same loop, LLVM keeps the
/// accumulators on the stack instead of in registers; a call per chunk only
/// moves them there and back once.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
fn few_columns<const R: usize, const V: usize>(
    acc: &mut [[__m256; V]; R],
    buf: &[[f32; FEW_CHUNK]; R],
    x8: &[[f32; 8]],
    prefetch: &mut PrefetchCursor,
    k0: usize,
) {
    let mut a = *acc;
    for (k, xk) in x8.chunks_exact(V).enumerate().take(FEW_CHUNK) {
        prefetch_l2(prefetch.column(k0 + k));
        let mut xv = [_mm256_setzero_ps(); V];
        for (xv, xk) in xv.iter_mut().zip(xk) {
            *xv = load8(xk);
        }
        for (a_r, buf) in a.iter_mut().zip(buf) {
            // SAFETY: k < FEW_CHUNK, from `take` above.
            let b = _mm256_set1_ps(unsafe { *buf.get_unchecked(k) });
            for (a, &xv) in a_r.iter_mut().zip(&xv) {
                *a = _mm256_fmadd_ps(b, xv, *a);
            }
        }
    }
    *acc = a;
}

/// Prefetches `line` (if any) into L2: a driver's [`Prefetch`] says which.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::x86_64) fn prefetch_l2(line: Option<&u8>) {
    if let Some(line) = line {
        _mm_prefetch::<_MM_HINT_T1>(std::ptr::from_ref(line).cast());
    }
}
