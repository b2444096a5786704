//! ggml's tensor types, as stored in GGUF files, and their scalar dequantizers.
//!
//! Each quantized type is a `#[repr(C)]` block struct laid out byte for byte as
//! in ggml (`ggml-common.h`), with a `dequantize_block` that performs the same
//! f32 operations in the same order as ggml's reference `dequantize_row_*`
//! (`ggml-quants.c`), so the results are bit-identical to it and to the gguf
//! Python package's numpy reference (`gguf.quants.dequantize`), which the
//! fixture tests check (`quant/tests/ggml_fixtures.rs`).
//!
//! One caveat on "bit-identical to ggml": C compilers may contract `a * b + c`
//! into a fused multiply-add, so a ggml binary built that way can differ from
//! its own source in the last bit for Q4_1 and the K-quants. Rust never
//! contracts, so these decoders match the unfused reading of the source.
//!
//! GGUF is little-endian and so is every target gpt-fast builds for (see
//! `src/format/spec.rs`), so block fields are read in host order.

mod kquants;
mod legacy;
mod lookup;
mod ternary;

use half::f16;

use crate::QuantError;

pub(crate) use kquants::scale_min_k4;
pub use kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, QK_K};
pub use legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK4_0, QK4_1, QK5_0, QK5_1, QK8_0};
pub use lookup::{BlockIq4Nl, BlockIq4Xs, BlockMxfp4, QK4_NL, QK_MXFP4};
pub use ternary::{BlockTq1_0, BlockTq2_0};

/// The ggml tensor types gpt-fast reads.
#[allow(non_camel_case_types)] // ggml's own names, as in GGUF tooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// IEEE single precision.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16: the top half of an f32.
    BF16,
    /// 4-bit, blocks of 32 with an f16 scale ([`BlockQ4_0`]).
    Q4_0,
    /// 4-bit, blocks of 32 with an f16 scale and min ([`BlockQ4_1`]).
    Q4_1,
    /// 5-bit, blocks of 32 with an f16 scale ([`BlockQ5_0`]).
    Q5_0,
    /// 5-bit, blocks of 32 with an f16 scale and min ([`BlockQ5_1`]).
    Q5_1,
    /// 8-bit, blocks of 32 with an f16 scale ([`BlockQ8_0`]).
    Q8_0,
    /// 2-bit K-quant, super-blocks of 256 ([`BlockQ2K`]).
    Q2_K,
    /// 3-bit K-quant, super-blocks of 256 ([`BlockQ3K`]).
    Q3_K,
    /// 4-bit K-quant, super-blocks of 256 ([`BlockQ4K`]).
    Q4_K,
    /// 5-bit K-quant, super-blocks of 256 ([`BlockQ5K`]).
    Q5_K,
    /// 6-bit K-quant, super-blocks of 256 ([`BlockQ6K`]).
    Q6_K,
    /// 4-bit indices into a fixed non-linear table, blocks of 32 ([`BlockIq4Nl`]).
    IQ4_NL,
    /// IQ4_NL's table in super-blocks of 256 with 6-bit sub-block scales ([`BlockIq4Xs`]).
    IQ4_XS,
    /// Ternary, about 1.69 bits per value, super-blocks of 256 ([`BlockTq1_0`]).
    TQ1_0,
    /// Ternary in 2 bits per value, super-blocks of 256 ([`BlockTq2_0`]).
    TQ2_0,
    /// OCP microscaling FP4 (E2M1 values, an E8M0 scale per 32, [`BlockMxfp4`]).
    MXFP4,
}

