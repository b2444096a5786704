//! The weight types gpt-fast stores and runs, and the one table that says
//! everything about each: its file id and name, its block shape and size, its
//! precision rank, its scalar encode/decode (the specification of its values),
//! which activation form its matmul reads, and which GGUF type it keeps.
//!
//! This is the only place that matches on [`DType`]; everything else reads
//! the table (ggml's `type_traits`, candle's `GgmlType`, as models). Adding a
//! dtype is one variant here, its module's [`DTypeTraits`], and its kernels
//! (docs/DESIGN.md, "Adding a dtype").

use crate::ggml::GgmlType;
use crate::{float, kquant, q4_kr, q4q5, q8};

/// A weight type of the model file. The discriminant is dense (an index into
/// per-dtype tables such as the kernels' matmuls); the file stores
/// [`DTypeTraits::id`].
#[allow(non_camel_case_types)] // GGUF's names for GGUF's types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE single precision, row-major.
    F32,
    /// IEEE half precision, row-major, widened to f32 by the matmul.
    F16,
    /// gpt-fast's int8: blocks of 32 values with one f32 scale, rows
    /// interleaved in tiles ([`crate::q8`]).
    Q8,
    /// GGUF's legacy 4- and 5-bit types, kept as they are (repacked into
    /// planes with rows interleaved in tiles of 8, [`crate::q4q5`]): 4-bit,
    /// one scale per 32 values, symmetric.
    Q4_0,
    /// 4-bit, one scale and one min per 32 values.
    Q4_1,
    /// 5-bit, one scale per 32 values, symmetric.
    Q5_0,
    /// 5-bit, one scale and one min per 32 values.
    Q5_1,
    /// GGUF's K-quants, kept as they are (repacked into tiles of 8 rows,
    /// [`crate::kquant`]): 4-bit in super-blocks of 256 with 6-bit sub-block
    /// scales and mins.
    Q4_K,
    /// 5-bit super-blocks of 256, 6-bit sub-block scales and mins.
    Q5_K,
    /// 6-bit super-blocks of 256, 8-bit sub-block scales, symmetric.
    Q6_K,
    /// gpt-fast's own: Q4_K's 6-bit sub-block scales and mins under one
    /// f16 `d`, `dmin` per row, for rows that are not whole super-blocks
    /// ([`crate::q4_kr`]).
    Q4_KR,
}

/// What a dtype's matmul multiplies its weights with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActForm {
    /// The f32 activations as they are.
    F32,
    /// Int8 blocks of 32 with one f32 scale per block.
    Q8,
    /// As [`ActForm::Q8`], plus each block's `scale * Σ quants`: for weights
    /// with a per-block offset (a min), whose dot product needs the
    /// activations' sum (llama.cpp's Q8_1 `s`).
    Q8Sums,
}

/// A row-major `[rows, cols]` f32 tensor to a dtype's bytes (`dst` is
/// `n_bytes(rows, cols)` long and zeroed).
pub type EncodeFn = fn(rows: usize, cols: usize, src: &[f32], dst: &mut [u8]);
/// Row `row` of a stored `[rows, cols]` tensor to f32 (`out` is `cols` long).
pub type DecodeRowFn = fn(bytes: &[u8], rows: usize, cols: usize, row: usize, out: &mut [f32]);
/// A GGUF tensor's row-major blocks to the dtype's layout, every value
/// unchanged (`dst` is `n_bytes(rows, cols)` long); `false` if the tensor
/// holds a value the layout cannot (GGUF Q8_0's -128 in q8).
pub type RepackFn = fn(ggml: &[u8], rows: usize, cols: usize, dst: &mut [u8]) -> bool;

