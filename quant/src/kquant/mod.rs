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
pub mod q4_k;
pub mod q5_k;
pub mod q6_k;

pub use layout::{dequantize_row, gather_block, repack, Field, KFormat, PackedKLayout, MAX_BLOCK_BYTES, TILE_ROWS};
