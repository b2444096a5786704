//! What a matmul reads: a weight matrix in its dtype's stored layout, and the
//! activations in the forms the dtypes' kernels take.

use gpt_fast_quant::q8::PackedQ8Layout;
use gpt_fast_quant::DType;
use half::f16;

/// A weight matrix `[rows, cols]` (`y = W x`), in place in the model file:
/// `dtype.n_bytes(rows, cols)` bytes in the layout its table entry describes,
/// at least 8-byte aligned.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    /// Output features: `W x` has this many values per token.
    pub rows: usize,
    /// Input features, a whole number of the dtype's blocks.
    pub cols: usize,
    /// How `data` is encoded.
    pub dtype: DType,
    /// The stored bytes, exactly `dtype.n_bytes(rows, cols)` of them.
    pub data: &'a [u8],
}

/// A matmul's input for `n` tokens, in every form a dtype may ask for
/// ([`gpt_fast_quant::ActForm`]); a kernel reads only its dtype's.
#[derive(Clone, Copy, Debug)]
pub struct Acts<'a> {
    /// `(n, cols)` f32.
    pub x: &'a [f32],
    /// The same rows as q8 blocks, for the integer dtypes; filled by the
    /// caller when some matmul of the step reads them.
    pub q8: Q8Acts<'a>,
}

/// Activations quantized to q8 blocks of 32 for integer matmuls: `n` rows of
/// `cols` values.
#[derive(Clone, Copy, Debug)]
pub struct Q8Acts<'a> {
    /// Values per row, a multiple of 32.
    pub cols: usize,
    /// `(n, cols)` int8.
    pub quants: &'a [i8],
    /// `(n, cols / 32)`: a block's values are `scale × quant`.
    pub scales: &'a [f32],
    /// `(n, cols / 32)`: `scale × Σ quants` of each block, for weights with a
    /// per-block offset ([`gpt_fast_quant::ActForm::Q8Sums`]); empty otherwise.
    pub sums: &'a [f32],
}

impl<'a> Matrix<'a> {
    /// Row `row` as f32 (the embedding lookup).
    pub fn row_to_f32(&self, row: usize, out: &mut [f32]) {
        self.dtype.decode_row(self.data, self.rows, self.cols, row, out);
    }

    /// An f32 matrix's values, row-major.
    pub(crate) fn f32s(&self) -> &'a [f32] {
        debug_assert_eq!(self.dtype, DType::F32);
        bytemuck::cast_slice(self.data)
    }

    /// An f16 matrix's values, row-major.
    pub(crate) fn f16s(&self) -> &'a [f16] {
        debug_assert_eq!(self.dtype, DType::F16);
        bytemuck::cast_slice(self.data)
    }

    /// A packed q8 matrix's two planes (docs/FORMAT.md): quants
    /// `[tile][block][8][32]`, scales `[tile][block][8]`, tiles of 8 rows.
    pub(crate) fn q8_planes(&self) -> (&'a [i8], &'a [f16]) {
        debug_assert_eq!(self.dtype, DType::Q8);
        let layout = PackedQ8Layout::new(self.rows, self.cols).expect("q8 shape checked at load");
        let (q, s) = self.data.split_at(layout.quant_bytes());
        (bytemuck::cast_slice(q), bytemuck::cast_slice(s))
    }
}
