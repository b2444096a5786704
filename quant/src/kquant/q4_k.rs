//! Q4_K packed in tiles (see [`super`]): per super-block record of a tile,
//! `d[8]` f16, `dmin[8]` f16, `scales[12][8]` (byte `k` of the 12 packed
//! 6-bit scales and minimums of each row, ggml's `get_scale_min_k4` order),
//! then `qs[32][8][4]`: unit `u` holds bytes `4u..4u + 4` of each row's 128
//! quant bytes, i.e. columns `4(u % 8)..+4` of group `g = u / 8`, whose low
//! nibbles are sub-block `2g` and high nibbles sub-block `2g + 1`. 144 bytes
//! per row per 256 values, as in GGUF.

use super::layout::{Field, KFormat};
use crate::ggml::{BlockQ4K, GgmlType, QK_K};
use half::f16;

/// The Q4_K format.
pub struct Q4K;

const FIELDS: &[Field] = &[
    Field { offset: 0, len: 2, unit: 2 },    // d
    Field { offset: 2, len: 2, unit: 2 },    // dmin
    Field { offset: 4, len: 12, unit: 1 },   // scales
    Field { offset: 16, len: 128, unit: 4 }, // qs
];

/// Offset in a tile's record of one super-block of `d[8]`: each row's f16 super-block scale.
pub const D: usize = Field::tile_offset(FIELDS, 0);
/// Offset in a tile's record of one super-block of `dmin[8]`: each row's f16 scale of the sub-block minimums.
pub const DMIN: usize = Field::tile_offset(FIELDS, 1);
/// Offset in a tile's record of one super-block of the packed sub-block scales (and minimums), interleaved byte by byte across the rows.
pub const SCALES: usize = Field::tile_offset(FIELDS, 2);
/// Offset in a tile's record of one super-block of the quants (low bits), interleaved across the rows in units of 4 bytes.
pub const QS: usize = Field::tile_offset(FIELDS, 3);
/// Bytes of one tile's record of one super-block.
pub const RECORD_BYTES: usize = Field::tile_offset(FIELDS, 4);

impl KFormat for Q4K {
    const NAME: &'static str = "Q4_K";
    const GGML_TYPE: GgmlType = GgmlType::Q4_K;
    const BLOCK_BYTES: usize = std::mem::size_of::<BlockQ4K>();
    const FIELDS: &'static [Field] = FIELDS;

    fn dequantize_block(block: &[u8], out: &mut [f32; QK_K]) {
        bytemuck::pod_read_unaligned::<BlockQ4K>(block).dequantize_block(out);
    }
}

/// Largest 6-bit sub-block scale or minimum.
const MAX6: f32 = 63.0;

/// Sub-blocks of 32 values under one `d`, `dmin`, as searched: a Q4_K
/// super-block's (8 of them), or a whole row's.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedScales {
    /// Scale of the 6-bit sub-block scales.
    pub d: f16,
    /// Scale of the 6-bit sub-block minimums.
    pub dmin: f16,
    /// Per sub-block: 6-bit scale `sc` and minimum `m`.
    pub scale_min: Vec<(u8, u8)>,
    /// Per value: its 4-bit quant; value `x = d·sc·q − dmin·m`.
    pub quants: Vec<u8>,
}

impl SharedScales {
    /// The values these scales and quants decode to, in ggml's
    /// `dequantize_row_q4_K` order of operations.
    pub fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        for ((y, q), &(sc, m)) in out.chunks_exact_mut(32).zip(self.quants.chunks_exact(32)).zip(&self.scale_min) {
            let (d_sub, m_sub) = (d * f32::from(sc), dmin * f32::from(m));
            for (y, &q) in y.iter_mut().zip(q) {
                *y = d_sub * f32::from(q) - m_sub;
            }
        }
    }
}

