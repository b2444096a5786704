//! q4_kr: gpt-fast's own 4-bit type for rows that are not whole 256-value
//! super-blocks (docs/FORMAT.md, "q4_kr"). Q4_K's sub-blocks (32 values,
//! 4-bit quants, a 6-bit scale `sc` and minimum `m`) under one f16 `d`,
//! `dmin` per row instead of per 256 values: `x = d·sc·q − dmin·m`, 4.375
//! bits per weight plus 32 bits per row (4.5 on SmolLM2's 576-wide rows,
//! 4.45 on Gemma 3's 640-wide ones), where Q4_K cannot be used at all.
//!
//! A tile of [`TILE_ROWS`] rows is: `d[8]`, `dmin[8]` (f16), then the row's
//! sub-blocks in groups of 8, each a Q4_K super-block record without its
//! `d`, `dmin` (`scales[12][8]`, ggml's `get_scale_min_k4` packing, then
//! `qs[32][8][4]`, low nibbles sub-block `2g`, high `2g + 1`), so a kernel
//! reads a group as it reads a Q4_K super-block; then the last `s < 8`
//! sub-blocks, if any, as a cut record: `scales[8][8]` when `s <= 4` (the
//! bytes sub-blocks 0..4 use), else `[12][8]`, and `qs[16·⌈s/2⌉/4][8][4]`.

use half::f16;

use crate::dtype::{ActForm, DTypeTraits};
use crate::kquant::q4_k::{quantize_shared, SharedScales};

/// Rows interleaved in one tile.
pub const TILE_ROWS: usize = 8;
/// Values per sub-block (one scale and minimum).
pub const SUB: usize = 32;
/// Sub-blocks per group (a Q4_K super-block's worth).
pub const GROUP_SUBS: usize = 8;
/// Bytes of the tile header: `d[8]`, `dmin[8]`, f16.
pub const HEADER_BYTES: usize = 4 * TILE_ROWS;
/// Offset of `dmin[8]` in the tile header.
pub const DMIN: usize = 2 * TILE_ROWS;
/// Bytes of one row's packed scales and minimums of a whole group.
pub const GROUP_SCALE_BYTES: usize = 12;
/// Bytes of one row's quants of a whole group.
pub const GROUP_QUANT_BYTES: usize = GROUP_SUBS * SUB / 2;
/// Bytes of one whole group's record of a tile.
pub const GROUP_RECORD_BYTES: usize = TILE_ROWS * (GROUP_SCALE_BYTES + GROUP_QUANT_BYTES);

pub(crate) const TRAITS: DTypeTraits = DTypeTraits {
    id: 3,
    name: "q4_kr",
    block_cols: SUB,
    // Nominal (a sub-block's quants and scales); `row_bytes` is exact.
    block_bytes: 18,
    row_bytes: Some(|cols| Q4KrLayout::new(TILE_ROWS, cols).map(|l| l.tile_bytes() / TILE_ROWS)),
    tile_rows: TILE_ROWS,
    precision: 4,
    act: ActForm::Q8Sums,
    decode_row: |bytes, rows, cols, row, out| layout(rows, cols).decode_row(bytes, row, out),
    encode: Some(encode),
    ggml: None,
    repack_ggml: None,
};

fn layout(rows: usize, cols: usize) -> Q4KrLayout {
    Q4KrLayout::new(rows, cols).expect("q4_kr shape checked against the dtype table")
}

/// Shape of a packed q4_kr matrix and where each part of a tile is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Q4KrLayout {
    /// Rows of the matrix (the last tile is padded to [`TILE_ROWS`]).
    pub rows: usize,
    /// Values per row, a multiple of [`SUB`].
    pub cols: usize,
    /// `ceil(rows / TILE_ROWS)`.
    pub tiles: usize,
    /// Whole groups of [`GROUP_SUBS`] sub-blocks per row.
    pub groups: usize,
    /// Sub-blocks after the whole groups (`0..8`).
    pub tail_subs: usize,
}

impl Q4KrLayout {
    /// `None` if `cols` is not a multiple of [`SUB`] or the size overflows.
    pub fn new(rows: usize, cols: usize) -> Option<Self> {
        if !cols.is_multiple_of(SUB) {
            return None;
        }
        let subs = cols / SUB;
        let layout = Self {
            rows,
            cols,
            tiles: rows.div_ceil(TILE_ROWS),
            groups: subs / GROUP_SUBS,
            tail_subs: subs % GROUP_SUBS,
        };
        layout.groups.checked_mul(GROUP_RECORD_BYTES)?.checked_mul(layout.tiles)?;
        Some(layout)
    }

