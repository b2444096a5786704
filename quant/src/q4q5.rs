//! GGUF's 4- and 5-bit block types of 32 values (Q4_0, Q4_1, Q5_0, Q5_1) as
//! gpt-fast stores them: the same fields, repacked into planes with rows
//! interleaved in tiles of 8, as q8 is (docs/FORMAT.md, "dtypes").
//!
//! Nothing is re-quantized: every block keeps its scale, minimum, nibbles and
//! fifth bits, so a packed tensor dequantizes to exactly the values of the
//! GGUF it came from ([`dequantize_row`] rebuilds each GGUF block and decodes
//! it with ggml's own formula, [`crate::ggml`]).
//!
//! Per tile of 8 rows and block of 32 columns, the kernels want the 8 rows'
//! nibbles side by side (8 × 16 bytes, two rows per 256-bit load) and their
//! scales in one 16-byte load; planes keep each of those contiguous and the
//! nibble plane 64-byte aligned. Within a row's 16 bytes the nibble order is
//! GGUF's: value `j < 16` is the low nibble of byte `j`, value `j + 16` its
//! high nibble, so the low nibbles line up with the block's first 16
//! activations and the high nibbles with the last 16.
//!
//! The fifth bits of Q5_0/Q5_1 are rearranged per tile and block
//! ([`fifth_bit_at`]): a kernel takes the bits of the values it holds in one
//! register with one shift and mask of the tile-block's 32 bytes, instead of
//! gathering them bit by bit from each row's GGUF `qh` (which held AVX2's
//! Q5_0 GEMV to half the read bandwidth).

use crate::dtype::{ActForm, DTypeTraits};
use half::f16;

use crate::ggml::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, GgmlType};

/// Values per block along a row.
pub const BLOCK: usize = 32;
/// Rows interleaved in one tile.
pub const TILE_ROWS: usize = 8;
/// Nibble bytes of one block of one row.
pub const ROW_NIBBLE_BYTES: usize = BLOCK / 2;
/// Nibble bytes of one block of one whole tile.
pub const TILE_BLOCK_NIBBLE_BYTES: usize = TILE_ROWS * ROW_NIBBLE_BYTES;
/// Fifth-bit bytes of one block of one whole tile (Q5_0/Q5_1).
pub const TILE_BLOCK_FIFTH_BYTES: usize = TILE_ROWS * BLOCK / 8;

/// Where the fifth bit of value `i` (`< 32`) of a tile's row `row` (`< 8`)
/// lies in the tile-block's [`TILE_BLOCK_FIFTH_BYTES`]: `(byte, bit)`.
///
/// Byte `16 s + j` holds the bits of byte `j` of the nibbles of the rows
/// `2p + s` (`s` = 0, 1): bit `2p` for its low nibble (value `j`), bit
/// `2p + 1` for its high one (value `j + 16`). So the 32 bytes line up with
/// any two rows' nibble bytes `(2p, 2p + 1)` loaded side by side, and the
/// bits of the values one mask or shift of the nibbles gives are one bit
/// position: AVX2 and NEON shift that bit to `0x10`, AVX-512 tests it into
/// a byte mask.
pub const fn fifth_bit_at(row: usize, i: usize) -> (usize, u32) {
    let (pair, side) = (row / 2, row % 2);
    (16 * side + i % 16, (2 * pair + i / 16) as u32)
}

/// Which of GGUF's four types a packed tensor holds; each quant `q` (4 or 5
/// bits, unsigned) decodes to `(q - offset) × d` or, with a minimum,
/// `q × d + m`.
#[allow(non_camel_case_types)] // ggml's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// 4-bit, `(q - 8) × d`.
    Q4_0,
    /// 4-bit, `q × d + m`.
    Q4_1,
    /// 5-bit, `(q - 16) × d`.
    Q5_0,
    /// 5-bit, `q × d + m`.
    Q5_1,
}

impl Kind {
    /// Every kind, in GGUF id order.
    pub const ALL: [Kind; 4] = [Kind::Q4_0, Kind::Q4_1, Kind::Q5_0, Kind::Q5_1];