/// Quantizes one super-block of 256 values as GGUF Q4_K
/// (`x = d × sc × q - dmin × m`, 6-bit `sc` and `m` per sub-block of 32):
/// [`quantize_shared`], packed.
pub fn quantize_block(x: &[f32; QK_K]) -> BlockQ4K {
    let fit = quantize_shared(x);
    let mut block = BlockQ4K { d: fit.d, dmin: fit.dmin, scales: [0; 12], qs: [0; QK_K / 2] };
    for (j, &(sc, m)) in fit.scale_min.iter().enumerate() {
        set_scale_min(&mut block.scales, j, sc, m);
        for (l, &ql) in fit.quants[32 * j..32 * j + 32].iter().enumerate() {
            block.qs[32 * (j / 2) + l] |= ql << (4 * (j % 2));
        }
    }
    block
}

/// Quantizes `x` (whole sub-blocks of 32) under one `d`, `dmin`.
///
/// Each sub-block's scale and minimum are searched for least squared error
/// (`affine::search`, private); `d` and `dmin` then put the largest on the
/// 6-bit grid, and each sub-block is searched again with its candidates
/// rounded to that grid, so the error compared is the stored one. `d`,
/// `dmin` are then refitted by least squares for the chosen integers and the
/// grid search repeated, keeping the best. The plain min/max fit is among the
/// candidates, so the result is never worse than it.
pub fn quantize_shared(x: &[f32]) -> SharedScales {
    assert!(x.len().is_multiple_of(32), "{} values are not whole sub-blocks of 32", x.len());
    let subs = x.len() / 32;
    let mut best: Option<(f32, SharedScales)> = None;
    for searched in [false, true] {
        let targets: Vec<(f32, f32)> = x
            .chunks_exact(32)
            .map(|sub| {
                if searched {
                    let fit = crate::affine::search(sub, 15, true, |s, m| Some((s, m)), &mut [0u8; 32]);
                    (fit.scale, -fit.min)
                } else {
                    let lo = sub.iter().copied().fold(0f32, f32::min);
                    let hi = sub.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    ((hi - lo) / 15.0, -lo)
                }
            })
            .collect();
        let mut d = targets.iter().fold(0f32, |a, t| a.max(t.0)) / MAX6;
        let mut dmin = targets.iter().fold(0f32, |a, t| a.max(t.1)) / MAX6;
        for _ in 0..3 {
            let (dh, dminh) = (f16::from_f32(d), f16::from_f32(dmin));
            if !(dh.is_finite() && dminh.is_finite()) {
                break;
            }
            let (err, fit) = encode_with(x, &targets, dh, dminh, searched);
            let refit = refit_super(x, &fit);
            if best.as_ref().is_none_or(|(e, _)| err < *e) {
                best = Some((err, fit));
            }
            match refit {
                Some((nd, ndmin)) => (d, dmin) = (nd, ndmin),
                None => break,
            }
        }
    }
    best.map_or_else(
        || SharedScales { d: f16::ZERO, dmin: f16::ZERO, scale_min: vec![(0, 0); subs], quants: vec![0; x.len()] },
        |(_, fit)| fit,
    )
}

/// The sub-blocks under `d`, `dmin`, and their squared error: per sub-block,
/// the grid point nearest its target `(scale, -min)` and its neighbours,
/// plus (`search`) a search whose candidates are rounded to the grid.
fn encode_with(x: &[f32], targets: &[(f32, f32)], d: f16, dmin: f16, search: bool) -> (f32, SharedScales) {
    let (df, dminf) = (d.to_f32(), dmin.to_f32());
    let step = |v: f32, unit: f32| if unit > 0.0 { (v / unit).round().clamp(0.0, MAX6) } else { 0.0 };
    let mut fit = SharedScales { d, dmin, scale_min: Vec::with_capacity(targets.len()), quants: vec![0; x.len()] };
    let mut total = 0.0;
    for ((j, sub), target) in x.chunks_exact(32).enumerate().zip(targets) {
        let (sc0, m0) = (step(target.0, df), step(target.1, dminf));
        let mut best = (f32::INFINITY, 0u8, 0u8, [0u8; 32]);
        let mut q = [0u8; 32];
        let mut try_grid = |sc: f32, m: f32, best: &mut (f32, u8, u8, [u8; 32])| {
            let err = crate::affine::quantize_against(sub, df * sc, -(dminf * m), 15, &mut q);
            if err < best.0 {
                *best = (err, sc as u8, m as u8, q);
            }
        };
        for dsc in [0.0, -1.0, 1.0] {
            for dm in [0.0, -1.0, 1.0] {
                let (sc, m) = (sc0 + dsc, m0 + dm);
                if (0.0..=MAX6).contains(&sc) && (0.0..=MAX6).contains(&m) {
                    try_grid(sc, m, &mut best);
                }
            }
        }
        if search {
            let on_grid = |s: f32, m: f32| Some((df * step(s, df), -(dminf * step(-m, dminf))));
            // Around the grid point the first search found: its neighbourhood.
            let found = crate::affine::search_steps(sub, 15, true, 2, on_grid, &mut [0u8; 32]);
            try_grid(step(found.scale, df), step(-found.min, dminf), &mut best);
        }
        let (err, sc, m, q) = best;
        total += err;
        fit.scale_min.push((sc, m));
        fit.quants[32 * j..32 * j + 32].copy_from_slice(&q);
    }
    (total, fit)
}

