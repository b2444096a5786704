//! gpt-fast's q8 weight format: symmetric int8 in blocks of 32 with one f16
//! scale per block, rows interleaved in tiles of 8 (docs/FORMAT.md, "dtypes").
//!
//! The packed order lets a matmul kernel stream one tile with one pointer and
//! share each block of activations between the tile's rows.

use half::f16;

use crate::dtype::{ActForm, DTypeTraits};

pub(crate) const TRAITS: DTypeTraits = DTypeTraits {
    id: 2,
    name: "q8",
    block_cols: BLOCK,
    block_bytes: BLOCK + 2,
    row_bytes: None,
    tile_rows: TILE_ROWS,
    precision: 8,
    act: ActForm::Q8,
    decode_row: |bytes, rows, cols, row, out| dequantize_row(bytes, &layout(rows, cols), row, out),
    encode: Some(|rows, cols, src, dst| quantize_packed(src, &layout(rows, cols), dst)),
    // GGUF's Q8_0 is these blocks row-major.
    ggml: Some(crate::ggml::GgmlType::Q8_0),
    repack_ggml: Some(|ggml, rows, cols, dst| {
        let row_bytes = cols / BLOCK * (2 + BLOCK);
        pack_q8_0_rows(&layout(rows, cols), |r| &ggml[r * row_bytes..][..row_bytes], dst)
    }),
};

fn layout(rows: usize, cols: usize) -> PackedQ8Layout {
    PackedQ8Layout::new(rows, cols).expect("q8 shape checked against the dtype table")
}

/// Values per quantization block along a row.
pub const BLOCK: usize = 32;
/// Rows interleaved in one tile.
pub const TILE_ROWS: usize = 8;
/// Bytes of int8 quants for one block of one whole tile.
pub const TILE_BLOCK_QUANT_BYTES: usize = TILE_ROWS * BLOCK;

/// Shape of a packed q8 matrix and where its two planes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedQ8Layout {
    /// Rows of the matrix (the last tile is padded to [`TILE_ROWS`]).
    pub rows: usize,
    /// Values per row, a multiple of [`BLOCK`].
    pub cols: usize,
    /// `ceil(rows / TILE_ROWS)`.
    pub tiles: usize,
    /// Blocks per row: `cols / BLOCK`.
    pub blocks_per_row: usize,
}

impl PackedQ8Layout {
    /// `None` if `cols` is not a multiple of [`BLOCK`] or the size overflows.
    pub fn new(rows: usize, cols: usize) -> Option<Self> {
        if !cols.is_multiple_of(BLOCK) {
            return None;
        }
        let layout = Self { rows, cols, tiles: rows.div_ceil(TILE_ROWS), blocks_per_row: cols / BLOCK };
        layout.total_bytes()?;
        Some(layout)
    }

    /// Bytes of the quants plane (`[tile][block][row in tile][32]` int8).
    pub fn quant_bytes(&self) -> usize {
        self.tiles * self.blocks_per_row * TILE_BLOCK_QUANT_BYTES
    }

    /// Bytes of the scales plane (`[tile][block][row in tile]` f16).
    pub fn scale_bytes(&self) -> usize {
        self.tiles * self.blocks_per_row * TILE_ROWS * 2
    }

    fn total_bytes(&self) -> Option<usize> {
        self.tiles.checked_mul(self.blocks_per_row)?.checked_mul(TILE_ROWS * (BLOCK + 2))
    }

    /// Size of the whole packed tensor in bytes.
    pub fn n_bytes(&self) -> usize {
        self.quant_bytes() + self.scale_bytes()
    }
}

