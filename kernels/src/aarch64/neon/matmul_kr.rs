//! The NEON matmul of gpt-fast's q4_kr weights (`gpt_fast_quant::q4_kr`, q8
//! activations with block sums), with SDOT where the CPU has dotprod and
//! widening multiplies without; the loops over tiles and tokens are
//! [`crate::driver::q4_kr`]'s. A q4_kr group is a Q4_K super-block record
//! without its `d`, `dmin`, so the tile reads it as the Q4_K tile does
//! ([`super::matmul_k`]: rows 0-3 and 4-7 of 4 columns per 16 bytes, row
//! `r`'s sum in lane `r % 4`), with the rows' `d`, `dmin` loaded once per
//! tile and a cut last group.

use std::arch::aarch64::*;
use std::ops::Range;

use gpt_fast_quant::q4_kr::{self, GROUP_SUBS};

use super::matmul_k::{broadcast4, dot4_widening, load32, load8_f16_bytes, scales_mins, sub_block, GroupScales};
use super::simd::{dot16_sdot, store4};
use crate::driver::q4_kr::{self as driver, KrTile};
use crate::driver::tiles::TileSums;
use crate::{Q8Acts, Q8_BLOCK};

macro_rules! entry {
    ($(#[$doc:meta])* $name:ident, $features:literal, $dot:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        #[doc = concat!("The CPU must support ", $features, ".")]
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)] // the matmul signature plus the activation sums
        pub unsafe fn $name(
            w: &[u8],
            cols: usize,
            rows: Range<usize>,
            x: &Q8Acts,
            x_sums: &[f32],
            n: usize,
            out: &mut [f32],
            out_stride: usize,
        ) {
            driver::matmul(w, cols, rows, x, x_sums, n, out, out_stride, |tile, sums| {
                let dot = |acc, w, x| $dot(acc, w, x);
                match tile.tokens {
                    4 => q4_kr_tile::<4>(&tile, sums, dot),
                    3 => q4_kr_tile::<3>(&tile, sums, dot),
                    2 => q4_kr_tile::<2>(&tile, sums, dot),
                    _ => q4_kr_tile::<1>(&tile, sums, dot),
                }
            });
        }
    };
}

entry!(
    /// As [`crate::reference::matmul_q4_kr`], with SDOT.
    matmul_q4_kr_sdot, "neon,dotprod", dot16_sdot
);
entry!(
    /// As [`crate::reference::matmul_q4_kr`], with widening multiplies.
    matmul_q4_kr, "neon", dot4_widening
);

/// The 6-bit scales and minimums of a cut group of at most 4 sub-blocks (8
/// scale bytes per row, `[byte][row]`: sub-block `j`'s scale in byte `j`,
/// its minimum in byte `j + 4`), as [`scales_mins`] gives a whole group's.
fn scales_mins_low(planes: &[u8]) -> ([u8; 64], [u8; 64]) {
    let (mut sc, mut m) = ([0u8; 64], [0u8; 64]);
    sc[..32].iter_mut().zip(&planes[..32]).for_each(|(s, &p)| *s = p & 63);
    m[..32].iter_mut().zip(&planes[32..64]).for_each(|(s, &p)| *s = p & 63);
    (sc, m)
}

/// One tile: per group, per pair of sub-blocks `(2p, 2p + 1)` (low and high
/// nibbles of the same bytes), the dot products in i32, then scaled per
/// sub-block as Q4_K's. A cut group's missing high sub-block is skipped (its
/// activations lie past the row).
#[inline]
#[target_feature(enable = "neon")]
#[allow(clippy::needless_range_loop)] // i picks the sub-block's scales and activations too
fn q4_kr_tile<const T: usize>(
    tile: &KrTile,
    sums: &mut TileSums,
    dot: impl Fn(int32x4_t, int8x16_t, int8x16_t) -> int32x4_t + Copy,
) {
    let KrTile { w, xq, xs, xsums, layout, .. } = *tile;
    let (cols, nb) = (layout.cols, layout.cols / Q8_BLOCK);
    let (low4, zero) = (vdupq_n_u8(0x0F), vdupq_n_s32(0));
    let (d, dmin) = (load8_f16_bytes(w), load8_f16_bytes(&w[q4_kr::DMIN..]));
    let mut acc = [[vdupq_n_f32(0.0); 2]; T];
    for g in 0..=layout.groups {
        let subs = if g < layout.groups { GROUP_SUBS } else { layout.tail_subs };
        if subs == 0 {
            break;
        }
        let rec = &w[layout.group_offset(g)..layout.quants_offset(g)];
        let qs = &w[layout.quants_offset(g)..];
        let (scales, mins) = if rec.len() >= 12 * 8 { scales_mins(rec) } else { scales_mins_low(rec) };
        let group = GroupScales { d, dmin, scales, mins };
        for p in 0..subs.div_ceil(2) {
            let b0 = g * GROUP_SUBS + 2 * p;
            let halves = if 2 * p + 1 < subs { 2 } else { 1 };
            // isums[t][i][h]: token t, sub-block 2p + i, rows 4h..4h + 4.
            let mut isums = [[[zero; 2]; 2]; T];
            for k in 0..8 {
                let v = load32(&qs[(8 * p + k) * 32..]);
                let q = [v.map(|v| vandq_u8(v, low4)), v.map(|v| vshrq_n_u8::<4>(v))];
                for (t, isums) in isums.iter_mut().enumerate() {
                    for i in 0..halves {
                        let x = broadcast4(xq, t * cols + (b0 + i) * Q8_BLOCK + 4 * k);
                        for (s, &q) in isums[i].iter_mut().zip(&q[i]) {
                            *s = dot(*s, vreinterpretq_s8_u8(q), x);
                        }
                    }
                }
            }
            for i in 0..halves {
                group.add_sub_block(&mut acc, 2 * p + i, &sub_block(&isums, i), xs, xsums, nb, b0 + i);
            }
        }
    }
    for (sums, acc) in sums.iter_mut().zip(&acc) {
        store4(sums, acc[0]);
        store4(&mut sums[4..], acc[1]);
    }
}