    /// The GGUF type this kind repacks.
    pub fn ggml(self) -> GgmlType {
        match self {
            Kind::Q4_0 => GgmlType::Q4_0,
            Kind::Q4_1 => GgmlType::Q4_1,
            Kind::Q5_0 => GgmlType::Q5_0,
            Kind::Q5_1 => GgmlType::Q5_1,
        }
    }

    /// The dtype a tensor of this kind is stored as.
    pub fn dtype(self) -> crate::DType {
        use crate::DType;
        match self {
            Kind::Q4_0 => DType::Q4_0,
            Kind::Q4_1 => DType::Q4_1,
            Kind::Q5_0 => DType::Q5_0,
            Kind::Q5_1 => DType::Q5_1,
        }
    }

    /// The kind that repacks GGUF type `ty`; `None` for every other type.
    pub fn from_ggml(ty: GgmlType) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.ggml() == ty)
    }

    /// ggml's name for it ("Q4_0", …).
    pub fn name(self) -> &'static str {
        self.ggml().name()
    }

    /// Whether each block has an f16 minimum `m` (`q × d + m`).
    pub fn has_min(self) -> bool {
        matches!(self, Kind::Q4_1 | Kind::Q5_1)
    }

    /// Whether quants have a fifth bit (the `qh` plane).
    pub fn has_high_bits(self) -> bool {
        matches!(self, Kind::Q5_0 | Kind::Q5_1)
    }

    /// What is subtracted from a quant before scaling, for the kinds without a
    /// minimum (8 for Q4_0, 16 for Q5_0), 0 for the others.
    pub fn offset(self) -> i32 {
        match self {
            Kind::Q4_0 => 8,
            Kind::Q5_0 => 16,
            Kind::Q4_1 | Kind::Q5_1 => 0,
        }
    }

    /// Bytes of one GGUF block.
    pub fn gguf_block_bytes(self) -> usize {
        self.ggml().type_size()
    }
}

/// Shape of a packed matrix and where its planes are. In order, each
/// `[tile][block][row in tile]`:
/// 1. nibbles, 16 bytes per row and block (GGUF's `qs`);
/// 2. Q5_0/Q5_1 only: fifth bits, [`TILE_BLOCK_FIFTH_BYTES`] per tile and
///    block (GGUF's `qh` of its 8 rows, each bit where [`fifth_bit_at`] says);
/// 3. scales `d`, f16;
/// 4. Q4_1/Q5_1 only: minimums `m`, f16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedLayout {
    /// The GGUF type the blocks are.
    pub kind: Kind,
    /// Rows of the matrix (the last tile is padded to [`TILE_ROWS`]).
    pub rows: usize,
    /// Values per row, a multiple of [`BLOCK`].
    pub cols: usize,
    /// `ceil(rows / TILE_ROWS)`.
    pub tiles: usize,
    /// `cols / BLOCK`.
    pub blocks_per_row: usize,
}

/// Byte ranges of the planes of one packed tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planes {
    /// The 4-bit quants, 16 bytes per row and block; starts at 0.
    pub nibbles: std::ops::Range<usize>,
    /// The fifth bits, 4 bytes per row and block ([`fifth_bit_at`]); empty
    /// for Q4_0/Q4_1.
    pub high_bits: std::ops::Range<usize>,
    /// The f16 scales `d`.
    pub scales: std::ops::Range<usize>,
    /// The f16 minimums `m`; empty for Q4_0/Q5_0.
    pub mins: std::ops::Range<usize>,
}

impl PackedLayout {
    /// `None` if `cols` is not a multiple of [`BLOCK`] or the size overflows.
    pub fn new(kind: Kind, rows: usize, cols: usize) -> Option<Self> {
        if !cols.is_multiple_of(BLOCK) {
            return None;
        }
        let layout = Self { kind, rows, cols, tiles: rows.div_ceil(TILE_ROWS), blocks_per_row: cols / BLOCK };
        let bytes_per_tile_block = TILE_ROWS * layout.bytes_per_row_block();
        layout.tiles.checked_mul(layout.blocks_per_row)?.checked_mul(bytes_per_tile_block)?;
        Some(layout)
    }