/// Quantizes one block: returns the scale and writes the 32 quants.
///
/// The scale minimises the block's squared error, not just `max|x| / 127`:
/// for each candidate step near `max|x| / 127` the quants are rounded, the
/// least-squares scale for those quants (`Σ x q / Σ q²`) is rounded to f16,
/// and the candidate whose stored scale gives the smallest error wins (the
/// plain `max|x| / 127` is the first candidate, so the result is never worse).
/// Quants are computed against the stored scale, so dequantization sees
/// exactly what was meant. Conversion is offline: the search costs nothing
/// when the model runs.
pub fn quantize_block(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> f16 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        q.fill(0);
        return f16::ZERO;
    }
    let mut best = (f32::INFINITY, f16::ZERO);
    let mut trial = [0i8; BLOCK];
    // Steps from max|x|/127 to max|x|/(127 - 8): a larger step never helps.
    for k in 0..=16 {
        let step = amax / (127.0 - 0.5 * k as f32);
        let mut candidate = f16::from_f32(step);
        if k > 0 {
            round_to(x, 1.0 / step, &mut trial);
            let (xq, qq) = trial.iter().zip(x).fold((0f32, 0f32), |(a, b), (&qi, &xi)| {
                let qi = f32::from(qi);
                (a + xi * qi, b + qi * qi)
            });
            candidate = f16::from_f32(xq / qq);
        }
        let s = candidate.to_f32();
        if !(s > 0.0 && s.is_finite()) {
            continue;
        }
        round_to(x, 1.0 / s, &mut trial);
        let err: f32 = trial.iter().zip(x).map(|(&qi, &xi)| (xi - s * f32::from(qi)).powi(2)).sum();
        if err < best.0 {
            best = (err, candidate);
            q.copy_from_slice(&trial);
        }
    }
    best.1
}

/// `q = round(x × inv)` with ties away from zero, clamped to ±127.
fn round_to(x: &[f32; BLOCK], inv: f32, q: &mut [i8; BLOCK]) {
    for (qi, &xi) in q.iter_mut().zip(x) {
        *qi = (xi * inv).round().clamp(-127.0, 127.0) as i8;
    }
}

/// Quantizes a row-major `[rows, cols]` f32 matrix into the packed q8 layout.
///
/// `dst.len()` must be `layout.n_bytes()`.
pub fn quantize_packed(src: &[f32], layout: &PackedQ8Layout, dst: &mut [u8]) {
    assert_eq!(src.len(), layout.rows * layout.cols, "q8 pack: source size");
    assert_eq!(dst.len(), layout.n_bytes(), "q8 pack: destination size");
    let (quants, scales) = dst.split_at_mut(layout.quant_bytes());
    quants.fill(0);
    scales.fill(0);
    let mut block = [0f32; BLOCK];
    let mut q = [0i8; BLOCK];
    for row in 0..layout.rows {
        for b in 0..layout.blocks_per_row {
            let start = row * layout.cols + b * BLOCK;
            block.copy_from_slice(&src[start..start + BLOCK]);
            let scale = quantize_block(&block, &mut q);
            let (qoff, soff) = block_offsets(layout, row, b);
            quants[qoff..qoff + BLOCK].copy_from_slice(bytemuck::cast_slice(&q));
            scales[soff..soff + 2].copy_from_slice(&scale.to_bits().to_le_bytes());
        }
    }
}

/// Packs a `[rows, cols]` tensor of GGUF Q8_0 blocks, losslessly: Q8_0 is q8's
/// block (an f16 scale and 32 int8 quants, `x = d × q`) in GGUF's order, so
/// only the order changes. `gguf_row(r)` gives the bytes of destination row `r`
/// (`cols / 32 × 34` of them), so a caller can reorder or stack rows.
///
/// Returns `false`, leaving `dst` unspecified, if a quant is -128: q8 keeps
/// quants in [-127, 127] (docs/FORMAT.md), which its kernels' integer sums rely
/// on. ggml's quantizer never writes -128 (`q = round(x / (max|x| / 127))`).
pub fn pack_q8_0_rows<'a>(layout: &PackedQ8Layout, gguf_row: impl Fn(usize) -> &'a [u8], dst: &mut [u8]) -> bool {
    const GGUF_BLOCK_BYTES: usize = 2 + BLOCK;
    assert_eq!(dst.len(), layout.n_bytes(), "Q8_0 pack: destination size");
    let (quants, scales) = dst.split_at_mut(layout.quant_bytes());
    quants.fill(0);
    scales.fill(0);
    for row in 0..layout.rows {
        let src = gguf_row(row);
        assert_eq!(src.len(), layout.blocks_per_row * GGUF_BLOCK_BYTES, "Q8_0 pack: row {row} size");
        for (b, block) in src.chunks_exact(GGUF_BLOCK_BYTES).enumerate() {
            let (d, qs) = block.split_at(2);
            if qs.contains(&0x80) {
                return false;
            }
            let (qoff, soff) = block_offsets(layout, row, b);
            quants[qoff..qoff + BLOCK].copy_from_slice(qs);
            scales[soff..soff + 2].copy_from_slice(d);
        }
    }
    true
}