    /// Bytes of one row's scales in the cut group: 8 for up to 4 sub-blocks
    /// (ggml's packing keeps sub-blocks 0..4 in bytes 0..8), else 12.
    pub fn tail_scale_bytes(&self) -> usize {
        match self.tail_subs {
            0 => 0,
            1..=4 => 8,
            _ => GROUP_SCALE_BYTES,
        }
    }

    /// Bytes of one row's quants in the cut group: 16 per sub-block, a pair
    /// sharing 32 bytes (low and high nibbles).
    pub fn tail_quant_bytes(&self) -> usize {
        self.tail_subs.div_ceil(2) * SUB
    }

    /// Where group `g`'s record starts in a tile (`g == groups`: the cut one).
    pub fn group_offset(&self, g: usize) -> usize {
        HEADER_BYTES + g * GROUP_RECORD_BYTES
    }

    /// Offset of group `g`'s quants in a tile.
    pub fn quants_offset(&self, g: usize) -> usize {
        let scale_bytes = if g < self.groups { GROUP_SCALE_BYTES } else { self.tail_scale_bytes() };
        self.group_offset(g) + TILE_ROWS * scale_bytes
    }

    /// Bytes of one tile.
    pub fn tile_bytes(&self) -> usize {
        self.group_offset(self.groups) + TILE_ROWS * (self.tail_scale_bytes() + self.tail_quant_bytes())
    }

    /// Size of the whole packed tensor in bytes.
    pub fn n_bytes(&self) -> usize {
        self.tiles * self.tile_bytes()
    }

    /// Sub-blocks in group `g`.
    fn subs_in(&self, g: usize) -> usize {
        if g < self.groups {
            GROUP_SUBS
        } else {
            self.tail_subs
        }
    }

    /// The byte offsets of one row's scale byte `k` and quant byte `k` of
    /// group `g` in the tensor (scales 1-byte units, quants 4-byte units
    /// interleaved across the tile's rows).
    fn scale_at(&self, row: usize, g: usize, k: usize) -> usize {
        (row / TILE_ROWS) * self.tile_bytes() + self.group_offset(g) + k * TILE_ROWS + row % TILE_ROWS
    }

    fn quant_at(&self, row: usize, g: usize, k: usize) -> usize {
        let unit = k / 4;
        (row / TILE_ROWS) * self.tile_bytes() + self.quants_offset(g) + (unit * TILE_ROWS + row % TILE_ROWS) * 4 + k % 4
    }

    fn header_at(&self, row: usize, field: usize) -> usize {
        (row / TILE_ROWS) * self.tile_bytes() + field + 2 * (row % TILE_ROWS)
    }

    /// One row's `d`, `dmin`, and per sub-block `(sc, m)` and quants.
    pub fn read_row(&self, packed: &[u8], row: usize) -> SharedScales {
        let f16_at = |at: usize| f16::from_le_bytes([packed[at], packed[at + 1]]);
        let mut fit = SharedScales {
            d: f16_at(self.header_at(row, 0)),
            dmin: f16_at(self.header_at(row, DMIN)),
            scale_min: Vec::with_capacity(self.cols / SUB),
            quants: vec![0; self.cols],
        };
        for g in 0..=self.groups {
            let mut scales = [0u8; GROUP_SCALE_BYTES];
            let n_scales = if g < self.groups { GROUP_SCALE_BYTES } else { self.tail_scale_bytes() };
            for (k, s) in scales.iter_mut().enumerate().take(n_scales) {
                *s = packed[self.scale_at(row, g, k)];
            }
            for j in 0..self.subs_in(g) {
                fit.scale_min.push(crate::ggml::scale_min_k4(j, &scales));
                let v0 = (g * GROUP_SUBS + j) * SUB;
                for l in 0..SUB {
                    let byte = packed[self.quant_at(row, g, SUB * (j / 2) + l)];
                    fit.quants[v0 + l] = (byte >> (4 * (j % 2))) & 0x0F;
                }
            }
        }
        fit
    }

    /// Row `row` to f32 (`out` is `cols` long).
    pub fn decode_row(&self, packed: &[u8], row: usize, out: &mut [f32]) {
        self.read_row(packed, row).dequantize(out);
    }

