//! Q5_K packed in tiles (see [`super`]): per super-block record of a tile,
//! `d[8]`, `dmin[8]` f16, `scales[12][8]` (as Q4_K), `qh[8][8][4]` (unit
//! `k`: bytes `4k..4k + 4` of each row's 32; bit `s` of byte `l` is the fifth
//! bit of value `l` of sub-block `s`), then `qs[32][8][4]` (as Q4_K). 176
//! bytes per row per 256 values, as in GGUF.

use super::layout::{Field, KFormat};
use crate::ggml::{BlockQ5K, GgmlType, QK_K};

/// The Q5_K format.
pub struct Q5K;

const FIELDS: &[Field] = &[
    Field { offset: 0, len: 2, unit: 2 },    // d
    Field { offset: 2, len: 2, unit: 2 },    // dmin
    Field { offset: 4, len: 12, unit: 1 },   // scales
    Field { offset: 16, len: 32, unit: 4 },  // qh
    Field { offset: 48, len: 128, unit: 4 }, // qs
];

/// Offset in a tile's record of one super-block of `d[8]`: each row's f16 super-block scale.
pub const D: usize = Field::tile_offset(FIELDS, 0);
/// Offset in a tile's record of one super-block of `dmin[8]`: each row's f16 scale of the sub-block minimums.
pub const DMIN: usize = Field::tile_offset(FIELDS, 1);
/// Offset in a tile's record of one super-block of the packed sub-block scales (and minimums), interleaved byte by byte across the rows.
pub const SCALES: usize = Field::tile_offset(FIELDS, 2);
/// Offset in a tile's record of one super-block of the high quant bits, interleaved across the rows in units of 4 bytes.
pub const QH: usize = Field::tile_offset(FIELDS, 3);
/// Offset in a tile's record of one super-block of the quants (low bits), interleaved across the rows in units of 4 bytes.
pub const QS: usize = Field::tile_offset(FIELDS, 4);
/// Bytes of one tile's record of one super-block.
pub const RECORD_BYTES: usize = Field::tile_offset(FIELDS, 5);

impl KFormat for Q5K {
    const NAME: &'static str = "Q5_K";
    const GGML_TYPE: GgmlType = GgmlType::Q5_K;
    const BLOCK_BYTES: usize = std::mem::size_of::<BlockQ5K>();
    const FIELDS: &'static [Field] = FIELDS;

    fn dequantize_block(block: &[u8], out: &mut [f32; QK_K]) {
        bytemuck::pod_read_unaligned::<BlockQ5K>(block).dequantize_block(out);
    }
}
