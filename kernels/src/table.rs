//! The dispatch table: one function pointer per operation, filled once for the
//! instruction set chosen at start-up.

use std::ops::Range;

use half::f16;

use crate::{reference, ActForm, Acts, AttnShape, DType, Matrix};

/// An instruction-set level gpt-fast has kernels for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// The reference kernels ([`crate::reference`]): every CPU.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// x86-64 with AVX-512 F, BW, VL and VNNI (and AVX2, FMA, F16C).
    Avx512,
    /// AArch64 NEON (SDOT used where present).
    Neon,
}

impl Isa {
    /// Its name in `GPT_FAST_ISA` and in the CLI's reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
            Self::Neon => "neon",
        }
    }

    /// The level named `s` ([`Isa::name`]); `None` for any other string.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Scalar, Self::Avx2, Self::Avx512, Self::Neon].into_iter().find(|i| i.name() == s)
    }
}

/// One dtype's matmul, `(w, rows, x, n, out, out_stride)`:
/// `out[t * out_stride + (r - rows.start)] = (W x_t)[r]` for `r` in `rows`,
/// `t < n`, reading `x` in the form `w.dtype.act()` names.
pub type Matmul = fn(&Matrix, Range<usize>, &Acts, usize, &mut [f32], usize);
/// Which of its two summation orders a float matmul gives a call's tokens:
/// the order is a token's role's, never the batch's, so a token's results
/// do not depend on the tokens beside it (a server's batch, a prompt's
/// chunks, the thread split). The quantized dtypes have one kernel for both
/// (each block's dot product is exact in integers, and the blocks are summed
/// in order whatever the batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Prompt tokens (prefill, perplexity, any count, one included): the
    /// GEMM form, one FMA chain per output over the columns in order, which
    /// register tiles with the tokens along the vector lanes compute fast.
    Prefill,
    /// Generated tokens fed back (decode, alone or a batch of sequences'):
    /// the dot form, a one-token GEMV's order (vector accumulators over the
    /// columns, one horizontal sum), which reads the weights at memory speed.
    Decode,
}

/// `(shape, q, keys, values, scratch, out)`: see [`reference::attention`].
pub type Attention<T> = fn(&AttnShape, &[f32], &[T], &[T], &mut [f32], &mut [f32]);

/// The kernels the model calls, for one instruction set.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    /// The instruction set the table was filled for.
    pub isa: Isa,
    /// See [`Kernels::name`].
    pub(crate) name: &'static str,
    /// By [`DType::index`]: the ISA's kernel where it has one, else the reference.
    pub(crate) matmuls: [Matmul; DType::COUNT],
    /// By [`DType::index`]: the matmul for [`Role::Prefill`] tokens where a
    /// dtype has one of its own (the ISAs' float GEMM forms), else `None`
    /// ([`Kernels::matmuls`]'s kernel serves both roles).
    pub(crate) prefill_matmuls: [Option<Matmul>; DType::COUNT],
    /// `(x, quants, scales)`: see [`reference::quantize_q8_acts`].
    pub quantize_q8_acts: fn(&[f32], &mut [i8], &mut [f32]),
    /// `(x, weight, eps, out)`: see [`reference::rmsnorm`].
    pub rmsnorm: fn(&[f32], &[f32], f32, &mut [f32]),
    /// `(x, weight, bias, eps, out)`: see [`reference::layernorm`].
    pub layernorm: fn(&[f32], &[f32], &[f32], f32, &mut [f32]),
    /// In place: see [`reference::softmax`].
    pub softmax: fn(&mut [f32]),
    /// `(x, head_dim, cos, sin)`: see [`reference::rope`].
    pub rope: fn(&mut [f32], usize, &[f32], &[f32]),
    /// `(gate, up, out)`: see [`reference::swiglu`].
    pub swiglu: fn(&[f32], &[f32], &mut [f32]),
    /// In place: see [`reference::gelu_tanh`].
    pub gelu_tanh: fn(&mut [f32]),
    /// `(acc, x)`: see [`reference::add`].
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
            matmuls: reference::matmuls(),
            prefill_matmuls: [None; DType::COUNT],
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

    /// `dtype`'s matmul in this table.
    pub fn matmul_for(&self, dtype: DType) -> Matmul {
        self.matmuls[dtype.index()]
    }

    /// `dtype`'s matmul for tokens of `role`.
    pub fn matmul_for_role(&self, dtype: DType, role: Role) -> Matmul {
        match role {
            Role::Prefill => self.prefill_matmuls[dtype.index()].unwrap_or(self.matmuls[dtype.index()]),
            Role::Decode => self.matmuls[dtype.index()],
        }
    }

    /// Whether `dtype`'s matmul sums in another order for each [`Role`]: a
    /// call's tokens must then all have the same role.
    pub fn role_changes_order(&self, dtype: DType) -> bool {
        self.prefill_matmuls[dtype.index()].is_some()
    }

    /// Puts an ISA's kernel for `dtype` into its table.
    pub(crate) fn set_matmul(&mut self, dtype: DType, kernel: Matmul) {
        self.matmuls[dtype.index()] = kernel;
    }

    /// Puts an ISA's kernel for `dtype`'s [`Role::Prefill`] tokens into its table.
    pub(crate) fn set_prefill_matmul(&mut self, dtype: DType, kernel: Matmul) {
        self.prefill_matmuls[dtype.index()] = Some(kernel);
    }

    /// `out[t * out_stride + (r - rows.start)] = (W x_t)[r]` for `r` in `rows`,
    /// `t < n`, with `x` prepared by [`Kernels::quantize_acts`] for
    /// `w.dtype.act()`: [`Kernels::matmul_as`] for [`Role::Decode`] tokens.
    pub fn matmul(&self, w: &Matrix, rows: Range<usize>, x: &Acts, n: usize, out: &mut [f32], out_stride: usize) {
        self.matmul_as(Role::Decode, w, rows, x, n, out, out_stride);
    }

    /// As [`Kernels::matmul`], for `n` tokens of `role` (see [`Role`]).
    #[allow(clippy::too_many_arguments)] // the matmul signature and the role
    pub fn matmul_as(
        &self,
        role: Role,
        w: &Matrix,
        rows: Range<usize>,
        x: &Acts,
        n: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        debug_assert!(rows.end <= w.rows);
        (self.matmul_for_role(w.dtype, role))(w, rows, x, n, out, out_stride)
    }

    /// Prepares rows of activations `x` in `form`: quants and scales (`x.len()`
    /// and `x.len() / 32` long) for the q8 forms, and the blocks' scaled sums
    /// for [`ActForm::Q8Sums`]; nothing for f32.
    pub fn quantize_acts(&self, form: ActForm, x: &[f32], quants: &mut [i8], scales: &mut [f32], sums: &mut [f32]) {
        match form {
            ActForm::F32 => {}
            ActForm::Q8 => (self.quantize_q8_acts)(x, quants, scales),
            ActForm::Q8Sums => {
                (self.quantize_q8_acts)(x, quants, scales);
                reference::q8_block_sums(quants, scales, sums);
            }
        }
    }
}
