//! The dispatch table: one function pointer per operation, filled once for the
//! instruction set chosen at start-up.

use std::ops::Range;

use half::f16;

use crate::q4q5::{Q4Q5Weight, Q8SumActs};
use crate::{reference, AttnShape, Matrix, Q8Acts, WeightData};

/// An instruction-set level gpt-fast has kernels for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
            Self::Neon => "neon",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Scalar, Self::Avx2, Self::Avx512, Self::Neon].into_iter().find(|i| i.name() == s)
    }
}

type MatmulF32 = fn(&[f32], usize, Range<usize>, &[f32], usize, &mut [f32], usize);
type MatmulF16 = fn(&[f16], usize, Range<usize>, &[f32], usize, &mut [f32], usize);
type MatmulQ8 = fn(&[i8], &[f16], usize, Range<usize>, &Q8Acts, usize, &mut [f32], usize);
type MatmulQ4Q5 = fn(&Q4Q5Weight, usize, Range<usize>, &Q8SumActs, usize, &mut [f32], usize);
/// `(packed weight, cols, rows, x, x_sums, n, out, out_stride)`: see [`reference::matmul_q4_k`].
pub type MatmulK = fn(&[u8], usize, Range<usize>, &Q8Acts, &[f32], usize, &mut [f32], usize);
/// `(shape, q, keys, values, scratch, out)`: see [`reference::attention`].
pub type Attention<T> = fn(&AttnShape, &[f32], &[T], &[T], &mut [f32], &mut [f32]);

/// The kernels the model calls, for one instruction set.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    pub isa: Isa,
    /// See [`Kernels::name`].
    pub(crate) name: &'static str,
    pub matmul_f32: MatmulF32,
    pub matmul_f16: MatmulF16,
    pub matmul_q8: MatmulQ8,
    /// Q4_0, Q4_1, Q5_0 and Q5_1 weights (the weight says which).
    pub matmul_q4q5: MatmulQ4Q5,
    /// K-quant matmuls (weights packed by `gpt_fast_quant::kquant`).
    pub matmul_q4_k: MatmulK,
    pub matmul_q5_k: MatmulK,
    pub matmul_q6_k: MatmulK,
    pub quantize_q8_acts: fn(&[f32], &mut [i8], &mut [f32]),
    pub rmsnorm: fn(&[f32], &[f32], f32, &mut [f32]),
    pub layernorm: fn(&[f32], &[f32], &[f32], f32, &mut [f32]),
    pub softmax: fn(&mut [f32]),
    pub rope: fn(&mut [f32], usize, &[f32], &[f32]),
    pub swiglu: fn(&[f32], &[f32], &mut [f32]),
    pub gelu_tanh: fn(&mut [f32]),
    pub add: fn(&mut [f32], &[f32]),
    /// Attention over an f32 KV cache.
    pub attention_f32: Attention<f32>,
    /// Attention over an f16 KV cache.
    pub attention_f16: Attention<f16>,
}

impl Kernels {
    /// The scalar reference kernels: available everywhere.
    pub fn scalar() -> Self {
        Self {
            isa: Isa::Scalar,
            name: "scalar",
            matmul_f32: reference::matmul_f32,
            matmul_f16: reference::matmul_f16,
            matmul_q8: reference::matmul_q8,
            matmul_q4q5: reference::matmul_q4q5,
            matmul_q4_k: reference::matmul_q4_k,
            matmul_q5_k: reference::matmul_q5_k,
            matmul_q6_k: reference::matmul_q6_k,
            quantize_q8_acts: reference::quantize_q8_acts,
            rmsnorm: reference::rmsnorm,
            layernorm: reference::layernorm,
            softmax: reference::softmax,
            rope: reference::rope,
            swiglu: reference::swiglu,
            gelu_tanh: reference::gelu_tanh,
            add: reference::add,
            attention_f32: reference::attention::<f32>,
            attention_f16: reference::attention::<f16>,
        }
    }

    /// The kernels for `isa`, or `None` when this CPU lacks it.
    pub fn for_isa(isa: Isa) -> Option<Self> {
        match isa {
            Isa::Scalar => Some(Self::scalar()),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => crate::x86_64::avx2::kernels(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => crate::x86_64::avx512::kernels(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => crate::aarch64::neon::kernels(),
            _ => None,
        }
    }

    /// The table's name: the ISA's, or a variant within it chosen when the
    /// table was built (`neon+dotprod`: NEON with the SDOT q8 matmul).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The best kernels this CPU supports.
    pub fn best() -> Self {
        [Isa::Avx512, Isa::Avx2, Isa::Neon].into_iter().find_map(Self::for_isa).unwrap_or_else(Self::scalar)
    }

    /// `out[t * out_stride + (r - rows.start)] = (W x_t)[r]` for `r` in `rows`,
    /// `t < n`. q8 weights read `x_q8` (the same rows quantized); the others `x`.
    pub fn matmul(
        &self,
        w: &Matrix,
        rows: Range<usize>,
        x: &[f32],
        x_q8: &Q8Acts,
        n: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        debug_assert!(rows.end <= w.rows && x.len() >= n * w.cols);
        match w.data {
            WeightData::F32(d) => (self.matmul_f32)(d, w.cols, rows, x, n, out, out_stride),
            WeightData::F16(d) => (self.matmul_f16)(d, w.cols, rows, x, n, out, out_stride),
            WeightData::Q8 { quants, scales } => {
                (self.matmul_q8)(quants, scales, w.cols, rows, x_q8, n, out, out_stride)
            }
        }
    }
}