impl GgmlType {
    /// Every supported type, in GGUF id order.
    pub const ALL: [GgmlType; 18] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
        GgmlType::BF16,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::MXFP4,
    ];

    /// The type with this `ggml_type` id as written in GGUF tensor infos;
    /// `None` for ids gpt-fast does not read (the grid-based IQ1/IQ2/IQ3 types,
    /// Q8_1/Q8_K which only exist inside ggml, the integer types, …) or that do
    /// not exist.
    pub fn from_gguf_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|ty| ty.gguf_id() == id)
    }

    /// The `ggml_type` id (`ggml.h`).
    pub fn gguf_id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q2_K => 10,
            GgmlType::Q3_K => 11,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::IQ4_NL => 20,
            GgmlType::IQ4_XS => 23,
            GgmlType::BF16 => 30,
            GgmlType::TQ1_0 => 34,
            GgmlType::TQ2_0 => 35,
            GgmlType::MXFP4 => 39,
        }
    }

    /// ggml's name for the type (`ggml_type_name`).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::IQ4_NL => "IQ4_NL",
            GgmlType::IQ4_XS => "IQ4_XS",
            GgmlType::TQ1_0 => "TQ1_0",
            GgmlType::TQ2_0 => "TQ2_0",
            GgmlType::MXFP4 => "MXFP4",
        }
    }

    /// Elements per block: 1 for the float types.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 => QK4_0,
            GgmlType::Q4_1 => QK4_1,
            GgmlType::Q5_0 => QK5_0,
            GgmlType::Q5_1 => QK5_1,
            GgmlType::Q8_0 => QK8_0,
            GgmlType::IQ4_NL => QK4_NL,
            GgmlType::MXFP4 => QK_MXFP4,
            GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::IQ4_XS
            | GgmlType::TQ1_0
            | GgmlType::TQ2_0 => QK_K,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => size_of::<BlockQ4_0>(),
            GgmlType::Q4_1 => size_of::<BlockQ4_1>(),
            GgmlType::Q5_0 => size_of::<BlockQ5_0>(),
            GgmlType::Q5_1 => size_of::<BlockQ5_1>(),
            GgmlType::Q8_0 => size_of::<BlockQ8_0>(),
            GgmlType::Q2_K => size_of::<BlockQ2K>(),
            GgmlType::Q3_K => size_of::<BlockQ3K>(),
            GgmlType::Q4_K => size_of::<BlockQ4K>(),
            GgmlType::Q5_K => size_of::<BlockQ5K>(),
            GgmlType::Q6_K => size_of::<BlockQ6K>(),
            GgmlType::IQ4_NL => size_of::<BlockIq4Nl>(),
            GgmlType::IQ4_XS => size_of::<BlockIq4Xs>(),
            GgmlType::TQ1_0 => size_of::<BlockTq1_0>(),
            GgmlType::TQ2_0 => size_of::<BlockTq2_0>(),
            GgmlType::MXFP4 => size_of::<BlockMxfp4>(),
        }
    }

    /// Bytes of `n_elements` values of this type; `None` if `n_elements` is not
    /// a whole number of blocks or the size overflows `usize`.
    pub fn row_bytes(self, n_elements: usize) -> Option<usize> {
        if !n_elements.is_multiple_of(self.block_size()) {
            return None;
        }
        (n_elements / self.block_size()).checked_mul(self.type_size())
    }
}

/// ggml's name for a type id that exists (or existed) in ggml but that
/// [`GgmlType`] does not read, so an error can say what the file holds; `None`
/// for supported ids and ids ggml never had.
pub fn unsupported_type_name(id: u32) -> Option<&'static str> {
    // From `enum ggml_type` (`ggml.h`); 4, 5 (Q4_2, Q4_3), 31..33 and 36..38
    // (interleaved layouts, now repacked at load) were removed from ggml.
    let name = match id {
        4 => "Q4_2",
        5 => "Q4_3",
        9 => "Q8_1",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        21 => "IQ3_S",
        22 => "IQ2_S",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        31 => "Q4_0_4_4",
        32 => "Q4_0_4_8",
        33 => "Q4_0_8_8",
        36 => "IQ4_NL_4_4",
        37 => "IQ4_NL_4_8",
        38 => "IQ4_NL_8_8",
        40 => "NVFP4",
        41 => "Q1_0",
        42 => "Q2_0",
        _ => return None,
    };
    Some(name)
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Decodes `dst.len()` values of type `ty` from `src` into `dst`.
///
/// `dst.len()` must be a whole number of blocks and `src` exactly their bytes;
/// otherwise an error, and `dst` is left untouched.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let n_elements = dst.len();
    if !n_elements.is_multiple_of(ty.block_size()) {
        return Err(QuantError::PartialBlock { ty: ty.name(), n_elements, block_size: ty.block_size() });
    }
    // Cannot overflow: the product is at most 4 bytes per element of a slice of f32.
    let expected = n_elements / ty.block_size() * ty.type_size();
    if src.len() != expected {
        return Err(QuantError::ByteLength { ty: ty.name(), n_elements, expected, actual: src.len() });
    }
    match ty {
        GgmlType::F32 => {
            for (y, x) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *y = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
            }
        }
        GgmlType::F16 => {
            for (y, x) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *y = f16::from_le_bytes([x[0], x[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            // ggml widens bf16 by a plain shift (`ggml_compute_bf16_to_fp32`),
            // keeping NaN payloads as they are; `half::bf16::to_f32` would set
            // the quiet bit of a signalling NaN.
            for (y, x) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *y = f32::from_bits(u32::from(u16::from_le_bytes([x[0], x[1]])) << 16);
            }
        }
        GgmlType::Q4_0 => decode_blocks(src, dst, BlockQ4_0::dequantize_block),
        GgmlType::Q4_1 => decode_blocks(src, dst, BlockQ4_1::dequantize_block),
        GgmlType::Q5_0 => decode_blocks(src, dst, BlockQ5_0::dequantize_block),
        GgmlType::Q5_1 => decode_blocks(src, dst, BlockQ5_1::dequantize_block),
        GgmlType::Q8_0 => decode_blocks(src, dst, BlockQ8_0::dequantize_block),
        GgmlType::Q2_K => decode_blocks(src, dst, BlockQ2K::dequantize_block),
        GgmlType::Q3_K => decode_blocks(src, dst, BlockQ3K::dequantize_block),
        GgmlType::Q4_K => decode_blocks(src, dst, BlockQ4K::dequantize_block),
        GgmlType::Q5_K => decode_blocks(src, dst, BlockQ5K::dequantize_block),
        GgmlType::Q6_K => decode_blocks(src, dst, BlockQ6K::dequantize_block),
        GgmlType::IQ4_NL => decode_blocks(src, dst, BlockIq4Nl::dequantize_block),
        GgmlType::IQ4_XS => decode_blocks(src, dst, BlockIq4Xs::dequantize_block),
        GgmlType::TQ1_0 => decode_blocks(src, dst, BlockTq1_0::dequantize_block),
        GgmlType::TQ2_0 => decode_blocks(src, dst, BlockTq2_0::dequantize_block),
        GgmlType::MXFP4 => decode_blocks(src, dst, BlockMxfp4::dequantize_block),
    }
    Ok(())
}

