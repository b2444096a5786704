//! ggml's K-quants (Q4_K, Q5_K, Q6_K) repacked for gpt-fast's matmul kernels:
//! the same bytes as the GGUF super-blocks, rows interleaved in tiles of 8.
//!
//! A GGUF K-quant row is a run of 256-value super-blocks, each a struct of
//! fields (scales, quants, …). Packed, the 8 rows of a tile are stored
//! super-block by super-block, and within one super-block field by field,
//! each field split into units that are interleaved across the tile's rows
//! (`[unit][row in tile][unit bytes]`). Scales come in units of one byte, so
//! one load gives the same sub-block's scale for all 8 rows; quants in units
//! of 4 bytes, so one 32-byte load gives 4 columns of all 8 rows, and a dot
//! product with the activations broadcast lands each row's sum in its own
//! 32-bit lane (no horizontal sums in the kernels). A kernel reads one tile
//! with one pointer. Nothing is re-encoded: every byte of the GGUF block
//! lands somewhere in the tile, so dequantizing a packed row gives the GGUF's
//! values bit for bit (it gathers the row's block back and runs ggml's
//! formula on it).

mod layout;
/// Q4_K's packed tile: field offsets and its [`KFormat`].
pub mod q4_k;
/// Q5_K's packed tile: field offsets and its [`KFormat`].
pub mod q5_k;
/// Q6_K's packed tile: field offsets and its [`KFormat`].
pub mod q6_k;

pub use layout::{dequantize_row, gather_block, repack, Field, KFormat, PackedKLayout, MAX_BLOCK_BYTES, TILE_ROWS};

use crate::dtype::{ActForm, DTypeTraits, EncodeFn};

/// The table entry of K-quant `F` (file id `id`, precision rank `precision`;
/// `encode`: Q4_K only, the own q4's type, docs/FORMAT.md "q4").
/// The activations come with their block sums: Q4_K and Q5_K subtract
/// `dmin·m × sum`, and the Q6_K kernels take the same form.
const fn traits<F: KFormat>(id: u32, name: &'static str, precision: u32, encode: Option<EncodeFn>) -> DTypeTraits {
    DTypeTraits {
        id,
        name,
        block_cols: crate::ggml::QK_K,
        block_bytes: F::BLOCK_BYTES,
        row_bytes: None,
        tile_rows: TILE_ROWS,
        precision,
        act: ActForm::Q8Sums,
        decode_row: decode_row::<F>,
        encode,
        ggml: Some(F::GGML_TYPE),
        repack_ggml: Some(repack_ggml::<F>),
    }
}

fn layout<F: KFormat>(rows: usize, cols: usize) -> PackedKLayout {
    PackedKLayout::new::<F>(rows, cols).expect("K-quant shape checked against the dtype table")
}

fn decode_row<F: KFormat>(bytes: &[u8], rows: usize, cols: usize, row: usize, out: &mut [f32]) {
    dequantize_row::<F>(bytes, &layout::<F>(rows, cols), row, out);
}

fn repack_ggml<F: KFormat>(ggml: &[u8], rows: usize, cols: usize, dst: &mut [u8]) -> bool {
    repack::<F>(ggml, &layout::<F>(rows, cols), dst);
    true
}

pub(crate) const Q4_K_TRAITS: DTypeTraits = traits::<q4_k::Q4K>(8, "q4_k", 4, Some(q4_k::encode));
pub(crate) const Q5_K_TRAITS: DTypeTraits = traits::<q5_k::Q5K>(9, "q5_k", 5, None);
pub(crate) const Q6_K_TRAITS: DTypeTraits = traits::<q6_k::Q6K>(10, "q6_k", 6, None);
