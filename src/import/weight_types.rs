//! Which dtype each matmul tensor of a conversion gets: one type for all
//! (`--quant q8|f16|f32`), gpt-fast's own 4-bit mix (`--quant q4`), or each
//! tensor's own stored type where gpt-fast runs it natively (`--quant keep`,
//! the default for a GGUF file), so a 4-bit GGUF stays 4-bit with every
//! weight value unchanged.

use std::collections::BTreeMap;

use crate::format::{DType, TensorRole, TensorSpec};
use crate::import::assemble::part_types;
use crate::import::source::Source;
use gpt_fast_quant::ggml::GgmlType;

/// The `--quant` choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quant {
    /// Each tensor's stored type where gpt-fast has it, else q8 ([`FALLBACK`]).
    Keep,
    /// Every matmul tensor encoded as this type from its f32 values.
    To(DType),
    /// gpt-fast's own 4-bit weights, encoded from the f32 values with
    /// searched scales: the types [`q4_dtype`] picks per tensor.
    Q4,
}

/// What `keep` stores a tensor as when gpt-fast does not run its type.
pub const FALLBACK: DType = DType::Q8;

impl Quant {
    /// The name the CLI and the conversion cache use.
    pub fn name(self) -> &'static str {
        match self {
            Quant::Keep => "keep",
            Quant::To(d) => d.name(),
            Quant::Q4 => "q4",
        }
    }
}

/// `convert`'s choice without `--quant`: a GGUF keeps its types (a quantized
/// one stays as small as it is), other sources become q8.
pub fn default_quant(is_gguf: bool) -> Quant {
    if is_gguf {
        Quant::Keep
    } else {
        Quant::To(DType::Q8)
    }
}

impl Quant {
    /// For messages: "q8 weights", "its own weight types".
    pub fn describe(self) -> String {
        match self {
            Quant::Keep => "its own weight types".into(),
            Quant::To(d) => format!("{} weights", d.name()),
            Quant::Q4 => "q4 weights".into(),
        }
    }
}

impl From<DType> for Quant {
    fn from(d: DType) -> Self {
        Quant::To(d)
    }
}

impl std::str::FromStr for Quant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "keep" => Ok(Quant::Keep),
            "q4" => Ok(Quant::Q4),
            _ => s.parse::<DType>().map(Quant::To).map_err(|e| format!("{e}, q4, or keep")),
        }
    }
}

/// One tensor's planned storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorPlan {
    pub dtype: DType,
    /// The stored ggml type repacked as `dtype` (values unchanged); `None`:
    /// encoded from the f32 values.
    pub kept: Option<GgmlType>,
    /// Why `keep` could not keep it (it is stored as [`FALLBACK`]).
    pub fallback: Option<String>,
}

/// The storage of every tensor of `specs` under `quant`.
pub fn plan(source: &dyn Source, specs: &[TensorSpec], quant: Quant) -> Vec<TensorPlan> {
    specs
        .iter()
        .map(|spec| match quant {
            Quant::To(d) => TensorPlan { dtype: spec.dtype(d), kept: None, fallback: None },
            Quant::Q4 => TensorPlan { dtype: q4_dtype(spec), kept: None, fallback: None },
            Quant::Keep if spec.role != TensorRole::Matmul => {
                TensorPlan { dtype: spec.dtype(FALLBACK), kept: None, fallback: None }
            }
            Quant::Keep => keep(source, spec),
        })
        .collect()
}

/// The own q4's type for one tensor (docs/FORMAT.md, "q4"). Matrices whose
/// rows are whole 256-value super-blocks are Q4_K (6-bit scales and minimums
/// per 32 values: the least error at 4.5 bits per weight), the others q4_kr
/// (the same sub-blocks under a scale per row: 4.5 bits on SmolLM2's
/// 576-wide rows, 4.45 on Gemma 3's 640-wide ones, which are not whole
/// super-blocks). Measured against Q4_1 (5 bits), Q4_0 and a row split into
/// Q4_K + Q4_0 in docs/FORMAT.md, "q4_kr". The token embedding
/// and output head stay q8, as llama.cpp's Q4_K_M keeps its output head at
/// 6 bits or more: their error reaches every logit, and the embedding is read
/// one row per token.
pub fn q4_dtype(spec: &TensorSpec) -> DType {
    match spec.role {
        TensorRole::Small => spec.dtype(DType::Q8),
        _ if matches!(spec.name.as_str(), "token_embd.weight" | "output.weight") => DType::Q8,
        _ if DType::Q4_K.fits(spec.cols) => DType::Q4_K,
        _ => DType::Q4_KR,
    }
}

