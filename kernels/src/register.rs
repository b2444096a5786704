//! How an instruction set puts its matmuls into its [`crate::Kernels`] table.
//!
//! Every ISA's matmul entry points are `#[target_feature]` functions taking the
//! views their dtype's layout needs (f32 or f16 values, q8 planes, K-quant
//! tiles, Q4/Q5 planes); the table holds one safe [`crate::Matmul`] per dtype.
//! The glue between the two (unpack the views, call the entry point) is the
//! same for every ISA, so it is written once here.

/// Registers `$kernel` as table `$k`'s matmul for `$dtype`, behind a safe
/// closure with the [`crate::Matmul`] signature that unpacks the views the
/// entry point takes (`f32`, `f16`, `q8`, `kquant` or `q4q5`); `prefill f32`
/// and `prefill f16` register a float dtype's matmul for prefill tokens.
///
/// Only for an ISA's `kernels()`, after it checked every CPU feature that
/// `$kernel` enables: the closure is created there, after the check, and is
/// reachable only through the table `kernels()` returns. That is the proof the
/// `unsafe` call in each closure relies on.
macro_rules! register_matmul {
    ($k:expr, $dtype:expr, f32 => $kernel:path) => {
        $k.set_matmul($dtype, |w, rows, x, n, out, out_stride| {
            // SAFETY: registered by the ISA's `kernels()` after its feature check (see the macro).
            unsafe { $kernel(w.f32s(), w.cols, rows, x.x, n, out, out_stride) }
        })
    };
    ($k:expr, $dtype:expr, f16 => $kernel:path) => {
        $k.set_matmul($dtype, |w, rows, x, n, out, out_stride| {
            // SAFETY: registered by the ISA's `kernels()` after its feature check (see the macro).
            unsafe { $kernel(w.f16s(), w.cols, rows, x.x, n, out, out_stride) }
        })
    };
    // The GEMM form of a float dtype, for prefill tokens (see [`crate::Role`]).
    ($k:expr, $dtype:expr, prefill f32 => $kernel:path) => {
        $k.set_prefill_matmul($dtype, |w, rows, x, n, out, out_stride| {
            // SAFETY: registered by the ISA's `kernels()` after its feature check (see the macro).
            unsafe { $kernel(w.f32s(), w.cols, rows, x.x, n, out, out_stride) }
        })
    };
    ($k:expr, $dtype:expr, prefill f16 => $kernel:path) => {
        $k.set_prefill_matmul($dtype, |w, rows, x, n, out, out_stride| {
            // SAFETY: registered by the ISA's `kernels()` after its feature check (see the macro).
            unsafe { $kernel(w.f16s(), w.cols, rows, x.x, n, out, out_stride) }
        })
    };
    ($k:expr, $dtype:expr, q8 => $kernel:path) => {
        $k.set_matmul($dtype, |w, rows, x, n, out, out_stride| {
            let (quants, scales) = w.q8_planes();
            // SAFETY: registered by the ISA's `kernels()` after its feature check (see the macro).
            unsafe { $kernel(quants, scales, w.cols, rows, &x.q8, n, out, out_stride) }
        })
    };
    ($k:expr, $dtype:expr, kquant => $kernel:path) => {
        $k.set_matmul($dtype, |w, rows, x, n, out, out_stride| {
            // SAFETY: registered by the ISA's `kernels()` after its feature check (see the macro).
            unsafe { $kernel(w.data, w.cols, rows, &x.q8, x.q8.sums, n, out, out_stride) }
        })
    };
    ($k:expr, $dtype:expr, q4q5 => $kernel:path) => {
        $k.set_matmul($dtype, |w, rows, x, n, out, out_stride| {
            let (weight, acts) = $crate::q4q5::views(w, x);
            // SAFETY: registered by the ISA's `kernels()` after its feature check (see the macro).
            unsafe { $kernel(&weight, w.cols, rows, &acts, n, out, out_stride) }
        })
    };
}

pub(crate) use register_matmul;

/// Defines, in an ISA module, `fn table(isa, name) -> Kernels`: its table with
/// the reference matmuls (the ISA then registers its own with
/// [`register_matmul!`]) and every other entry pointing at a private safe
/// wrapper around the ISA's `#[target_feature]` function of the same name and
/// signature in its submodules `matmul` (the activation quantizer),
/// `elementwise` and `attention`.
///
/// `table` is private and is only to be called by the ISA's `kernels()` after
/// its feature check, so the wrappers are reachable only through a table built
/// after that check. That is the proof their `unsafe` calls rely on.
macro_rules! isa_table {
    () => {
        isa_table! {
            matmul::quantize_q8_acts => fn quantize_q8_acts(x: &[f32], quants: &mut [i8], scales: &mut [f32]);
            elementwise::rmsnorm => fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]);
            elementwise::layernorm => fn layernorm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]);
            elementwise::softmax => fn softmax(x: &mut [f32]);
            elementwise::rope => fn rope(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]);
            elementwise::swiglu => fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]);
            elementwise::gelu_tanh => fn gelu_tanh(x: &mut [f32]);
            elementwise::add => fn add(acc: &mut [f32], x: &[f32]);
            attention::attention_f32 => fn attention_f32(
                shape: &$crate::AttnShape, q: &[f32], keys: &[f32], values: &[f32], scratch: &mut [f32], out: &mut [f32]
            );
            attention::attention_f16 => fn attention_f16(
                shape: &$crate::AttnShape, q: &[f32], keys: &[half::f16], values: &[half::f16], scratch: &mut [f32], out: &mut [f32]
            );
        }
    };
    ($($kernel:path => fn $name:ident($($arg:ident: $ty:ty),* $(,)?);)*) => {
        fn table(isa: $crate::Isa, name: &'static str) -> $crate::Kernels {
            $crate::Kernels {
                isa,
                name,
                matmuls: $crate::reference::matmuls(),
                prefill_matmuls: [None; $crate::DType::COUNT],
                $($name),*
            }
        }

        $(
            fn $name($($arg: $ty),*) {
                // SAFETY: reachable only through a table built by `table`, which
                // the ISA's `kernels()` calls after its feature check (see the macro).
                unsafe { $kernel($($arg),*) }
            }
        )*
    };
}

pub(crate) use isa_table;