/// Everything about one dtype.
#[derive(Clone, Copy, Debug)]
pub struct DTypeTraits {
    /// The model file's id for it (docs/FORMAT.md, "dtypes").
    pub id: u32,
    /// Its name in the model file's listing and on the command line (`--quant`).
    pub name: &'static str,
    /// A row is a whole number of blocks of this many values.
    pub block_cols: usize,
    /// Bytes of one block of one row (values and their scales).
    pub block_bytes: usize,
    /// Bytes of one row `cols` wide where that is not `cols / block_cols ×
    /// block_bytes` (a type with scales per row); `None` if the width does
    /// not fit.
    pub row_bytes: Option<fn(usize) -> Option<usize>>,
    /// Rows interleaved per tile (1: row-major); a tensor holds whole tiles.
    pub tile_rows: usize,
    /// Rank for refusing to run weights at more precision than they hold.
    pub precision: u32,
    /// The activations its matmul multiplies the weights with.
    pub act: ActForm,
    /// The scalar specification of the stored values.
    pub decode_row: DecodeRowFn,
    /// `None`: the type is only kept from a GGUF, never made from floats.
    pub encode: Option<EncodeFn>,
    /// The GGUF type `convert --quant keep` stores as this dtype.
    pub ggml: Option<GgmlType>,
    /// Moves that GGUF type's blocks into this layout; `None` where there is
    /// nothing to keep natively.
    pub repack_ggml: Option<RepackFn>,
}

impl DType {
    /// Every dtype, in discriminant order.
    pub const ALL: [DType; 11] = [
        DType::F32,
        DType::F16,
        DType::Q8,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::Q4_KR,
    ];
    /// How many dtypes there are (the length of per-dtype tables).
    pub const COUNT: usize = Self::ALL.len();

    /// The one table entry that describes this dtype.
    pub const fn traits(self) -> &'static DTypeTraits {
        match self {
            DType::F32 => &float::F32_TRAITS,
            DType::F16 => &float::F16_TRAITS,
            DType::Q8 => &q8::TRAITS,
            DType::Q4_0 => &q4q5::Q4_0_TRAITS,
            DType::Q4_1 => &q4q5::Q4_1_TRAITS,
            DType::Q5_0 => &q4q5::Q5_0_TRAITS,
            DType::Q5_1 => &q4q5::Q5_1_TRAITS,
            DType::Q4_K => &kquant::Q4_K_TRAITS,
            DType::Q5_K => &kquant::Q5_K_TRAITS,
            DType::Q6_K => &kquant::Q6_K_TRAITS,
            DType::Q4_KR => &q4_kr::TRAITS,
        }
    }

    /// Position in [`DType::ALL`] (for per-dtype tables).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The model file's id for this dtype ([`DTypeTraits::id`]).
    pub fn id(self) -> u32 {
        self.traits().id
    }

    /// The dtype a model file's id stands for; `None` for an unknown id.
    pub fn from_u32(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.id() == id)
    }

    /// Its name ([`DTypeTraits::name`]).
    pub fn name(self) -> &'static str {
        self.traits().name
    }

    /// Precision rank (bits per value, roughly).
    pub fn precision(self) -> u32 {
        self.traits().precision
    }

    /// What its matmul multiplies the weights with ([`DTypeTraits::act`]).
    pub fn act(self) -> ActForm {
        self.traits().act
    }

    /// The dtype a GGUF type is kept as, if gpt-fast has it natively.
    pub fn from_ggml(ty: GgmlType) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.traits().ggml == Some(ty) && d.traits().repack_ggml.is_some())
    }

    /// Whether a `[rows, cols]` tensor of this type exists (whole blocks).
    pub fn fits(self, cols: u64) -> bool {
        cols.is_multiple_of(self.traits().block_cols as u64)
    }

    /// Bytes of a `[rows, cols]` tensor of this type; `None` on overflow or
    /// when `cols` is not a whole number of blocks.
    pub fn n_bytes(self, rows: u64, cols: u64) -> Option<u64> {
        let t = self.traits();
        if !self.fits(cols) {
            return None;
        }
        let padded_rows = rows.div_ceil(t.tile_rows as u64).checked_mul(t.tile_rows as u64)?;
        let row_bytes = match t.row_bytes {
            Some(row_bytes) => row_bytes(usize::try_from(cols).ok()?)? as u64,
            None => (cols / t.block_cols as u64).checked_mul(t.block_bytes as u64)?,
        };
        let bytes = padded_rows.checked_mul(row_bytes)?;
        // Every byte must be addressable here, with room for offsets into it.
        usize::try_from(bytes).ok().filter(|&b| b <= isize::MAX as usize)?;
        Some(bytes)
    }

    /// Encodes a row-major `[rows, cols]` f32 tensor into `out` (cleared
    /// first). Panics if `data` does not match the shape, the shape does not
    /// fit the type, or the type has no encoder: callers check first.
    pub fn encode(self, rows: usize, cols: usize, data: &[f32], out: &mut Vec<u8>) {
        assert_eq!(data.len(), rows * cols, "tensor data does not match its shape");
        let encode = self.traits().encode.unwrap_or_else(|| panic!("{} has no encoder", self.name()));
        let n = self.n_bytes(rows as u64, cols as u64).expect("shape checked by the caller") as usize;
        out.clear();
        out.resize(n, 0);
        encode(rows, cols, data, out);
    }

    /// Decodes row `row` of a stored `[rows, cols]` tensor into `out` (`cols` values).
    pub fn decode_row(self, bytes: &[u8], rows: usize, cols: usize, row: usize, out: &mut [f32]) {
        assert!(row < rows && out.len() == cols, "row {row} of [{rows}, {cols}]");
        (self.traits().decode_row)(bytes, rows, cols, row, out);
    }

    /// Decodes a whole stored tensor to row-major f32.
    pub fn decode(self, bytes: &[u8], rows: usize, cols: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * cols];
        if cols > 0 {
            for (r, chunk) in out.chunks_exact_mut(cols).enumerate() {
                self.decode_row(bytes, rows, cols, r, chunk);
            }
        }
        out
    }
}