    /// Writes one row's fit into its tile.
    fn write_row(&self, fit: &SharedScales, row: usize, dst: &mut [u8]) {
        dst[self.header_at(row, 0)..][..2].copy_from_slice(&fit.d.to_le_bytes());
        dst[self.header_at(row, DMIN)..][..2].copy_from_slice(&fit.dmin.to_le_bytes());
        for g in 0..=self.groups {
            let mut scales = [0u8; GROUP_SCALE_BYTES];
            for j in 0..self.subs_in(g) {
                let (sc, m) = fit.scale_min[g * GROUP_SUBS + j];
                crate::kquant::q4_k::set_scale_min(&mut scales, j, sc, m);
                let v0 = (g * GROUP_SUBS + j) * SUB;
                for l in 0..SUB {
                    dst[self.quant_at(row, g, SUB * (j / 2) + l)] |= fit.quants[v0 + l] << (4 * (j % 2));
                }
            }
            let n_scales = if g < self.groups { GROUP_SCALE_BYTES } else { self.tail_scale_bytes() };
            for (k, &s) in scales.iter().enumerate().take(n_scales) {
                dst[self.scale_at(row, g, k)] = s;
            }
        }
    }
}

/// A row-major `[rows, cols]` f32 tensor to packed q4_kr (`dst` zeroed, the
/// packed size): each row searched by [`quantize_shared`] (in parallel), then
/// packed in order.
fn encode(rows: usize, cols: usize, src: &[f32], dst: &mut [u8]) {
    use rayon::prelude::*;
    let layout = layout(rows, cols);
    if cols == 0 {
        return;
    }
    let fits: Vec<SharedScales> = src.par_chunks_exact(cols).map(quantize_shared).collect();
    for (row, fit) in fits.iter().enumerate() {
        layout.write_row(fit, row, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affine::tests::test_block;
    use crate::DType;

    #[test]
    fn sizes_are_at_most_four_and_a_half_bits_on_576_and_640_wide_rows() {
        for (cols, bytes_per_row) in [(576, 4 + 2 * 140 + 8 + 32), (640, 4 + 2 * 140 + 8 + 64), (224, 4 + 12 + 128)] {
            let n = DType::Q4_KR.n_bytes(16, cols as u64).unwrap() as usize;
            assert_eq!(n, 16 * bytes_per_row, "{cols} columns");
            if cols > 256 {
                assert!(
                    n * 8 <= 16 * cols * 9 / 2,
                    "{cols} columns: {} bits per weight",
                    n as f64 * 8.0 / (16 * cols) as f64
                );
            }
        }
        assert_eq!(DType::Q4_KR.n_bytes(8, 100), None);
    }

    #[test]
    fn packing_keeps_the_rows_search_exactly_and_the_error_small() {
        // Rows of 576 (2 groups + 2), 640 (+4), 224 (0 groups + 7), 256;
        // 11 rows: a cut last tile.
        for cols in [576usize, 640, 224, 256] {
            let rows = 11;
            let src: Vec<f32> = (0..rows * cols / 32).flat_map(|b| test_block(32, 7000 + b as u32)).collect();
            let mut bytes = Vec::new();
            DType::Q4_KR.encode(rows, cols, &src, &mut bytes);
            let back = DType::Q4_KR.decode(&bytes, rows, cols);
            for (r, (x, y)) in src.chunks_exact(cols).zip(back.chunks_exact(cols)).enumerate() {
                let mut want = vec![0f32; cols];
                quantize_shared(x).dequantize(&mut want);
                assert_eq!(y, &want[..], "{cols} columns, row {r}: packing changed the values");
                let err: f32 = x.iter().zip(y).map(|(a, b)| (a - b).powi(2)).sum();
                let energy: f32 = x.iter().map(|a| a * a).sum();
                assert!(err < 0.01 * energy, "{cols} columns, row {r}: error {err} of {energy}");
            }
            let padding = &bytes[layout(rows, cols).tile_bytes()..];
            assert!(padding.iter().any(|&b| b != 0), "{cols}: the second tile is written");
        }
    }

    #[test]
    fn every_byte_of_a_tile_belongs_to_one_field() {
        for cols in [32usize, 64, 160, 224, 256, 576, 640, 768] {
            let l = layout(TILE_ROWS, cols);
            let mut owner = vec![0u32; l.tile_bytes()];
            for row in 0..TILE_ROWS {
                owner[l.header_at(row, 0)] += 1;
                owner[l.header_at(row, 0) + 1] += 1;
                owner[l.header_at(row, DMIN)] += 1;
                owner[l.header_at(row, DMIN) + 1] += 1;
                for g in 0..=l.groups {
                    let (s, q) = if g < l.groups {
                        (GROUP_SCALE_BYTES, GROUP_QUANT_BYTES)
                    } else {
                        (l.tail_scale_bytes(), l.tail_quant_bytes())
                    };
                    (0..s).for_each(|k| owner[l.scale_at(row, g, k)] += 1);
                    (0..q).for_each(|k| owner[l.quant_at(row, g, k)] += 1);
                }
            }
            assert!(owner.iter().all(|&n| n == 1), "{cols} columns: {owner:?}");
        }
    }
}