    /// Bytes one row's block takes over all planes (the GGUF block's size).
    fn bytes_per_row_block(&self) -> usize {
        ROW_NIBBLE_BYTES + 2 + if self.kind.has_high_bits() { 4 } else { 0 } + if self.kind.has_min() { 2 } else { 0 }
    }

    /// Row-blocks in the tensor, padding rows included.
    fn groups(&self) -> usize {
        self.tiles * self.blocks_per_row * TILE_ROWS
    }

    /// Where each plane lies in the packed bytes; together they cover
    /// `0..n_bytes()` without gaps.
    pub fn planes(&self) -> Planes {
        let g = self.groups();
        let nibbles = 0..g * ROW_NIBBLE_BYTES;
        let high_bits = nibbles.end..nibbles.end + if self.kind.has_high_bits() { g * 4 } else { 0 };
        let scales = high_bits.end..high_bits.end + g * 2;
        let mins = scales.end..scales.end + if self.kind.has_min() { g * 2 } else { 0 };
        Planes { nibbles, high_bits, scales, mins }
    }

    /// Size of the whole packed tensor in bytes: as many as GGUF's blocks take,
    /// plus the padding rows of a last, partial tile.
    pub fn n_bytes(&self) -> usize {
        self.groups() * self.bytes_per_row_block()
    }

    /// Bytes of one GGUF row of this kind.
    pub fn gguf_row_bytes(&self) -> usize {
        self.blocks_per_row * self.kind.gguf_block_bytes()
    }

    /// Index of block `b` of row `row` within each plane (in elements of the
    /// plane: 16-byte nibble groups, 4-byte fifth-bit shares, f16s).
    fn group(&self, row: usize, b: usize) -> usize {
        self.tile_block(row, b) * TILE_ROWS + row % TILE_ROWS
    }

    /// Index of the tile-block holding block `b` of row `row`.
    fn tile_block(&self, row: usize, b: usize) -> usize {
        (row / TILE_ROWS) * self.blocks_per_row + b
    }
}

/// The fields of one GGUF block, whatever its kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Fields {
    d: u16,
    m: u16,
    qh: [u8; 4],
    qs: [u8; 16],
}

fn read_gguf_block(kind: Kind, b: &[u8]) -> Fields {
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let qs = |i: usize| -> [u8; 16] { b[i..i + 16].try_into().expect("16 bytes") };
    let qh = |i: usize| -> [u8; 4] { b[i..i + 4].try_into().expect("4 bytes") };
    match kind {
        Kind::Q4_0 => Fields { d: u16_at(0), qs: qs(2), ..Fields::default() },
        Kind::Q4_1 => Fields { d: u16_at(0), m: u16_at(2), qs: qs(4), ..Fields::default() },
        Kind::Q5_0 => Fields { d: u16_at(0), qh: qh(2), qs: qs(6), ..Fields::default() },
        Kind::Q5_1 => Fields { d: u16_at(0), m: u16_at(2), qh: qh(4), qs: qs(8) },
    }
}

/// Packs a `[rows, cols]` tensor of GGUF blocks: `gguf_row(r)` gives the bytes
/// of destination row `r` (`layout.gguf_row_bytes()` of them), so a caller can
/// reorder or stack source rows (GGUF's Q/K permutation, fused Q/K/V) without
/// touching a block.
///
/// `dst.len()` must be `layout.n_bytes()`; the padding rows of a last,
/// partial tile are zero.
pub fn pack_rows<'a>(layout: &PackedLayout, gguf_row: impl Fn(usize) -> &'a [u8], dst: &mut [u8]) {
    assert_eq!(dst.len(), layout.n_bytes(), "{} pack: destination size", layout.kind.name());
    dst.fill(0);
    let planes = layout.planes();
    let block_bytes = layout.kind.gguf_block_bytes();
    for row in 0..layout.rows {
        let src = gguf_row(row);
        assert_eq!(src.len(), layout.gguf_row_bytes(), "{} pack: row {row} size", layout.kind.name());
        for (b, block) in src.chunks_exact(block_bytes).enumerate() {
            let f = read_gguf_block(layout.kind, block);
            let g = layout.group(row, b);
            dst[planes.nibbles.start + g * ROW_NIBBLE_BYTES..][..ROW_NIBBLE_BYTES].copy_from_slice(&f.qs);
            if layout.kind.has_high_bits() {
                let bits = &mut dst[planes.high_bits.start + layout.tile_block(row, b) * TILE_BLOCK_FIFTH_BYTES..]
                    [..TILE_BLOCK_FIFTH_BYTES];
                scatter_fifth_bits(u32::from_le_bytes(f.qh), row % TILE_ROWS, bits);
            }
            dst[planes.scales.start + g * 2..][..2].copy_from_slice(&f.d.to_le_bytes());
            if layout.kind.has_min() {
                dst[planes.mins.start + g * 2..][..2].copy_from_slice(&f.m.to_le_bytes());
            }
        }
    }
}