/// Columns every model gpt-fast runs has a whole number of: a dtype whose
/// blocks are no longer can hold every matrix of every model.
pub const ANY_MODEL_BLOCK: usize = 32;

impl DType {
    /// Whether `--quant NAME` can convert every matrix to it: it has an
    /// encoder and its blocks fit every model's rows (Q4_K's 256-value
    /// super-blocks do not; `--quant q4` uses it where they do).
    pub fn is_whole_model_target(self) -> bool {
        self.traits().encode.is_some() && self.traits().block_cols <= ANY_MODEL_BLOCK
    }
}

/// A weight type to convert a whole model to (`--quant`).
impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match Self::ALL.into_iter().find(|d| d.name() == s) {
            Some(d) if d.is_whole_model_target() => Ok(d),
            Some(d) if d.traits().encode.is_some() => Err(format!(
                "{} needs rows of whole {}-value blocks, which not every model has; --quant q4 uses it where they are",
                d.name(),
                d.traits().block_cols
            )),
            Some(d) => Err(format!("{} weights are only kept from a GGUF file that has them, not made", d.name())),
            None => {
                let names: Vec<&str> =
                    Self::ALL.into_iter().rev().filter(|d| d.is_whole_model_target()).map(|d| d.name()).collect();
                Err(format!("unknown weight type '{s}' (expected {})", names.join(", ")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_names_and_indices_are_unique() {
        for (i, a) in DType::ALL.iter().enumerate() {
            assert_eq!(a.index(), i, "{a:?}: ALL is in discriminant order");
            assert_eq!(DType::from_u32(a.id()), Some(*a));
            assert_eq!(a.name().parse::<DType>().is_ok(), a.is_whole_model_target(), "{a:?}");
            for b in &DType::ALL[i + 1..] {
                assert!(a.id() != b.id() && a.name() != b.name(), "{a:?} and {b:?} collide");
            }
        }
    }

    #[test]
    fn each_dtype_round_trips_within_its_precision() {
        let (rows, cols) = (9, 256);
        let data: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let mut bytes = Vec::new();
        for dtype in DType::ALL.into_iter().filter(|d| d.traits().encode.is_some()) {
            // Each type's error budget at values up to 2 in magnitude.
            let tol = match dtype {
                DType::F32 => 0.0,
                DType::F16 => 1e-3,
                DType::Q8 => 2.0 / 127.0,
                // One 4-bit step of the range [-2, 2]: a least-squares fit
                // may clip an outlier by more than half a step.
                DType::Q4_1 | DType::Q4_K | DType::Q4_KR => 4.0 / 15.0,
                // One symmetric step of 2 / 7 (the side with 7 levels).
                DType::Q4_0 => 2.0 / 7.0,
                // Only kept from GGUF, never encoded (the filter above).
                _ => unreachable!("{dtype:?} has no encoder"),
            };
            dtype.encode(rows, cols, &data, &mut bytes);
            assert_eq!(bytes.len() as u64, dtype.n_bytes(rows as u64, cols as u64).unwrap());
            let back = dtype.decode(&bytes, rows, cols);
            for (a, b) in data.iter().zip(&back) {
                assert!((a - b).abs() <= tol, "{dtype:?}: {a} vs {b}");
            }
        }
    }
}