/// Least-squares `(d, dmin)` for the fit's integers: `x ≈ d × (sc q) - dmin × m`.
fn refit_super(x: &[f32], fit: &SharedScales) -> Option<(f32, f32)> {
    let (mut aa, mut ab, mut bb, mut xa, mut xb) = (0f32, 0f32, 0f32, 0f32, 0f32);
    for ((sub, q), &(sc, m)) in x.chunks_exact(32).zip(fit.quants.chunks_exact(32)).zip(&fit.scale_min) {
        let b = f32::from(m);
        for (&xi, &ql) in sub.iter().zip(q) {
            let a = f32::from(sc) * f32::from(ql);
            aa += a * a;
            ab += a * b;
            bb += b * b;
            xa += xi * a;
            xb += xi * b;
        }
    }
    let det = aa * bb - ab * ab;
    let (d, dmin) = if bb == 0.0 {
        (xa / aa, fit.dmin.to_f32())
    } else if det > 0.0 {
        ((xa * bb - ab * xb) / det, (ab * xa - aa * xb) / det)
    } else {
        return None;
    };
    (d > 0.0 && d.is_finite() && dmin >= 0.0 && dmin.is_finite()).then_some((d, dmin))
}

/// Stores sub-block `j`'s 6-bit scale and minimum as ggml's
/// `get_scale_min_k4` reads them (see [`BlockQ4K::scale_min`]).
pub(crate) fn set_scale_min(scales: &mut [u8; 12], j: usize, sc: u8, m: u8) {
    if j < 4 {
        scales[j] |= sc;
        scales[j + 4] |= m;
    } else {
        scales[j + 4] = (sc & 0x0F) | ((m & 0x0F) << 4);
        scales[j - 4] |= (sc >> 4) << 6;
        scales[j] |= (m >> 4) << 6;
    }
}