/// Sets the bits of a tile-block's fifth-bit bytes that hold GGUF `qh` of
/// the tile's row `row` (bit `i`: value `i`'s).
fn scatter_fifth_bits(qh: u32, row: usize, bits: &mut [u8]) {
    for i in 0..BLOCK {
        let (byte, bit) = fifth_bit_at(row, i);
        bits[byte] = (bits[byte] & !(1 << bit)) | ((((qh >> i) & 1) as u8) << bit);
    }
}

/// The GGUF `qh` of the tile's row `row` from a tile-block's fifth-bit bytes.
fn gather_fifth_bits(bits: &[u8], row: usize) -> u32 {
    (0..BLOCK).fold(0, |qh, i| {
        let (byte, bit) = fifth_bit_at(row, i);
        qh | (u32::from((bits[byte] >> bit) & 1) << i)
    })
}

/// Block `b` of row `row` of a packed tensor, as its fields.
fn fields(packed: &[u8], layout: &PackedLayout, planes: &Planes, row: usize, b: usize) -> Fields {
    let g = layout.group(row, b);
    let u16_at = |i: usize| u16::from_le_bytes([packed[i], packed[i + 1]]);
    let mut f = Fields {
        d: u16_at(planes.scales.start + g * 2),
        qs: packed[planes.nibbles.start + g * ROW_NIBBLE_BYTES..][..ROW_NIBBLE_BYTES].try_into().expect("16 bytes"),
        ..Fields::default()
    };
    if layout.kind.has_high_bits() {
        let bits = &packed[planes.high_bits.start + layout.tile_block(row, b) * TILE_BLOCK_FIFTH_BYTES..]
            [..TILE_BLOCK_FIFTH_BYTES];
        f.qh = gather_fifth_bits(bits, row % TILE_ROWS).to_le_bytes();
    }
    if layout.kind.has_min() {
        f.m = u16_at(planes.mins.start + g * 2);
    }
    f
}

/// Dequantizes row `row` of a packed tensor into `out` (`layout.cols` values),
/// with ggml's decoder of the block type, so the values are those of the GGUF.
pub fn dequantize_row(packed: &[u8], layout: &PackedLayout, row: usize, out: &mut [f32]) {
    let kind = layout.kind;
    assert!(row < layout.rows, "{} row {row} out of {}", kind.name(), layout.rows);
    assert_eq!(out.len(), layout.cols, "{} row: output size", kind.name());
    assert_eq!(packed.len(), layout.n_bytes(), "{} row: packed size", kind.name());
    let planes = layout.planes();
    for (b, chunk) in out.chunks_exact_mut(BLOCK).enumerate() {
        let f = fields(packed, layout, &planes, row, b);
        let (d, m) = (f16::from_bits(f.d), f16::from_bits(f.m));
        let out: &mut [f32; BLOCK] = chunk.try_into().expect("32 values");
        match kind {
            Kind::Q4_0 => BlockQ4_0 { d, qs: f.qs }.dequantize_block(out),
            Kind::Q4_1 => BlockQ4_1 { d, m, qs: f.qs }.dequantize_block(out),
            Kind::Q5_0 => BlockQ5_0 { d, qh: f.qh, qs: f.qs }.dequantize_block(out),
            Kind::Q5_1 => BlockQ5_1 { d, m, qh: f.qh, qs: f.qs }.dequantize_block(out),
        }
    }
}

