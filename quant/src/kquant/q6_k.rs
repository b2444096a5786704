//! Q6_K packed in tiles (see [`super`]): per super-block record of a tile,
//! `d[8]` f16, `scales[16][8]` (int8 scale of each row's sub-block of 16),
//! `ql[32][8][4]` and `qh[16][8][4]` (4-byte units of each row's 128 and 64
//! bytes). Value `128h + 32k + l` of a row (half `h`, quarter `k`, `l` in
//! 0..32) takes its low 4 bits from ql byte `64h + 32(k % 2) + l` (low
//! nibble for `k < 2`), its high 2 bits from bits `2k..2k + 2` of qh byte
//! `32h + l`, and is `q - 32`. 210 bytes per row per 256 values, as in GGUF.

use super::layout::{Field, KFormat};
use crate::ggml::{BlockQ6K, GgmlType, QK_K};

/// The Q6_K format.
pub struct Q6K;

const FIELDS: &[Field] = &[
    Field { offset: 208, len: 2, unit: 2 },  // d
    Field { offset: 192, len: 16, unit: 1 }, // scales
    Field { offset: 0, len: 128, unit: 4 },  // ql
    Field { offset: 128, len: 64, unit: 4 }, // qh
];

/// Offset in a tile's record of one super-block of `d[8]`: each row's f16 super-block scale.
pub const D: usize = Field::tile_offset(FIELDS, 0);
/// Offset in a tile's record of one super-block of the packed sub-block scales (and minimums), interleaved byte by byte across the rows.
pub const SCALES: usize = Field::tile_offset(FIELDS, 1);
/// Offset in a tile's record of one super-block of the low 4 quant bits, interleaved across the rows in units of 4 bytes.
pub const QL: usize = Field::tile_offset(FIELDS, 2);
/// Offset in a tile's record of one super-block of the high quant bits, interleaved across the rows in units of 4 bytes.
pub const QH: usize = Field::tile_offset(FIELDS, 3);
/// Bytes of one tile's record of one super-block.
pub const RECORD_BYTES: usize = Field::tile_offset(FIELDS, 4);

impl KFormat for Q6K {
    const NAME: &'static str = "Q6_K";
    const GGML_TYPE: GgmlType = GgmlType::Q6_K;
    const BLOCK_BYTES: usize = std::mem::size_of::<BlockQ6K>();
    const FIELDS: &'static [Field] = FIELDS;

    fn dequantize_block(block: &[u8], out: &mut [f32; QK_K]) {
        bytemuck::pod_read_unaligned::<BlockQ6K>(block).dequantize_block(out);
    }
}