fn keep(source: &dyn Source, spec: &TensorSpec) -> TensorPlan {
    let types = part_types(source, spec);
    let fallback = |why: String| TensorPlan { dtype: FALLBACK, kept: None, fallback: Some(why) };
    let Some(Some(first)) = types.first().copied() else {
        return fallback("not stored in ggml blocks".into());
    };
    if types.iter().any(|t| *t != Some(first)) {
        let names: Vec<&str> = types.iter().map(|t| t.map_or("float", GgmlType::name)).collect();
        return fallback(format!("fuses tensors of different types ({})", names.join(", ")));
    }
    match DType::from_ggml(first) {
        Some(d) if d.fits(spec.cols) => TensorPlan { dtype: d, kept: Some(first), fallback: None },
        Some(d) => fallback(format!("{} columns are not whole {} blocks", spec.cols, d.name())),
        None => fallback(format!("gpt-fast has no native {}", first.name())),
    }
}

/// The header's weight type: the type of most matmul weights (`dtypes`:
/// each spec's).
pub fn dominant(specs: &[TensorSpec], dtypes: impl IntoIterator<Item = DType>) -> DType {
    let mut elements: BTreeMap<usize, u64> = BTreeMap::new();
    for (spec, dtype) in specs.iter().zip(dtypes).filter(|(s, _)| s.role == TensorRole::Matmul) {
        *elements.entry(dtype.index()).or_default() += spec.n_elements();
    }
    let most = elements.into_iter().max_by_key(|&(index, n)| (n, std::cmp::Reverse(index)));
    most.map_or(FALLBACK, |(index, _)| DType::ALL[index])
}

/// One line saying which tensors `keep` stored as q8 and why, grouped by
/// reason (layer numbers folded), or `None` if it kept them all.
pub fn fallback_note(specs: &[TensorSpec], plans: &[TensorPlan]) -> Option<String> {
    let mut by_reason: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (spec, plan) in specs.iter().zip(plans) {
        if let Some(why) = &plan.fallback {
            let folded = match spec.name.strip_prefix("blk.") {
                Some(rest) => format!("blk.*.{}", rest.split_once('.').map_or(rest, |(_, r)| r)),
                None => spec.name.clone(),
            };
            let names = by_reason.entry(why).or_default();
            if !names.contains(&folded) {
                names.push(folded);
            }
        }
    }
    if by_reason.is_empty() {
        return None;
    }
    let count = plans.iter().filter(|p| p.fallback.is_some()).count();
    let reasons: Vec<String> =
        by_reason.into_iter().map(|(why, names)| format!("{}: {why}", names.join(", "))).collect();
    Some(format!("{count} tensors stored as {} ({})", FALLBACK.name(), reasons.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_is_q4_k_on_whole_super_blocks_else_q4_kr_with_q8_embedding() {
        let h = crate::synthetic::config("smollm2-135m").unwrap();
        for spec in crate::format::expected_tensors(&h) {
            let want = match (spec.role, spec.name.as_str(), spec.cols) {
                (TensorRole::Small, _, _) => DType::F32,
                (_, "token_embd.weight" | "output.weight", _) => DType::Q8,
                (_, _, 1536) => DType::Q4_K,
                (_, _, 576) => DType::Q4_KR,
                _ => panic!("{} has {} columns", spec.name, spec.cols),
            };
            assert_eq!(q4_dtype(&spec), want, "{}", spec.name);
        }
        assert_eq!("q4".parse::<Quant>(), Ok(Quant::Q4));
        assert_eq!("q4_1".parse::<Quant>(), Ok(Quant::To(DType::Q4_1)));
        assert_eq!("q4_0".parse::<Quant>(), Ok(Quant::To(DType::Q4_0)));
        let err = "q4_k".parse::<Quant>().unwrap_err();
        assert!(err.contains("256-value") && err.contains("--quant q4"), "{err}");
    }
}