/// The unsigned quants (4 or 5 bits) of block `b` of row `row`, in value order,
/// with the block's scale and minimum (0 for the kinds without one): what the
/// scalar matmul reads.
pub fn block_quants(packed: &[u8], layout: &PackedLayout, row: usize, b: usize) -> ([u8; BLOCK], f16, f16) {
    let f = fields(packed, layout, &layout.planes(), row, b);
    let qh = u32::from_le_bytes(f.qh);
    let q = std::array::from_fn(|i| {
        let nibble = if i < 16 { f.qs[i] & 0x0F } else { f.qs[i - 16] >> 4 };
        nibble | ((((qh >> i) & 1) as u8) << 4)
    });
    (q, f16::from_bits(f.d), f16::from_bits(f.m))
}

/// The table entries of the four kinds (file ids 4 to 7). Every kind's
/// matmul takes the activations with their block sums: Q4_1/Q5_1 multiply
/// them by `m`, Q4_0/Q5_0 by `-offset × d`.
const fn traits<const KIND: usize>(id: u32, name: &'static str, block_bytes: usize, precision: u32) -> DTypeTraits {
    DTypeTraits {
        id,
        name,
        block_cols: BLOCK,
        block_bytes,
        row_bytes: None,
        tile_rows: TILE_ROWS,
        precision,
        act: ActForm::Q8Sums,
        decode_row: decode_row_of::<KIND>,
        // Q4_1 is the own q4's type for rows that are not whole Q4_K
        // super-blocks (docs/FORMAT.md, "q4"); Q4_0 is `--quant q4_0` only.
        encode: match KIND {
            0 => Some(encode_of::<0>),
            1 => Some(encode_of::<1>),
            _ => None,
        },
        ggml: Some(match KIND {
            0 => GgmlType::Q4_0,
            1 => GgmlType::Q4_1,
            2 => GgmlType::Q5_0,
            _ => GgmlType::Q5_1,
        }),
        repack_ggml: Some(repack_of::<KIND>),
    }
}

fn layout_of<const KIND: usize>(rows: usize, cols: usize) -> PackedLayout {
    PackedLayout::new(Kind::ALL[KIND], rows, cols).expect("shape checked against the dtype table")
}

fn decode_row_of<const KIND: usize>(bytes: &[u8], rows: usize, cols: usize, row: usize, out: &mut [f32]) {
    dequantize_row(bytes, &layout_of::<KIND>(rows, cols), row, out);
}

fn repack_of<const KIND: usize>(ggml: &[u8], rows: usize, cols: usize, dst: &mut [u8]) -> bool {
    let layout = layout_of::<KIND>(rows, cols);
    let row_bytes = layout.gguf_row_bytes();
    pack_rows(&layout, |r| &ggml[r * row_bytes..][..row_bytes], dst);
    true
}

/// Quantizes one block of 32 values as GGUF Q4_1 (`x = d × q + m`), with
/// `d` and `m` searched for the least squared error after their rounding to
/// f16 (`affine::search`, private).
pub fn quantize_q4_1_block(x: &[f32; BLOCK]) -> BlockQ4_1 {
    let store = |d: f32, m: f32| {
        let (d, m) = (f16::from_f32(d), f16::from_f32(m));
        (d.is_finite() && m.is_finite()).then(|| (d.to_f32(), m.to_f32()))
    };
    let mut q = [0u8; BLOCK];
    let fit = crate::affine::search(x, 15, false, store, &mut q);
    BlockQ4_1 { d: f16::from_f32(fit.scale), m: f16::from_f32(fit.min), qs: nibbles(&q) }
}

