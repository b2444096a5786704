//! The quant crate's errors: each one line, naming the block type and the sizes involved.

/// A buffer handed to a (de)quantizer does not have the size its block type needs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error("{ty}: {n_elements} elements is not a whole number of {block_size}-element blocks")]
    PartialBlock { ty: &'static str, n_elements: usize, block_size: usize },
    #[error("{ty}: {n_elements} elements take {expected} bytes, got {actual}")]
    ByteLength { ty: &'static str, n_elements: usize, expected: usize, actual: usize },
}