/// A row-major `[rows, cols]` f32 tensor to packed Q4_K (`dst` is the
/// packed size): GGUF super-blocks from [`quantize_block`], then repacked.
pub(crate) fn encode(rows: usize, cols: usize, src: &[f32], dst: &mut [u8]) {
    use rayon::prelude::*;
    let layout = super::PackedKLayout::new::<Q4K>(rows, cols).expect("Q4_K shape checked against the dtype table");
    // Super-blocks are independent: searched in parallel (a few dozen per
    // task, each tens of microseconds), then repacked in order.
    let blocks: Vec<BlockQ4K> = src
        .par_chunks_exact(QK_K)
        .with_min_len(32)
        .map(|sb| quantize_block(sb.try_into().expect("chunks of QK_K")))
        .collect();
    super::repack::<Q4K>(bytemuck::cast_slice(&blocks), &layout, dst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affine::tests::test_block;
    use crate::DType;

    fn sse(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
    }

    /// The min/max fit written out plainly (the baseline): per sub-block
    /// `scale = (max - min) / 15`, `min = min(min, 0)`, the super-block's
    /// `d`, `dmin` from the largest, and the quants rounded against the
    /// stored values. Also returns its per-value error bound's square sum:
    /// half a step, plus what rounding `sc` (≤ d/2 per quant step, 15 steps)
    /// and `m` (≤ dmin/2) to 6 bits can add.
    fn plain(x: &[f32; QK_K]) -> (BlockQ4K, f32) {
        let fits: Vec<(f32, f32)> = x
            .chunks_exact(32)
            .map(|s| {
                let lo = s.iter().copied().fold(0f32, f32::min);
                let hi = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                ((hi - lo) / 15.0, -lo)
            })
            .collect();
        let d = f16::from_f32(fits.iter().map(|f| f.0).fold(0.0, f32::max) / 63.0);
        let dmin = f16::from_f32(fits.iter().map(|f| f.1).fold(0.0, f32::max) / 63.0);
        let mut block = BlockQ4K { d, dmin, scales: [0; 12], qs: [0; QK_K / 2] };
        let mut bound = 0.0;
        for (j, (s, &(scale, neg_min))) in x.chunks_exact(32).zip(&fits).enumerate() {
            let sc = if d.to_f32() > 0.0 { (scale / d.to_f32()).round().min(63.0) } else { 0.0 };
            let m = if dmin.to_f32() > 0.0 { (neg_min / dmin.to_f32()).round().min(63.0) } else { 0.0 };
            set_scale_min(&mut block.scales, j, sc as u8, m as u8);
            let (step, off) = (d.to_f32() * sc, dmin.to_f32() * m);
            for (l, &v) in s.iter().enumerate() {
                let q = if step > 0.0 { ((v + off) / step).round().clamp(0.0, 15.0) } else { 0.0 };
                block.qs[32 * (j / 2) + l] |= (q as u8) << (4 * (j % 2));
            }
            let per_value = scale / 2.0 + 7.5 * d.to_f32() + dmin.to_f32() / 2.0;
            bound += 32.0 * (per_value * 1.001).powi(2);
        }
        (block, bound)
    }

    #[test]
    fn round_trips_no_worse_than_min_max_fit() {
        let (rows, cols) = (9, 2 * QK_K);
        let mut bytes = Vec::new();
        for seed in 0..if cfg!(miri) { 2 } else { 24u32 } {
            let src: Vec<f32> = (0..rows * cols / 32).flat_map(|b| test_block(32, seed * 1000 + b as u32)).collect();
            DType::Q4_K.encode(rows, cols, &src, &mut bytes);
            let back = DType::Q4_K.decode(&bytes, rows, cols);
            let (mut better, mut blocks) = (0, 0);
            for (x, y) in src.chunks_exact(QK_K).zip(back.chunks_exact(QK_K)) {
                let x: &[f32; QK_K] = x.try_into().unwrap();
                let (reference, bound) = plain(x);
                let mut want = [0f32; QK_K];
                reference.dequantize_block(&mut want);
                let (got, base) = (sse(x, y), sse(x, &want));
                assert!(base <= bound, "seed {seed}: the min/max fit's error {base} exceeds its bound {bound}");
                assert!(got <= base * (1.0 + 1e-6), "seed {seed}: searched error {got} > min/max fit's {base}");
                better += usize::from(got < 0.9 * base);
                blocks += 1;
            }
            assert!(better * 2 > blocks, "seed {seed}: the search beats min/max by 10% on {better} of {blocks}");
        }
    }

    #[test]
    fn scales_and_mins_pack_as_ggml_reads_them() {
        let mut scales = [0u8; 12];
        let pairs: Vec<(u8, u8)> = (0..8).map(|j| ((j * 9 + 5) % 64, (j * 23 + 63) % 64)).collect();
        for (j, &(sc, m)) in pairs.iter().enumerate() {
            set_scale_min(&mut scales, j, sc, m);
        }
        let block = BlockQ4K { d: f16::ONE, dmin: f16::ONE, scales, qs: [0; QK_K / 2] };
        for (j, &pair) in pairs.iter().enumerate() {
            assert_eq!(block.scale_min(j), pair, "sub-block {j}");
        }
    }

    #[test]
    fn degenerate_blocks_encode_without_nan() {
        for fill in [0.0f32, 1.0, -3.0, 1e-9, 60000.0] {
            let x = [fill; QK_K];
            let mut out = [0f32; QK_K];
            quantize_block(&x).dequantize_block(&mut out);
            let tol = fill.abs() * 0.02 + 1e-6;
            assert!(out.iter().all(|v| (v - fill).abs() <= tol), "constant {fill}: {:?}", &out[..4]);
        }
    }
}