/// Quantizes one block of 32 values as GGUF Q4_0 (`x = d × (q − 8)`), with
/// `d` searched for the least squared error after its rounding to f16
/// (`affine::search_symmetric`, private).
pub fn quantize_q4_0_block(x: &[f32; BLOCK]) -> BlockQ4_0 {
    let store = |d: f32| {
        let d = f16::from_f32(d);
        d.is_finite().then(|| d.to_f32())
    };
    let mut q = [0u8; BLOCK];
    let fit = crate::affine::search_symmetric(x, 15, 8, store, &mut q);
    BlockQ4_0 { d: f16::from_f32(fit.scale), qs: nibbles(&q) }
}

/// GGUF's nibble order: value `j` low, value `j + 16` high.
fn nibbles(q: &[u8; BLOCK]) -> [u8; BLOCK / 2] {
    std::array::from_fn(|j| q[j] | (q[j + BLOCK / 2] << 4))
}

/// Encodes a row-major f32 tensor as GGUF blocks of `KIND` (Q4_0 or Q4_1),
/// then packs them.
fn encode_of<const KIND: usize>(rows: usize, cols: usize, src: &[f32], dst: &mut [u8]) {
    use rayon::prelude::*;
    let layout = layout_of::<KIND>(rows, cols);
    let block_bytes = layout.kind.gguf_block_bytes();
    let mut gguf = vec![0u8; rows * layout.gguf_row_bytes()];
    gguf.par_chunks_exact_mut(block_bytes).zip(src.par_chunks_exact(BLOCK)).with_min_len(PAR_MIN_BLOCKS).for_each(
        |(out, block)| {
            let block: &[f32; BLOCK] = block.try_into().expect("chunks of BLOCK");
            match KIND {
                0 => out.copy_from_slice(bytemuck::bytes_of(&quantize_q4_0_block(block))),
                _ => out.copy_from_slice(bytemuck::bytes_of(&quantize_q4_1_block(block))),
            }
        },
    );
    let row_bytes = layout.gguf_row_bytes();
    pack_rows(&layout, |r| &gguf[r * row_bytes..][..row_bytes], dst);
}

/// Blocks one encoder task takes at least: a block's search is a few
/// microseconds, so smaller tasks would cost more in scheduling than they save.
const PAR_MIN_BLOCKS: usize = 256;

