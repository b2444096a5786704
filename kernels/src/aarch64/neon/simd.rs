//! Register helpers for the NEON kernels: loads and stores that take fixed-size
//! arrays (so the type proves the bounds), horizontal reductions, the two
//! 16-byte integer dot products of the q8 matmul, f16 widening and a vectorized
//! `exp`.
//!
//! These are safe `#[target_feature]` functions: callable without `unsafe` only
//! from code compiled with the same features, i.e. from the kernels in this
//! module tree, which are themselves only reached after the CPU check.

use std::arch::aarch64::*;
use std::arch::asm;

use half::f16;

/// 4 f32 from the front of `s` (panics if shorter).
#[inline]
#[target_feature(enable = "neon")]
pub fn load4(s: &[f32]) -> float32x4_t {
    let a: &[f32; 4] = s.first_chunk().expect("load4: fewer than 4 values");
    // SAFETY: `a` is 4 readable f32 (16 bytes); `ld1` needs only f32 alignment.
    unsafe { vld1q_f32(a.as_ptr()) }
}

/// 8 f32 from the front of `s`, as two registers.
#[inline]
#[target_feature(enable = "neon")]
pub fn load8(s: &[f32]) -> [float32x4_t; 2] {
    [load4(s), load4(&s[4..])]
}

/// Stores 4 f32 to the front of `s` (panics if shorter).
#[inline]
#[target_feature(enable = "neon")]
pub fn store4(s: &mut [f32], v: float32x4_t) {
    let a: &mut [f32; 4] = s.first_chunk_mut().expect("store4: fewer than 4 values");
    // SAFETY: `a` is 4 writable f32 (16 bytes); `st1` needs only f32 alignment.
    unsafe { vst1q_f32(a.as_mut_ptr(), v) }
}

