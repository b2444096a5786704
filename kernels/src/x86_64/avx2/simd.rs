//! Register helpers for the AVX2 kernels: loads and stores that take fixed-size
//! arrays (so the type proves the bounds), horizontal reductions, and a
//! vectorized `exp`.
//!
//! These are safe `#[target_feature]` functions: callable without `unsafe` only
//! from code compiled with the same features, i.e. from the kernels in this
//! module tree, which are themselves only reached after the CPU check.

use std::arch::x86_64::*;

use half::f16;

/// 8 f32 from the front of `s` (panics if shorter).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub fn load8(s: &[f32]) -> __m256 {
    let a: &[f32; 8] = s.first_chunk().expect("load8: fewer than 8 values");
    // SAFETY: `a` is 8 readable f32 (32 bytes); `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(a.as_ptr()) }
}

/// Stores 8 f32 to the front of `s` (panics if shorter).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub fn store8(s: &mut [f32], v: __m256) {
    let a: &mut [f32; 8] = s.first_chunk_mut().expect("store8: fewer than 8 values");
    // SAFETY: `a` is 8 writable f32 (32 bytes); `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) }
}

/// 8 f16 from the front of `s`, widened to f32 (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub fn load8_f16(s: &[f16]) -> __m256 {
    let a: &[f16; 8] = s.first_chunk().expect("load8_f16: fewer than 8 values");
    // SAFETY: `a` is 8 readable f16 (16 bytes; `half::f16` is a transparent
    // u16); `loadu` has no alignment requirement.
    let bits = unsafe { _mm_loadu_si128(a.as_ptr().cast()) };
    _mm256_cvtph_ps(bits)
}

/// 32 i8 from the front of `s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub fn load32_i8(s: &[i8]) -> __m256i {
    let a: &[i8; 32] = s.first_chunk().expect("load32_i8: fewer than 32 values");
    // SAFETY: `a` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(a.as_ptr().cast()) }
}

/// The 16 i8 at the front of `s` in both 128-bit halves.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub fn broadcast16_i8(s: &[i8]) -> __m256i {
    let a: &[i8; 16] = s.first_chunk().expect("broadcast16_i8: fewer than 16 values");
    // SAFETY: `a` is 16 readable bytes; `loadu` has no alignment requirement.
    _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(a.as_ptr().cast()) })
}

/// Stores 32 i8 to the front of `s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub fn store32_i8(s: &mut [i8], v: __m256i) {
    let a: &mut [i8; 32] = s.first_chunk_mut().expect("store32_i8: fewer than 32 values");
    // SAFETY: `a` is 32 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(a.as_mut_ptr().cast(), v) }
}

/// Sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Maximum of the 8 lanes (none may be NaN).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub fn hmax(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
}

/// `e^x` per lane (Cephes `expf`: range reduction by `ln 2` in two parts and a
/// degree-5 polynomial); relative error within about 2 ulp of `f32::exp`.
/// `x > 88.376` gives +inf, `x < -87.336` gives 0 (`f32::exp` returns a
/// subnormal there, below 1.2e-38), NaN stays NaN.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub fn exp(x: __m256) -> __m256 {
    const HI: f32 = 88.376_26;
    const LO: f32 = -87.336_54;
    let too_big = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(HI));
    let too_small = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LO));
    let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
    let xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(LO)), _mm256_set1_ps(HI));
    // x = n ln2 + r, |r| <= ln2 / 2, with ln2 split so n × 0.693359375 is exact.
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        xc,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    // Cephes' last coefficient, 5.0000001201e-1, is 0.5 in f32.
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let r2 = _mm256_mul_ps(r, r);
    let p = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
    // 2^n by building the exponent field; n is in [-126, 127] after the clamp.
    let pow2n =
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127))));
    let y = _mm256_mul_ps(p, pow2n);
    let y = _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), too_big);
    let y = _mm256_andnot_ps(too_small, y);
    _mm256_blendv_ps(y, x, nan)
}
