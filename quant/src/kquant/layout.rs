//! The packed tile layout shared by the K-quant formats: which bytes of a GGUF
//! super-block go where in a tile, and the repack / dequantize loops.

use crate::ggml::{GgmlType, QK_K};

/// Rows interleaved in one tile (as gpt-fast's q8).
pub const TILE_ROWS: usize = 8;

/// Largest GGUF super-block among the formats here (Q6_K: 210 bytes).
pub const MAX_BLOCK_BYTES: usize = 256;

/// One field of a GGUF super-block: `len` bytes at `offset`, interleaved
/// across a tile's rows in units of `unit` bytes.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// Byte offset of the field in the GGUF super-block.
    pub offset: usize,
    /// Its length in bytes; a multiple of `unit`.
    pub len: usize,
    /// Bytes of one row's field kept together before the next row's.
    pub unit: usize,
}

impl Field {
    /// Where this field starts in a tile's record of one super-block, when it
    /// follows `fields` (the fields before it in packed order).
    pub const fn tile_offset(fields: &[Field], index: usize) -> usize {
        let mut start = 0;
        let mut i = 0;
        while i < index {
            start += fields[i].len * TILE_ROWS;
            i += 1;
        }
        start
    }
}

/// A K-quant block type as stored in GGUF, and how its tiles are packed.
pub trait KFormat {
    /// ggml's name for the type.
    const NAME: &'static str;
    /// The GGUF tensor type this format packs.
    const GGML_TYPE: GgmlType;
    /// Bytes of one super-block of one row, in GGUF and packed alike.
    const BLOCK_BYTES: usize;
    /// The super-block's fields in their packed order; together they cover
    /// `0..BLOCK_BYTES` exactly once.
    const FIELDS: &'static [Field];
    /// Decodes one GGUF super-block as ggml does (`dequantize_row_*`).
    fn dequantize_block(block: &[u8], out: &mut [f32; QK_K]);
}

/// Shape of a packed K-quant matrix: `[tile][super-block]` records of
/// `TILE_ROWS × block_bytes` bytes each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedKLayout {
    /// Rows of the matrix (the last tile is padded to `TILE_ROWS`).
    pub rows: usize,
    /// Values per row, a multiple of 256.
    pub cols: usize,
    /// `ceil(rows / TILE_ROWS)`.
    pub tiles: usize,
    /// Super-blocks per row: `cols / 256`.
    pub superblocks: usize,
    /// Bytes of one super-block of one row.
    pub block_bytes: usize,
}

impl PackedKLayout {
    /// `None` if `cols` is not a multiple of 256 or the size overflows.
    pub fn new<F: KFormat>(rows: usize, cols: usize) -> Option<Self> {
        if !cols.is_multiple_of(QK_K) {
            return None;
        }
        let layout =
            Self { rows, cols, tiles: rows.div_ceil(TILE_ROWS), superblocks: cols / QK_K, block_bytes: F::BLOCK_BYTES };
        layout.tiles.checked_mul(layout.superblocks)?.checked_mul(TILE_ROWS * F::BLOCK_BYTES)?;
        Some(layout)
    }

    /// Bytes of one super-block of a whole tile.
    pub fn record_bytes(&self) -> usize {
        TILE_ROWS * self.block_bytes
    }

    /// Bytes of one tile (all its super-blocks).
    pub fn tile_bytes(&self) -> usize {
        self.superblocks * self.record_bytes()
    }

    /// Size of the whole packed tensor in bytes: the GGUF tensor's, plus the
    /// zero rows that pad the last tile.
    pub fn n_bytes(&self) -> usize {
        self.tiles * self.tile_bytes()
    }

    /// Bytes of the GGUF tensor this layout packs.
    pub fn gguf_bytes(&self) -> usize {
        self.rows * self.superblocks * self.block_bytes
    }

    fn record(&self, row: usize, superblock: usize) -> usize {
        ((row / TILE_ROWS) * self.superblocks + superblock) * self.record_bytes()
    }
}