/// Decodes whole blocks; the caller has checked that `src` holds exactly
/// `dst.len() / N` blocks. Blocks are copied out one at a time because `src`
/// (a slice of a mapped file) need not be aligned for the block's f16 fields.
fn decode_blocks<B: bytemuck::Pod, const N: usize>(src: &[u8], dst: &mut [f32], decode: fn(&B, &mut [f32; N])) {
    let blocks = src.chunks_exact(size_of::<B>());
    for (raw, out) in blocks.zip(dst.chunks_exact_mut(N)) {
        let block: B = bytemuck::pod_read_unaligned(raw);
        let out: &mut [f32; N] = out.try_into().expect("chunks_exact_mut(N)");
        decode(&block, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_match_ggml() {
        // (type, elements per block, bytes per block) from ggml's type traits table.
        let table = [
            (GgmlType::F32, 1, 4),
            (GgmlType::F16, 1, 2),
            (GgmlType::BF16, 1, 2),
            (GgmlType::Q4_0, 32, 18),
            (GgmlType::Q4_1, 32, 20),
            (GgmlType::Q5_0, 32, 22),
            (GgmlType::Q5_1, 32, 24),
            (GgmlType::Q8_0, 32, 34),
            (GgmlType::Q2_K, 256, 84),
            (GgmlType::Q3_K, 256, 110),
            (GgmlType::Q4_K, 256, 144),
            (GgmlType::Q5_K, 256, 176),
            (GgmlType::Q6_K, 256, 210),
            (GgmlType::IQ4_NL, 32, 18),
            (GgmlType::IQ4_XS, 256, 136),
            (GgmlType::TQ1_0, 256, 54),
            (GgmlType::TQ2_0, 256, 66),
            (GgmlType::MXFP4, 32, 17),
        ];
        assert_eq!(table.len(), GgmlType::ALL.len());
        for (ty, block_size, type_size) in table {
            assert_eq!(ty.block_size(), block_size, "{ty}");
            assert_eq!(ty.type_size(), type_size, "{ty}");
            assert_eq!(GgmlType::from_gguf_id(ty.gguf_id()), Some(ty));
        }
    }

    #[test]
    fn gguf_ids() {
        let ids = [(0, "F32"), (1, "F16"), (2, "Q4_0"), (3, "Q4_1"), (6, "Q5_0"), (7, "Q5_1"), (8, "Q8_0")];
        for (id, name) in ids {
            assert_eq!(GgmlType::from_gguf_id(id).map(GgmlType::name), Some(name));
        }
        assert_eq!(GgmlType::from_gguf_id(12), Some(GgmlType::Q4_K));
        assert_eq!(GgmlType::from_gguf_id(13), Some(GgmlType::Q5_K));
        assert_eq!(GgmlType::from_gguf_id(14), Some(GgmlType::Q6_K));
        assert_eq!(GgmlType::from_gguf_id(10), Some(GgmlType::Q2_K));
        assert_eq!(GgmlType::from_gguf_id(11), Some(GgmlType::Q3_K));
        assert_eq!(GgmlType::from_gguf_id(20), Some(GgmlType::IQ4_NL));
        assert_eq!(GgmlType::from_gguf_id(23), Some(GgmlType::IQ4_XS));
        assert_eq!(GgmlType::from_gguf_id(30), Some(GgmlType::BF16));
        assert_eq!(GgmlType::from_gguf_id(34), Some(GgmlType::TQ1_0));
        assert_eq!(GgmlType::from_gguf_id(35), Some(GgmlType::TQ2_0));
        assert_eq!(GgmlType::from_gguf_id(39), Some(GgmlType::MXFP4));
        // Removed (4, 5, 31..33, 36..38), ggml-internal (9, 15), grid-based
        // IQ types (16..19, 21, 22, 29), integer types (24..28).
        for unsupported in [4, 5, 9, 15, 16, 17, 18, 19, 21, 22, 24, 28, 29, 31, 36, 38, 40, 99, u32::MAX] {
            assert_eq!(GgmlType::from_gguf_id(unsupported), None, "id {unsupported}");
        }
        assert_eq!(unsupported_type_name(16), Some("IQ2_XXS"));
        assert_eq!(unsupported_type_name(99), None);
        for ty in GgmlType::ALL {
            assert_eq!(unsupported_type_name(ty.gguf_id()), None, "{ty}");
        }
    }

    #[test]
    fn row_bytes() {
        assert_eq!(GgmlType::Q4_0.row_bytes(64), Some(36));
        assert_eq!(GgmlType::Q4_0.row_bytes(0), Some(0));
        assert_eq!(GgmlType::Q4_0.row_bytes(33), None);
        assert_eq!(GgmlType::Q6_K.row_bytes(512), Some(420));
        assert_eq!(GgmlType::Q6_K.row_bytes(128), None);
        assert_eq!(GgmlType::F32.row_bytes(3), Some(12));
        assert_eq!(GgmlType::F32.row_bytes(usize::MAX), None);
        assert_eq!(GgmlType::Q8_0.row_bytes(usize::MAX / 32 * 32), None);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        for ty in GgmlType::ALL {
            let n = ty.block_size() * 2;
            let bytes = ty.row_bytes(n).unwrap();
            let mut dst = vec![0f32; n];
            assert!(dequantize(ty, &vec![0; bytes], &mut dst).is_ok(), "{ty}");
            for bad_len in [0, bytes - 1, bytes + 1, bytes * 2] {
                let err = dequantize(ty, &vec![0; bad_len], &mut dst).unwrap_err();
                assert!(matches!(err, QuantError::ByteLength { .. }), "{ty}: {err}");
            }
            if ty.block_size() > 1 {
                let mut partial = vec![0f32; n - 1];
                let err = dequantize(ty, &vec![0; bytes], &mut partial).unwrap_err();
                assert!(matches!(err, QuantError::PartialBlock { .. }), "{ty}: {err}");
                assert!(err.to_string().contains(ty.name()), "{err}");
            }
        }
    }

    #[test]
    fn empty_is_fine() {
        for ty in GgmlType::ALL {
            assert_eq!(dequantize(ty, &[], &mut []), Ok(()));
        }
    }

    #[test]
    fn float_types() {
        let mut dst = [0f32; 2];
        let src: Vec<u8> = [1.5f32, -0.25].iter().flat_map(|v| v.to_le_bytes()).collect();
        dequantize(GgmlType::F32, &src, &mut dst).unwrap();
        assert_eq!(dst, [1.5, -0.25]);
        dequantize(GgmlType::F16, &[0x00, 0x3e, 0x00, 0xc0], &mut dst).unwrap();
        assert_eq!(dst, [1.5, -2.0]);
        dequantize(GgmlType::BF16, &[0xc0, 0x3f, 0x80, 0xbe], &mut dst).unwrap();
        assert_eq!(dst, [1.5, -0.25]);
        // A signalling bf16 NaN keeps its payload, as in ggml.
        dequantize(GgmlType::BF16, &[0x81, 0x7f, 0, 0], &mut dst).unwrap();
        assert_eq!(dst[0].to_bits(), 0x7f81_0000);
    }
}
