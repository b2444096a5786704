//! gpt-fast's numeric kernels.
//!
//! `reference` holds the scalar kernels: the specification every instruction
//! set's module is tested against, and the fallback on any CPU. A [`Kernels`]
//! table (one function pointer per operation) is chosen once at start-up; the
//! model calls through it, so no feature check sits in a hot loop.

// `unsafe` lives only in the instruction-set modules (STYLE.md, "unsafe"); the
// lint keeps it out of everything else.
#![deny(unsafe_code)]

#[cfg(target_arch = "aarch64")]
#[allow(unsafe_code)]
mod aarch64;
mod attention;
mod driver;
pub mod q4q5;
pub mod reference;
mod table;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86_64;

pub use attention::{AttnShape, KEY_BLOCK};
pub use table::{Attention, Isa, Kernels, MatmulK};

use half::f16;

/// A weight matrix `[rows, cols]` (`y = W x`), in place in the model file.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    pub rows: usize,
    pub cols: usize,
    pub data: WeightData<'a>,
}

#[derive(Clone, Copy, Debug)]
pub enum WeightData<'a> {
    /// Row-major, `rows * cols` values.
    F32(&'a [f32]),
    /// Row-major, `rows * cols` values.
    F16(&'a [f16]),
    /// gpt-fast's packed q8 (docs/FORMAT.md): quants `[tile][block][8][32]`,
    /// scales `[tile][block][8]`, tiles of 8 rows.
    Q8 { quants: &'a [i8], scales: &'a [f16] },
}

/// Activations quantized to q8 blocks of 32 for integer matmul: `n` rows of
/// `cols` values, `cols / 32` f32 scales per row.
#[derive(Clone, Copy, Debug)]
pub struct Q8Acts<'a> {
    pub cols: usize,
    pub quants: &'a [i8],
    pub scales: &'a [f32],
}

pub use gpt_fast_quant::q8::{BLOCK as Q8_BLOCK, TILE_ROWS as Q8_TILE_ROWS};

impl Matrix<'_> {
    /// Row `row` as f32 (the embedding lookup).
    pub fn row_to_f32(&self, row: usize, out: &mut [f32]) {
        let cols = self.cols;
        match self.data {
            WeightData::F32(d) => out.copy_from_slice(&d[row * cols..][..cols]),
            WeightData::F16(d) => {
                for (o, v) in out.iter_mut().zip(&d[row * cols..][..cols]) {
                    *o = v.to_f32();
                }
            }
            WeightData::Q8 { quants, scales } => {
                let (tile, lane) = (row / Q8_TILE_ROWS, row % Q8_TILE_ROWS);
                let nb = cols / Q8_BLOCK;
                for (b, chunk) in out.chunks_exact_mut(Q8_BLOCK).enumerate() {
                    let group = (tile * nb + b) * Q8_TILE_ROWS + lane;
                    let scale = scales[group].to_f32();
                    for (o, &q) in chunk.iter_mut().zip(&quants[group * Q8_BLOCK..][..Q8_BLOCK]) {
                        *o = scale * f32::from(q);
                    }
                }
            }
        }
    }
}