/// Calls `f(block_range, packed_range)` for every run of bytes that moves
/// between a GGUF super-block and lane `lane` of its tile record.
fn for_each_unit<F: KFormat>(lane: usize, mut f: impl FnMut(std::ops::Range<usize>, std::ops::Range<usize>)) {
    for (i, field) in F::FIELDS.iter().enumerate() {
        let start = Field::tile_offset(F::FIELDS, i);
        for u in 0..field.len / field.unit {
            let src = field.offset + u * field.unit;
            let dst = start + (u * TILE_ROWS + lane) * field.unit;
            f(src..src + field.unit, dst..dst + field.unit);
        }
    }
}

/// Repacks a GGUF K-quant tensor (`rows` rows of `cols / 256` super-blocks)
/// into tiles. The padding rows of a last, partial tile are zero.
///
/// `src.len()` must be `layout.gguf_bytes()` and `dst.len()` `layout.n_bytes()`.
pub fn repack<F: KFormat>(src: &[u8], layout: &PackedKLayout, dst: &mut [u8]) {
    assert_eq!(layout.block_bytes, F::BLOCK_BYTES, "{} repack: layout of another type", F::NAME);
    assert_eq!(src.len(), layout.gguf_bytes(), "{} repack: source size", F::NAME);
    assert_eq!(dst.len(), layout.n_bytes(), "{} repack: destination size", F::NAME);
    dst.fill(0);
    for (i, block) in src.chunks_exact(F::BLOCK_BYTES).enumerate() {
        let (row, sb) = (i / layout.superblocks, i % layout.superblocks);
        let record = &mut dst[layout.record(row, sb)..][..layout.record_bytes()];
        for_each_unit::<F>(row % TILE_ROWS, |from, to| record[to].copy_from_slice(&block[from]));
    }
}

/// Super-block `superblock` of row `row`, gathered back into GGUF's byte
/// order (`out[..BLOCK_BYTES]`).
pub fn gather_block<F: KFormat>(
    packed: &[u8],
    layout: &PackedKLayout,
    row: usize,
    superblock: usize,
    out: &mut [u8; MAX_BLOCK_BYTES],
) {
    let record = &packed[layout.record(row, superblock)..][..layout.record_bytes()];
    for_each_unit::<F>(row % TILE_ROWS, |to, from| out[to].copy_from_slice(&record[from]));
}

