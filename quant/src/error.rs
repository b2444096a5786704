//! The quant crate's errors: each one line, naming the block type and the sizes involved.

/// A buffer handed to a (de)quantizer does not have the size its block type needs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The element count `n_elements` is not a multiple of the type's block size.
    #[error("{ty}: {n_elements} elements is not a whole number of {block_size}-element blocks")]
    PartialBlock {
        /// The block type's name (ggml's).
        ty: &'static str,
        /// The elements asked for.
        n_elements: usize,
        /// Elements per block of `ty`.
        block_size: usize,
    },
    /// The byte buffer is not exactly the size of `n_elements` values of the type.
    #[error("{ty}: {n_elements} elements take {expected} bytes, got {actual}")]
    ByteLength {
        /// The block type's name (ggml's).
        ty: &'static str,
        /// The elements asked for.
        n_elements: usize,
        /// The bytes those elements take.
        expected: usize,
        /// The bytes given.
        actual: usize,
    },
}