/// 8 f16 from the front of `s`, widened to f32 (exact), as two registers.
///
/// `fcvtl`/`fcvtl2` are emitted with `asm!`: they are base ARMv8.0 Advanced SIMD
/// (no FEAT_FP16 needed), but their intrinsics (`vcvt_f32_f16`, on the
/// `float16x4_t` type) are only stable since Rust 1.94, above this crate's
/// `rust-version`.
#[inline]
#[target_feature(enable = "neon")]
pub fn load8_f16(s: &[f16]) -> [float32x4_t; 2] {
    let a: &[f16; 8] = s.first_chunk().expect("load8_f16: fewer than 8 values");
    // SAFETY: `a` is 8 readable f16 (16 bytes; `half::f16` is a transparent
    // u16, so u16 alignment holds); `ld1` needs only u16 alignment.
    let bits = unsafe { vld1q_u16(a.as_ptr().cast()) };
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: `fcvtl`/`fcvtl2` exist on every AArch64 CPU with Advanced SIMD,
    // which this function requires; they touch only the three named registers
    // (`out` never shares a register with `in`, so `bits` is intact for the
    // second instruction), no memory, stack or flags.
    unsafe {
        asm!(
            "fcvtl {lo:v}.4s, {bits:v}.4h",
            "fcvtl2 {hi:v}.4s, {bits:v}.8h",
            bits = in(vreg) bits,
            lo = out(vreg) lo,
            hi = out(vreg) hi,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    [lo, hi]
}

/// 16 i8 from the front of `s`.
#[inline]
#[target_feature(enable = "neon")]
pub fn load16_i8(s: &[i8]) -> int8x16_t {
    let a: &[i8; 16] = s.first_chunk().expect("load16_i8: fewer than 16 values");
    // SAFETY: `a` is 16 readable bytes; `ld1` has no alignment requirement for bytes.
    unsafe { vld1q_s8(a.as_ptr()) }
}

/// Stores 16 i8 to the front of `s`.
#[inline]
#[target_feature(enable = "neon")]
pub fn store16_i8(s: &mut [i8], v: int8x16_t) {
    let a: &mut [i8; 16] = s.first_chunk_mut().expect("store16_i8: fewer than 16 values");
    // SAFETY: `a` is 16 writable bytes; `st1` has no alignment requirement for bytes.
    unsafe { vst1q_s8(a.as_mut_ptr(), v) }
}

/// Sum of the 4 lanes.
#[inline]
#[target_feature(enable = "neon")]
pub fn hsum(v: float32x4_t) -> f32 {
    vaddvq_f32(v)
}

/// Maximum of the 4 lanes, skipping quiet NaNs (`fmaxnmv`) as `f32::max` does.
#[inline]
#[target_feature(enable = "neon")]
pub fn hmax(v: float32x4_t) -> f32 {
    vmaxnmvq_f32(v)
}

/// `acc + Σ` of the 16 products `w[i] · x[i]`, spread over 4 i32 lanes (which
/// lane holds which products differs between [`dot16_sdot`] and
/// [`dot16_widening`]; only the sum over the lanes is defined). Exact.
///
/// SDOT: each i32 lane gets the sum of 4 adjacent products, one instruction.
/// `vdotq_s32` is still unstable (`stdarch_neon_dotprod`), so it is emitted with
/// `asm!`; `#[target_feature(enable = "dotprod")]` makes the assembler accept it.
#[inline]
#[target_feature(enable = "neon,dotprod")]
pub fn dot16_sdot(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: `sdot` exists on CPUs with the dotprod extension, which this
    // function requires; it touches only the three named registers, no memory,
    // stack or flags.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {x:v}.16b",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            x = in(vreg) x,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// As [`dot16_sdot`], with base NEON: `smull` and `smlal2` give 8 i16 lanes of
/// `w[k]·x[k] + w[k+8]·x[k+8]`, `sadalp` adds adjacent pairs into the i32 lanes.
///
/// Exact while no i16 lane overflows: `|w| <= 127` (q8 weights, docs/FORMAT.md)
/// and `|x| <= 128` bound a lane by `2 × 127 × 128 = 32512 < 32767`.
#[inline]
#[target_feature(enable = "neon")]
pub fn dot16_widening(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    let prod = vmlal_high_s8(vmull_s8(vget_low_s8(w), vget_low_s8(x)), w, x);
    vpadalq_s16(acc, prod)
}

/// `e^x` per lane: the same algorithm and constants as the AVX2 `exp` (Cephes
/// `expf`: range reduction by `ln 2` in two parts and a degree-5 polynomial);
/// relative error within about 2 ulp of `f32::exp`. `x > 88.376` gives +inf,
/// `x < -87.336` gives 0 (`f32::exp` returns a subnormal there, below
/// 1.2e-38), NaN stays NaN.
#[inline]
#[target_feature(enable = "neon")]
pub fn exp(x: float32x4_t) -> float32x4_t {
    const HI: f32 = 88.376_26;
    const LO: f32 = -87.336_54;
    let too_big = vcgtq_f32(x, vdupq_n_f32(HI));
    let too_small = vcltq_f32(x, vdupq_n_f32(LO));
    let not_nan = vceqq_f32(x, x);
    let xc = vminq_f32(vmaxq_f32(x, vdupq_n_f32(LO)), vdupq_n_f32(HI));
    // x = n ln2 + r, |r| <= ln2 / 2, with ln2 split so n × 0.693359375 is exact.
    // `frintn` rounds half to even, as AVX2's `_MM_FROUND_TO_NEAREST_INT`.
    let n = vrndnq_f32(vmulq_f32(xc, vdupq_n_f32(std::f32::consts::LOG2_E)));
    let r = vfmsq_f32(xc, n, vdupq_n_f32(0.693_359_4));
    let r = vfmsq_f32(r, n, vdupq_n_f32(-2.121_944_4e-4));
    // Cephes' last coefficient, 5.0000001201e-1, is 0.5 in f32.
    let mut p = vdupq_n_f32(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        p = vfmaq_f32(vdupq_n_f32(c), p, r);
    }
    let r2 = vmulq_f32(r, r);
    let p = vaddq_f32(vfmaq_f32(r, p, r2), vdupq_n_f32(1.0));
    // 2^n by building the exponent field; n is in [-126, 127] after the clamp.
    let pow2n = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127))));
    let y = vmulq_f32(p, pow2n);
    let y = vbslq_f32(too_big, vdupq_n_f32(f32::INFINITY), y);
    let y = vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(y), too_small));
    vbslq_f32(not_nan, y, x)
}