/// Dequantizes row `row` of a packed matrix into `out` (`layout.cols` values):
/// bit for bit what ggml gives for the GGUF row.
pub fn dequantize_row<F: KFormat>(packed: &[u8], layout: &PackedKLayout, row: usize, out: &mut [f32]) {
    assert!(row < layout.rows, "{} row {row} out of {}", F::NAME, layout.rows);
    assert_eq!(out.len(), layout.cols, "{} row: output size", F::NAME);
    assert_eq!(packed.len(), layout.n_bytes(), "{} row: packed size", F::NAME);
    let mut block = [0u8; MAX_BLOCK_BYTES];
    for (sb, chunk) in out.chunks_exact_mut(QK_K).enumerate() {
        gather_block::<F>(packed, layout, row, sb, &mut block);
        F::dequantize_block(&block[..F::BLOCK_BYTES], chunk.try_into().expect("chunks of QK_K"));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kquant::{q4_k::Q4K, q5_k::Q5K, q6_k::Q6K};

    fn fields_cover_the_block<F: KFormat>() {
        assert!(F::BLOCK_BYTES <= MAX_BLOCK_BYTES);
        let mut seen = vec![0u8; F::BLOCK_BYTES];
        for f in F::FIELDS {
            assert_eq!(f.len % f.unit, 0, "{}: field at {} is not whole units", F::NAME, f.offset);
            seen[f.offset..f.offset + f.len].iter_mut().for_each(|s| *s += 1);
        }
        assert!(seen.iter().all(|&s| s == 1), "{}: fields must cover every byte once", F::NAME);
    }

    #[test]
    fn every_format_covers_its_block() {
        fields_cover_the_block::<Q4K>();
        fields_cover_the_block::<Q5K>();
        fields_cover_the_block::<Q6K>();
    }

    /// Random bytes with valid (finite) f16 fields are valid blocks of every
    /// K-quant: each bit pattern of the other fields means some quant.
    pub(crate) fn random_tensor<F: KFormat>(rows: usize, cols: usize, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut bytes: Vec<u8> = (0..rows * cols / QK_K * F::BLOCK_BYTES)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect();
        // Keep the f16 super-block scales small and finite (exponent bits below 0x7C00).
        for block in bytes.chunks_exact_mut(F::BLOCK_BYTES) {
            for f in F::FIELDS.iter().filter(|f| f.unit == 2) {
                block[f.offset + 1] &= 0x23;
            }
        }
        bytes
    }

    fn round_trip<F: KFormat>() {
        // Under Miri (about 1000 times slower), one short tile and one full
        // tile plus a short one.
        let row_counts: &[usize] = if cfg!(miri) { &[1, 9] } else { &[1, 7, 8, 9, 17] };
        for &rows in row_counts {
            let cols = 512;
            let src = random_tensor::<F>(rows, cols, rows as u64);
            let layout = PackedKLayout::new::<F>(rows, cols).unwrap();
            let mut packed = vec![0xAAu8; layout.n_bytes()];
            repack::<F>(&src, &layout, &mut packed);
            let mut block = [0u8; MAX_BLOCK_BYTES];
            for row in 0..rows {
                for sb in 0..layout.superblocks {
                    gather_block::<F>(&packed, &layout, row, sb, &mut block);
                    let want = &src[(row * layout.superblocks + sb) * F::BLOCK_BYTES..][..F::BLOCK_BYTES];
                    assert_eq!(&block[..F::BLOCK_BYTES], want, "{} row {row} super-block {sb}", F::NAME);
                }
            }
            let mut want = vec![0f32; rows * cols];
            crate::ggml::dequantize(F::GGML_TYPE, &src, &mut want).unwrap();
            let mut row_out = vec![0f32; cols];
            for row in 0..rows {
                dequantize_row::<F>(&packed, &layout, row, &mut row_out);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&row_out), bits(&want[row * cols..][..cols]), "{} row {row}", F::NAME);
            }
            // The padding rows of the last tile are zero.
            let last_tile = &packed[(layout.tiles - 1) * layout.tile_bytes()..];
            let mut padding = vec![0u8; MAX_BLOCK_BYTES];
            for lane in rows % TILE_ROWS..if rows.is_multiple_of(TILE_ROWS) { 0 } else { TILE_ROWS } {
                for sb in 0..layout.superblocks {
                    let record = &last_tile[sb * layout.record_bytes()..][..layout.record_bytes()];
                    for_each_unit::<F>(lane, |to, from| padding[to].copy_from_slice(&record[from]));
                    assert!(padding.iter().all(|&b| b == 0), "{} padding lane {lane}", F::NAME);
                }
            }
        }
    }

    #[test]
    fn repack_round_trips_every_byte() {
        round_trip::<Q4K>();
        round_trip::<Q5K>();
        round_trip::<Q6K>();
    }

    #[test]
    fn layout_requires_whole_superblocks() {
        assert!(PackedKLayout::new::<Q4K>(8, 640).is_none());
        let l = PackedKLayout::new::<Q6K>(9, 512).unwrap();
        assert_eq!((l.tiles, l.superblocks), (2, 2));
        assert_eq!(l.n_bytes(), 2 * 2 * 8 * 210);
        assert_eq!(l.gguf_bytes(), 9 * 2 * 210);
        assert!(PackedKLayout::new::<Q4K>(usize::MAX, 256).is_none());
    }
}