pub(crate) const Q4_0_TRAITS: DTypeTraits = traits::<0>(4, "q4_0", 18, 4);
pub(crate) const Q4_1_TRAITS: DTypeTraits = traits::<1>(5, "q4_1", 20, 4);
pub(crate) const Q5_0_TRAITS: DTypeTraits = traits::<2>(6, "q5_0", 22, 5);
pub(crate) const Q5_1_TRAITS: DTypeTraits = traits::<3>(7, "q5_1", 24, 5);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml::dequantize;

    /// The min/max fit, plainly: `d = (max - min) / 15`, `m = min`, both f16,
    /// quants rounded against the stored values.
    fn plain_q4_1(x: &[f32; BLOCK]) -> BlockQ4_1 {
        let lo = x.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let (d, m) = (f16::from_f32((hi - lo) / 15.0), f16::from_f32(lo));
        let q: Vec<u8> = x
            .iter()
            .map(|&v| if d.to_f32() > 0.0 { ((v - m.to_f32()) / d.to_f32()).round().clamp(0.0, 15.0) as u8 } else { 0 })
            .collect();
        BlockQ4_1 { d, m, qs: std::array::from_fn(|j| q[j] | (q[j + 16] << 4)) }
    }

    /// llama.cpp's own Q4_0 quantizer (`quantize_row_q4_0_ref`), written out:
    /// the value of largest magnitude on level −8, `d` stored as f16, quants
    /// rounded against the unrounded `d`.
    fn ggml_q4_0(x: &[f32; BLOCK]) -> BlockQ4_0 {
        let max = x.iter().copied().fold(0f32, |a, v| if v.abs() > a.abs() { v } else { a });
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q: Vec<u8> = x.iter().map(|&v| ((v * id + 8.5) as i8).min(15) as u8).collect();
        BlockQ4_0 { d: f16::from_f32(d), qs: std::array::from_fn(|j| q[j] | (q[j + 16] << 4)) }
    }

    /// Encodes random blocks as `dtype` and checks each against `baseline`,
    /// which gives a block's values under the plain fit and the per-value
    /// error bound of that fit: the plain fit stays within its bound, the
    /// searched one is never worse than it, and better by 10% on over a third
    /// of the blocks.
    fn searched_beats_plain_fit(dtype: crate::DType, baseline: impl Fn(&[f32; BLOCK]) -> ([f32; BLOCK], f32)) {
        let (rows, cols) = (9, 96);
        let mut bytes = Vec::new();
        let sse = |a: &[f32], b: &[f32]| -> f32 { a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum() };
        let (mut better, mut blocks) = (0, 0);
        for seed in 0..if cfg!(miri) { 2 } else { 40u32 } {
            let src: Vec<f32> = (0..rows * cols / BLOCK)
                .flat_map(|b| crate::affine::tests::test_block(BLOCK, seed * 100 + b as u32))
                .collect();
            dtype.encode(rows, cols, &src, &mut bytes);
            let back = dtype.decode(&bytes, rows, cols);
            for (x, y) in src.chunks_exact(BLOCK).zip(back.chunks_exact(BLOCK)) {
                let x: &[f32; BLOCK] = x.try_into().unwrap();
                let (want, per_value) = baseline(x);
                let (got, base) = (sse(x, y), sse(x, &want));
                assert!(
                    base <= BLOCK as f32 * per_value.powi(2),
                    "{dtype:?} seed {seed}: plain fit error {base} over its bound"
                );
                assert!(got <= base * (1.0 + 1e-6), "{dtype:?} seed {seed}: searched error {got} > plain fit's {base}");
                better += usize::from(got < 0.9 * base);
                blocks += 1;
            }
        }
        assert!(better * 3 > blocks, "{dtype:?}: the search beats the plain fit by 10% on {better} of {blocks} blocks");
    }

    #[test]
    fn q4_0_encoder_round_trips_no_worse_than_llama_cpp_q4_0() {
        searched_beats_plain_fit(crate::DType::Q4_0, |x| {
            let reference = ggml_q4_0(x);
            let mut want = [0f32; BLOCK];
            reference.dequantize_block(&mut want);
            // A step (the level +8 is missing: values on that side clip by
            // up to one), plus f16's rounding of d over 8 levels.
            let step = reference.d.to_f32().abs();
            (want, step + 8.0 * step * 1e-3)
        });
    }

    #[test]
    fn q4_1_encoder_round_trips_no_worse_than_min_max_fit() {
        searched_beats_plain_fit(crate::DType::Q4_1, |x| {
            let mut want = [0f32; BLOCK];
            plain_q4_1(x).dequantize_block(&mut want);
            let (lo, hi) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            // Half a step, plus f16's rounding of d (over 15 steps) and m.
            (want, (hi - lo) / 30.0 + (hi - lo) * 2e-3 + lo.abs() * 1e-3)
        });
    }

    /// Random GGUF bytes for `rows` rows of `kind` with finite scales.
    fn random_gguf(kind: Kind, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let block_bytes = kind.gguf_block_bytes();
        let mut out: Vec<u8> = (0..rows * cols / BLOCK * block_bytes).map(|_| next() as u8).collect();
        for block in out.chunks_exact_mut(block_bytes) {
            let n_halves = if kind.has_min() { 2 } else { 1 };
            for h in 0..n_halves {
                let v = f16::from_f32(((next() % 2001) as f32 - 1000.0) / 1e4).to_bits().to_le_bytes();
                block[2 * h..2 * h + 2].copy_from_slice(&v);
            }
        }
        out
    }

    #[test]
    fn layout_sizes_match_gguf_plus_padding() {
        for kind in Kind::ALL {
            assert!(PackedLayout::new(kind, 8, 33).is_none());
            assert!(PackedLayout::new(kind, usize::MAX, 32).is_none());
            let l = PackedLayout::new(kind, 16, 64).unwrap();
            assert_eq!(l.n_bytes(), 16 * l.gguf_row_bytes(), "{kind:?}: a whole tile costs exactly GGUF's bytes");
            let p = l.planes();
            assert_eq!(p.mins.end, l.n_bytes());
            assert_eq!(p.nibbles.end % 64, 0);
            assert_eq!(PackedLayout::new(kind, 9, 64).unwrap().tiles, 2);
        }
    }

    #[test]
    fn packed_rows_dequantize_to_the_gguf_values() {
        for kind in Kind::ALL {
            for (rows, cols) in [(1, 32), (8, 64), (13, 96), (24, 160)] {
                let gguf = random_gguf(kind, rows, cols, (rows * cols) as u64);
                let mut want = vec![0f32; rows * cols];
                dequantize(kind.ggml(), &gguf, &mut want).unwrap();
                let layout = PackedLayout::new(kind, rows, cols).unwrap();
                let row_bytes = layout.gguf_row_bytes();
                let mut packed = vec![0xAA; layout.n_bytes()];
                pack_rows(&layout, |r| &gguf[r * row_bytes..][..row_bytes], &mut packed);
                let mut got = vec![0f32; cols];
                for r in 0..rows {
                    dequantize_row(&packed, &layout, r, &mut got);
                    let want = &want[r * cols..][..cols];
                    let same = got.iter().zip(want).all(|(g, w)| g.to_bits() == w.to_bits());
                    assert!(same, "{kind:?} [{rows}, {cols}] row {r}");
                }
            }
        }
    }

    #[test]
    fn block_quants_decode_as_ggml() {
        for kind in Kind::ALL {
            let (rows, cols) = (11, 64);
            let gguf = random_gguf(kind, rows, cols, 7);
            let mut want = vec![0f32; rows * cols];
            dequantize(kind.ggml(), &gguf, &mut want).unwrap();
            let layout = PackedLayout::new(kind, rows, cols).unwrap();
            let row_bytes = layout.gguf_row_bytes();
            let mut packed = vec![0; layout.n_bytes()];
            pack_rows(&layout, |r| &gguf[r * row_bytes..][..row_bytes], &mut packed);
            for r in 0..rows {
                for b in 0..cols / BLOCK {
                    let (q, d, m) = block_quants(&packed, &layout, r, b);
                    let max = if kind.has_high_bits() { 31 } else { 15 };
                    for (i, &qi) in q.iter().enumerate() {
                        assert!(qi <= max);
                        let v = if kind.has_min() {
                            f32::from(qi) * d.to_f32() + m.to_f32()
                        } else {
                            (i32::from(qi) - kind.offset()) as f32 * d.to_f32()
                        };
                        assert_eq!(v.to_bits(), want[r * cols + b * BLOCK + i].to_bits(), "{kind:?} row {r} block {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn fifth_bits_fill_a_tile_block_once_each() {
        let mut seen = [0u8; TILE_BLOCK_FIFTH_BYTES];
        for row in 0..TILE_ROWS {
            for i in 0..BLOCK {
                let (byte, bit) = fifth_bit_at(row, i);
                assert_eq!(seen[byte] & (1 << bit), 0, "row {row} value {i}: byte {byte} bit {bit} taken twice");
                seen[byte] |= 1 << bit;
                // The byte lines up with the nibble byte that holds the value
                // in a load of the row pair (2p, 2p + 1): row 2p + s at 16 s.
                assert_eq!(byte, 16 * (row % 2) + i % 16);
            }
        }
        assert!(seen.iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn padding_rows_are_zero() {
        for kind in Kind::ALL {
            let layout = PackedLayout::new(kind, 3, 32).unwrap();
            let gguf = random_gguf(kind, 3, 32, 3);
            let row_bytes = layout.gguf_row_bytes();
            let mut packed = vec![0xAA; layout.n_bytes()];
            pack_rows(&layout, |r| &gguf[r * row_bytes..][..row_bytes], &mut packed);
            let p = layout.planes();
            assert!(packed[p.nibbles.start + 3 * 16..p.nibbles.end].iter().all(|&b| b == 0));
            assert!(packed[p.scales.start + 3 * 2..p.scales.end].iter().all(|&b| b == 0));
        }
    }
}
