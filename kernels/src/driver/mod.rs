//! The parts of the kernels that do not depend on the instruction set, once:
//! shape checks, the loops that cut a matmul into register tiles (rows, token
//! groups, column blocks, tails, scratch) and attention's loop over key
//! blocks with its online softmax. Each driver is generic over the
//! micro-kernels an ISA module supplies (its register tiles), so an ISA file
//! holds only those and its `#[target_feature]` entry points.
//!
//! The drivers carry no target features and use no intrinsics: they are
//! `#[inline(always)]`, so each is compiled into the ISA's entry point that
//! calls it, with that entry's features, and the micro-kernels (closures or
//! trait methods defined in the ISA module) inline into it there.

// Not every ISA uses every driver.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

pub(crate) mod attention;
pub(crate) mod float;
pub(crate) mod float_gemm;
pub(crate) mod ktile;
pub(crate) mod q4_kr;
pub(crate) mod q4q5;
pub(crate) mod q8;
pub(crate) mod tiles;

use std::ops::Range;

/// The entry checks of every matmul (`out[t * out_stride + (r - rows.start)]`
/// for `r` in `rows`, `t < n`): `false` when there is nothing to compute,
/// and a panic when `out` is too short for the results.
#[inline(always)]
pub(crate) fn matmul_out_checked(rows: &Range<usize>, n: usize, out: &[f32], out_stride: usize) -> bool {
    if rows.is_empty() || n == 0 {
        return false;
    }
    assert!((n - 1) * out_stride + rows.len() <= out.len(), "matmul: output too short");
    true
}
