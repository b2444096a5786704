//! Q4_K packed in tiles (see [`super`]): per super-block record of a tile,
//! `d[8]` f16, `dmin[8]` f16, `scales[12][8]` (byte `k` of the 12 packed
//! 6-bit scales and minimums of each row, ggml's `get_scale_min_k4` order),
//! then `qs[32][8][4]`: unit `u` holds bytes `4u..4u + 4` of each row's 128
//! quant bytes, i.e. columns `4(u % 8)..+4` of group `g = u / 8`, whose low
//! nibbles are sub-block `2g` and high nibbles sub-block `2g + 1`. 144 bytes
//! per row per 256 values, as in GGUF.

use super::layout::{Field, KFormat};
use crate::ggml::{BlockQ4K, GgmlType, QK_K};

/// The Q4_K format.
pub struct Q4K;

const FIELDS: &[Field] = &[
    Field { offset: 0, len: 2, unit: 2 },    // d
    Field { offset: 2, len: 2, unit: 2 },    // dmin
    Field { offset: 4, len: 12, unit: 1 },   // scales
    Field { offset: 16, len: 128, unit: 4 }, // qs
];

/// Offsets of the fields in a tile's record of one super-block.
pub const D: usize = Field::tile_offset(FIELDS, 0);
pub const DMIN: usize = Field::tile_offset(FIELDS, 1);
pub const SCALES: usize = Field::tile_offset(FIELDS, 2);
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
