//! Register helpers for the AVX-512 kernels: loads and stores that take
//! fixed-size arrays or slices (so the type or a mask proves the bounds).
//!
//! As in the AVX2 module, these are safe `#[target_feature]` functions,
//! callable without `unsafe` only from the kernels of this module tree, which
//! are themselves only reached after the CPU check.

use std::arch::x86_64::*;

use half::f16;

/// 64 i8 (two rows' blocks of 32) from the front of `s`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub fn load64_i8(s: &[i8]) -> __m512i {
    let a: &[i8; 64] = s.first_chunk().expect("load64_i8: fewer than 64 values");
    // SAFETY: `a` is 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(a.as_ptr().cast()) }
}

/// The 16 i8 at the front of `s` in each of the four 128-bit lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub fn broadcast16_i8(s: &[i8]) -> __m512i {
    let a: &[i8; 16] = s.first_chunk().expect("broadcast16_i8: fewer than 16 values");
    // SAFETY: `a` is 16 readable bytes; `loadu` has no alignment requirement.
    _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(a.as_ptr().cast()) })
}

/// 16 f32 from the front of `s` (panics if shorter).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub fn load16(s: &[f32]) -> __m512 {
    let a: &[f32; 16] = s.first_chunk().expect("load16: fewer than 16 values");
    // SAFETY: `a` is 16 readable f32 (64 bytes); `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_ps(a.as_ptr()) }
}

/// 16 f16 from the front of `s`, widened to f32 (exact).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub fn load16_f16(s: &[f16]) -> __m512 {
    let a: &[f16; 16] = s.first_chunk().expect("load16_f16: fewer than 16 values");
    // SAFETY: `a` is 16 readable f16 (32 bytes; `half::f16` is a transparent
    // u16); `loadu` has no alignment requirement.
    let bits = unsafe { _mm256_loadu_si256(a.as_ptr().cast()) };
    _mm512_cvtph_ps(bits)
}

/// The first `min(s.len(), 16)` f32 of `s`, the other lanes zero.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub fn load16_partial(s: &[f32]) -> __m512 {
    let mask = lanes(s.len());
    // SAFETY: lanes at or past `s.len()` are masked off, and a masked-off lane
    // is neither read nor able to fault; the others are in `s`.
    unsafe { _mm512_maskz_loadu_ps(mask, s.as_ptr()) }
}

/// The first `min(s.len(), 16)` f16 of `s` widened to f32, the other lanes zero.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub fn load16_f16_partial(s: &[f16]) -> __m512 {
    let mask = lanes(s.len());
    // SAFETY: as in `load16_partial`: only lanes inside `s` are read.
    let bits = unsafe { _mm256_maskz_loadu_epi16(mask, s.as_ptr().cast()) };
    _mm512_cvtph_ps(bits)
}

/// Stores 16 f32 to the front of `s` (panics if shorter).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub fn store16(s: &mut [f32], v: __m512) {
    let a: &mut [f32; 16] = s.first_chunk_mut().expect("store16: fewer than 16 values");
    // SAFETY: `a` is 16 writable f32 (64 bytes); `storeu` has no alignment requirement.
    unsafe { _mm512_storeu_ps(a.as_mut_ptr(), v) }
}

/// The mask of the first `min(len, 16)` lanes.
#[inline]
fn lanes(len: usize) -> __mmask16 {
    if len >= 16 {
        0xFFFF
    } else {
        (1u16 << len) - 1
    }
}
