//! The views the Q4_0/Q4_1/Q5_0/Q5_1 matmuls read: a packed weight's planes
//! (`gpt_fast_quant::q4q5`) as typed slices, and q8 activations with their
//! per-block sums.

use gpt_fast_quant::q4q5::{Kind, PackedLayout};
use gpt_fast_quant::DType;
use half::f16;

pub use gpt_fast_quant::q4q5::{
    BLOCK as Q4Q5_BLOCK, ROW_NIBBLE_BYTES, TILE_BLOCK_FIFTH_BYTES, TILE_BLOCK_NIBBLE_BYTES, TILE_ROWS as Q4Q5_TILE_ROWS,
};

/// A packed Q4_0/Q4_1/Q5_0/Q5_1 weight `[rows, cols]`, each plane ordered
/// `[tile][block][row in tile]` (docs/FORMAT.md).
#[derive(Clone, Copy, Debug)]
pub struct Q4Q5Weight<'a> {
    /// Which of the four types the blocks are.
    pub kind: Kind,
    /// The whole packed tensor (the planes below are views into it).
    pub bytes: &'a [u8],
    /// Its shape and plane offsets.
    pub layout: PackedLayout,
    /// 16 bytes per row and block: GGUF's `qs`.
    pub nibbles: &'a [u8],
    /// Q5_0/Q5_1: [`TILE_BLOCK_FIFTH_BYTES`] of fifth bits per tile and block,
    /// arranged as `gpt_fast_quant::q4q5::fifth_bit_at` says; empty otherwise.
    pub high_bits: &'a [u8],
    /// `d`, one per row and block.
    pub scales: &'a [f16],
    /// Q4_1/Q5_1: `m`, one per row and block; empty otherwise.
    pub mins: &'a [f16],
}

impl<'a> Q4Q5Weight<'a> {
    /// Views the planes of a packed tensor; `None` if `bytes` is not exactly
    /// the layout's size or not aligned for its f16 planes.
    pub fn from_bytes(kind: Kind, rows: usize, cols: usize, bytes: &'a [u8]) -> Option<Self> {
        let layout = PackedLayout::new(kind, rows, cols)?;
        if bytes.len() != layout.n_bytes() {
            return None;
        }
        let p = layout.planes();
        Some(Self {
            kind,
            bytes,
            layout,
            nibbles: &bytes[p.nibbles],
            high_bits: &bytes[p.high_bits],
            scales: bytemuck::try_cast_slice(&bytes[p.scales]).ok()?,
            mins: bytemuck::try_cast_slice(&bytes[p.mins]).ok()?,
        })
    }
}

/// Activation rows quantized to q8 blocks of 32, with each block's
/// `sum = scale × Σ quants` (llama.cpp's Q8_1 `s`): what the minimum of
/// Q4_1/Q5_1 and the offset of Q4_0/Q5_0 multiply, so the kernels need no
/// horizontal sum of the activations ([`crate::reference::q8_block_sums`]
/// computes them). `n` rows of `cols` quants, `cols / 32`
/// scales and sums per row.
#[derive(Clone, Copy, Debug)]
pub struct Q8SumActs<'a> {
    /// Values per row, a multiple of 32.
    pub cols: usize,
    /// `(n, cols)` int8.
    pub quants: &'a [i8],
    /// `(n, cols / 32)`: a block's values are `scale × quant`.
    pub scales: &'a [f32],
    /// `(n, cols / 32)`: `scale × Σ quants` of each block.
    pub sums: &'a [f32],
}

/// The dtypes these kernels run.
pub(crate) fn dtypes() -> [DType; 4] {
    Kind::ALL.map(Kind::dtype)
}

/// The typed views a Q4_0/Q4_1/Q5_0/Q5_1 matmul reads, from the table's
/// untyped matrix and activations.
pub(crate) fn views<'a>(w: &crate::Matrix<'a>, x: &crate::Acts<'a>) -> (Q4Q5Weight<'a>, Q8SumActs<'a>) {
    let kind = Kind::ALL.into_iter().find(|k| k.dtype() == w.dtype).expect("a Q4_0/Q4_1/Q5_0/Q5_1 matrix");
    let weight = Q4Q5Weight::from_bytes(kind, w.rows, w.cols, w.data).expect("shape and alignment checked at load");
    let q = &x.q8;
    (weight, Q8SumActs { cols: q.cols, quants: q.quants, scales: q.scales, sums: q.sums })
}