/// Byte offsets, within the quants plane and within the scales plane, of block
/// `b` of row `row`.
fn block_offsets(layout: &PackedQ8Layout, row: usize, b: usize) -> (usize, usize) {
    let tile = row / TILE_ROWS;
    let lane = row % TILE_ROWS;
    let group = tile * layout.blocks_per_row + b;
    (group * TILE_BLOCK_QUANT_BYTES + lane * BLOCK, (group * TILE_ROWS + lane) * 2)
}

/// Dequantizes row `row` of a packed q8 matrix into `out` (`layout.cols` values).
pub fn dequantize_row(packed: &[u8], layout: &PackedQ8Layout, row: usize, out: &mut [f32]) {
    assert!(row < layout.rows, "q8 row {row} out of {}", layout.rows);
    assert_eq!(out.len(), layout.cols, "q8 row: output size");
    assert_eq!(packed.len(), layout.n_bytes(), "q8 row: packed size");
    let (quants, scales) = packed.split_at(layout.quant_bytes());
    for (b, chunk) in out.chunks_exact_mut(BLOCK).enumerate() {
        let (qoff, soff) = block_offsets(layout, row, b);
        let scale = f16::from_bits(u16::from_le_bytes([scales[soff], scales[soff + 1]])).to_f32();
        for (o, &q) in chunk.iter_mut().zip(&quants[qoff..qoff + BLOCK]) {
            *o = scale * f32::from(q as i8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn layout_requires_whole_blocks() {
        assert!(PackedQ8Layout::new(8, 33).is_none());
        let l = PackedQ8Layout::new(9, 64).unwrap();
        assert_eq!(l.tiles, 2);
        assert_eq!(l.n_bytes(), 2 * 2 * 8 * 34);
        assert!(PackedQ8Layout::new(usize::MAX, 32).is_none());
    }

    #[test]
    fn round_trip_error_is_within_half_a_step() {
        // Under Miri (about 1000 times slower), one short tile and one full
        // tile plus a short one.
        let row_counts: &[usize] = if cfg!(miri) { &[1, 9] } else { &[1, 7, 8, 9, 17] };
        for &rows in row_counts {
            let cols = 96;
            let src = pseudo_random(rows * cols, rows as u32);
            let layout = PackedQ8Layout::new(rows, cols).unwrap();
            let mut packed = vec![0u8; layout.n_bytes()];
            quantize_packed(&src, &layout, &mut packed);
            let mut row_out = vec![0f32; cols];
            for r in 0..rows {
                dequantize_row(&packed, &layout, r, &mut row_out);
                for b in 0..cols / BLOCK {
                    let x = &src[r * cols + b * BLOCK..][..BLOCK];
                    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                    // Half a quantization step, plus the f16 rounding of the scale.
                    let tol = amax / 127.0 * 0.5 + amax * 1e-3;
                    for (i, &v) in x.iter().enumerate() {
                        let got = row_out[b * BLOCK + i];
                        assert!((got - v).abs() <= tol, "row {r} block {b}: {got} vs {v}");
                    }
                }
            }
        }
    }

    fn block_error(x: &[f32; BLOCK], q: &[i8; BLOCK], scale: f32) -> f32 {
        x.iter().zip(q).map(|(&xi, &qi)| (xi - scale * f32::from(qi)).powi(2)).sum()
    }

    #[test]
    fn zero_block_and_extremes() {
        let mut x = [0f32; BLOCK];
        let mut q = [1i8; BLOCK];
        assert_eq!(quantize_block(&x, &mut q).to_f32(), 0.0);
        assert!(q.iter().all(|&v| v == 0));
        x[3] = -1000.0;
        x[4] = 1000.0;
        x[5] = 1000.0 / 254.0;
        let s = quantize_block(&x, &mut q).to_f32();
        assert!(s > 0.0 && q[3] == -q[4] && q[4] >= 119, "extremes keep their sign and most of the range");
        for (i, (&xi, &qi)) in x.iter().zip(&q).enumerate() {
            assert_eq!(
                qi,
                (xi / s).round().clamp(-127.0, 127.0) as i8,
                "quant {i} is rounded against the stored scale"
            );
        }
    }

    #[test]
    fn searched_scale_is_never_worse_than_max_over_127() {
        let seeds = if cfg!(miri) { 1..8 } else { 1..200u32 };
        for seed in seeds {
            let x: [f32; BLOCK] = pseudo_random(BLOCK, seed).try_into().unwrap();
            let mut q = [0i8; BLOCK];
            let s = quantize_block(&x, &mut q).to_f32();
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let plain = f16::from_f32(amax / 127.0).to_f32();
            let plain_q: [i8; BLOCK] = std::array::from_fn(|i| (x[i] / plain).round().clamp(-127.0, 127.0) as i8);
            assert!(block_error(&x, &q, s) <= block_error(&x, &plain_q, plain), "seed {seed}");
        }
    }

    #[test]
    fn q8_0_packs_losslessly() {
        use crate::ggml::{dequantize, GgmlType};
        let (rows, cols) = (11, 96);
        let mut s = 12345u32;
        let mut gguf = Vec::new();
        for _ in 0..rows * cols / BLOCK {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            gguf.extend_from_slice(&f16::from_f32((s >> 8) as f32 / 16777216.0 - 0.5).to_bits().to_le_bytes());
            for _ in 0..BLOCK {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                // Any quant in [-127, 127]: -128 (0x80) is refused below.
                gguf.push(match (s >> 24) as u8 {
                    0x80 => 0x81,
                    q => q,
                });
            }
        }
        let mut want = vec![0f32; rows * cols];
        dequantize(GgmlType::Q8_0, &gguf, &mut want).unwrap();
        let layout = PackedQ8Layout::new(rows, cols).unwrap();
        let row_bytes = cols / BLOCK * (BLOCK + 2);
        let mut packed = vec![0xAA; layout.n_bytes()];
        assert!(pack_q8_0_rows(&layout, |r| &gguf[r * row_bytes..][..row_bytes], &mut packed));
        let mut got = vec![0f32; cols];
        for r in 0..rows {
            dequantize_row(&packed, &layout, r, &mut got);
            assert!(got.iter().zip(&want[r * cols..]).all(|(g, w)| g.to_bits() == w.to_bits()), "row {r}");
        }
        gguf[5] = 0x80;
        assert!(!pack_q8_0_rows(&layout, |r| &gguf[r * row_bytes..][..row_bytes], &mut packed));
    }

    #[test]
    fn padding_rows_are_zero() {
        let layout = PackedQ8Layout::new(3, 32).unwrap();
        let mut packed = vec![0xAAu8; layout.n_bytes()];
        quantize_packed(&[1.0; 96], &layout, &mut packed);
        let (quants, scales) = packed.split_at(layout.quant_bytes());
        assert!(quants[3 * BLOCK..].iter().all(|&b| b == 0));
        assert!(scales[3 * 2..].iter().all(|&b| b == 0));
    }
}
