//! The AVX-512 matmul of gpt-fast's q4_kr weights (`gpt_fast_quant::q4_kr`,
//! q8 activations with block sums); the loops over tiles and tokens are
//! [`crate::driver::q4_kr`]'s. A q4_kr group is a Q4_K super-block record
//! without its `d`, `dmin`, so the tile reads it with the AVX-512 Q4_K
//! tile's inner product ([`super::matmul_k::group_dots`]: two 4-column
//! units per 512-bit load, `vpdpbusd`), with the rows' `d`, `dmin` loaded
//! once per tile and a cut last group, as the AVX2 q4_kr tile does.

use std::arch::x86_64::*;
use std::ops::Range;

use gpt_fast_quant::q4_kr::{self, GROUP_SUBS};

use super::matmul_k::{add_sub_block, group_dots};
use crate::driver::q4_kr::{self as driver, KrTile};
use crate::driver::tiles::TileSums;
use crate::x86_64::avx2::matmul::prefetch_ahead;
use crate::x86_64::avx2::matmul_k::{load8_f16_bytes, scales_mins, GroupScales};
use crate::x86_64::avx2::matmul_kr::scales_mins_low;
use crate::x86_64::avx2::simd::store8;
use crate::{Q8Acts, Q8_BLOCK};

/// As [`crate::reference::matmul_q4_kr`]: the AVX2 kernel's float steps on
/// the same exact integer sums, so both give the same bits.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)] // the matmul signature plus the activation sums
pub unsafe fn matmul_q4_kr_vnni(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &Q8Acts,
    x_sums: &[f32],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    driver::matmul(w, cols, rows, x, x_sums, n, out, out_stride, |tile, sums| match tile.tokens {
        4 => q4_kr_tile::<4>(&tile, sums),
        3 => q4_kr_tile::<3>(&tile, sums),
        2 => q4_kr_tile::<2>(&tile, sums),
        _ => q4_kr_tile::<1>(&tile, sums),
    });
}

/// One tile: per group, per pair of sub-blocks `(2p, 2p + 1)`, their exact
/// integer sums, then each scaled as Q4_K's. A cut group's missing high
/// sub-block is skipped (its activations lie past the row).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4_kr_tile<const T: usize>(tile: &KrTile, sums: &mut TileSums) {
    let KrTile { w, xq, xs, xsums, layout, .. } = *tile;
    let (cols, nb) = (layout.cols, layout.cols / Q8_BLOCK);
    let (d, dmin) = (load8_f16_bytes(w), load8_f16_bytes(&w[q4_kr::DMIN..]));
    let no_bits = [_mm512_setzero_si512(); 2];
    let mut acc = [_mm256_setzero_ps(); T];
    for g in 0..=layout.groups {
        let subs = if g < layout.groups { GROUP_SUBS } else { layout.tail_subs };
        if subs == 0 {
            break;
        }
        let rec = &w[layout.group_offset(g)..layout.quants_offset(g)];
        let qs = &w[layout.quants_offset(g)..];
        if T == 1 {
            prefetch_ahead(bytemuck::cast_slice(&w[layout.group_offset(g)..]));
        }
        let (scales, mins) = if rec.len() >= 12 * 8 { scales_mins(rec) } else { scales_mins_low(rec) };
        let group = GroupScales { d, dmin, scales, mins };
        for p in 0..subs.div_ceil(2) {
            let b0 = g * GROUP_SUBS + 2 * p;
            let halves = if 2 * p + 1 < subs { 2 } else { 1 };
            let isums = group_dots::<T, false>(&qs[8 * p * 32..][..8 * 32], &[], no_bits, xq, cols, b0, halves);
            for i in 0..halves {
                add_sub_block(&group, &mut acc, &isums, i, 2 * p + i, (xs, xsums, nb), b0 + i);
            }
        }
    }
    for (sums, &acc) in sums.iter_mut().zip(&acc) {
        store8(sums, acc);
    }
}
