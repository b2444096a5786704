//! Scalar matmuls of the K-quant weights (Q4_K, Q5_K, Q6_K, packed in tiles:
//! `gpt_fast_quant::kquant`) with q8 activations: the specification the SIMD
//! kernels are tested against.
//!
//! Each row's super-block is gathered back into its GGUF struct and read
//! through ggml's accessors, so this spec shares no offset arithmetic with the
//! SIMD kernels, which read the tiles in place. Activations come in q8 blocks
//! of 32 (`scale`, quants) with each block's `scale × Σ quants` (`x_sums`, as
//! llama.cpp's Q8_1 `s`), which turns the minimums of Q4_K/Q5_K into one
//! multiply per sub-block. Per 32-value block `b`, in block order:
//! - Q4_K, Q5_K (sub-block `b`, scale `sc`, minimum `m`):
//!   `acc += (d·sc) · (x_scale · Σ q·xq) − (dmin·m) · x_sum`;
//! - Q6_K (two 16-value sub-blocks `2b`, `2b + 1` with int8 scales `sc`):
//!   `acc += d · (x_scale · Σ_half sc · Σ (q − 32)·xq)`, the integer part exact.

use std::ops::Range;

use gpt_fast_quant::ggml::{BlockQ4K, BlockQ5K, BlockQ6K, QK_K};
use gpt_fast_quant::kquant::{self, q4_k::Q4K, q5_k::Q5K, q6_k::Q6K, KFormat, PackedKLayout, MAX_BLOCK_BYTES};

use crate::{Q8Acts, Q8_BLOCK};

/// Blocks of 32 activation values per 256-value super-block.
const BLOCKS_PER_SUPERBLOCK: usize = QK_K / Q8_BLOCK;

/// `out[t * out_stride + (r - rows.start)] = dot(row r, token t)` for a packed
/// Q4_K matrix `cols` wide; `x_sums[t * cols / 32 + b]` is block `b`'s
/// `scale × Σ quants`.
#[allow(clippy::too_many_arguments)] // the matmul signature plus the activation sums
pub fn matmul_q4_k(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    x_sums: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    matmul::<Q4K>(w, cols, rows, x, x_sums, n, out, out_stride, |bytes, j, xq, xs, xsum| {
        let block: BlockQ4K = bytemuck::pod_read_unaligned(bytes);
        let (sc, m) = block.scale_min(j);
        let isum: i32 = (0..Q8_BLOCK).map(|l| i32::from(block.quant(j, l)) * i32::from(xq[l])).sum();
        with_minimum(block.d.to_f32(), block.dmin.to_f32(), sc, m, isum, xs, xsum)
    });
}

/// As [`matmul_q4_k`], for Q5_K.
#[allow(clippy::too_many_arguments)] // the matmul signature plus the activation sums
pub fn matmul_q5_k(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    x_sums: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    matmul::<Q5K>(w, cols, rows, x, x_sums, n, out, out_stride, |bytes, j, xq, xs, xsum| {
        let block: BlockQ5K = bytemuck::pod_read_unaligned(bytes);
        let (sc, m) = block.scale_min(j);
        let isum: i32 = (0..Q8_BLOCK).map(|l| i32::from(block.quant(j, l)) * i32::from(xq[l])).sum();
        with_minimum(block.d.to_f32(), block.dmin.to_f32(), sc, m, isum, xs, xsum)
    });
}

/// As [`matmul_q4_k`], for Q6_K (`x_sums` unused: its quants are signed).
#[allow(clippy::too_many_arguments)] // the matmul signature plus the activation sums
pub fn matmul_q6_k(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    x_sums: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    matmul::<Q6K>(w, cols, rows, x, x_sums, n, out, out_stride, |bytes, j, xq, xs, _| {
        let block: BlockQ6K = bytemuck::pod_read_unaligned(bytes);
        let half_sum = |h: usize| -> i32 {
            let v0 = Q8_BLOCK * j + 16 * h;
            let dot: i32 = (0..16).map(|l| i32::from(block.quant(v0 + l)) * i32::from(xq[16 * h + l])).sum();
            i32::from(block.scales[v0 / 16]) * dot
        };
        block.d.to_f32() * (xs * (half_sum(0) + half_sum(1)) as f32)
    });
}

/// Q4_K / Q5_K's block term: `(d·sc) · (x_scale · isum) − (dmin·m) · x_sum`.
pub(super) fn with_minimum(d: f32, dmin: f32, sc: u8, m: u8, isum: i32, xs: f32, xsum: f32) -> f32 {
    (d * f32::from(sc)) * (xs * isum as f32) - (dmin * f32::from(m)) * xsum
}

/// The loops over tokens, rows, super-blocks and their 32-value blocks;
/// `block_term(gguf_block, j, xq, x_scale, x_sum)` is block `j`'s contribution.
#[allow(clippy::too_many_arguments)]
fn matmul<F: KFormat>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    x_sums: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    block_term: impl Fn(&[u8], usize, &[i8], f32, f32) -> f32,
) {
    let layout = PackedKLayout::new::<F>(rows.end, cols).expect("K-quant matmul: cols must be a multiple of 256");
    let nb = cols / Q8_BLOCK;
    let mut block = [0u8; MAX_BLOCK_BYTES];
    for t in 0..n {
        let (xq, xs, xsum) = (&x.quants[t * cols..][..cols], &x.scales[t * nb..][..nb], &x_sums[t * nb..][..nb]);
        for (o, r) in out[t * out_stride..].iter_mut().zip(rows.clone()) {
            let mut acc = 0f32;
            for sb in 0..layout.superblocks {
                kquant::gather_block::<F>(w, &layout, r, sb, &mut block);
                for j in 0..BLOCKS_PER_SUPERBLOCK {
                    let b = sb * BLOCKS_PER_SUPERBLOCK + j;
                    let xq = &xq[b * Q8_BLOCK..][..Q8_BLOCK];
                    acc += block_term(&block[..F::BLOCK_BYTES], j, xq, xs[b], xsum[b]);
                }
            }
            *o = acc;
        }
    }
}
