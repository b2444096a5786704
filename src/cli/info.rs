//! `gpt-fast info` and `gpt-fast verify`.

use std::collections::BTreeMap;
use std::path::Path;

use gpt_fast::format::ModelFile;

use super::{print_out, CliResult};
use std::fmt::Write;

pub fn info(path: &Path) -> CliResult {
    let path = &super::source::model_file(path, None)?;
    let file = ModelFile::open(path)?;
    let mut out = String::new();
    let h = file.hparams();
    let n_params: u64 = file.tensors().iter().map(|t| t.rows * t.cols).sum();
    writeln!(out, "file:          {}", path.display())?;
    writeln!(out, "size:          {} bytes ({:.1} MiB)", file.file_len(), file.file_len() as f64 / (1 << 20) as f64)?;
    writeln!(out, "architecture:  {}", h.arch.name())?;
    writeln!(out, "parameters:    {n_params} ({:.1} M)", n_params as f64 / 1e6)?;
    writeln!(out, "weight type:   {}", file.weight_dtype().name())?;
    // Per type, in the table's order: a file converted with `keep` mixes them.
    let mut by_dtype = [(0usize, 0u64, 0u64); gpt_fast::format::DType::COUNT];
    for t in file.tensors() {
        let slot = &mut by_dtype[t.dtype.index()];
        *slot = (slot.0 + 1, slot.1 + t.n_bytes, slot.2 + t.rows * t.cols);
    }
    let present = || gpt_fast::format::DType::ALL.into_iter().zip(by_dtype).filter(|(_, (count, _, _))| *count > 0);
    let types: Vec<String> = present()
        .map(|(d, (count, bytes, _))| format!("{} x{count} ({:.1} MiB)", d.name(), bytes as f64 / (1 << 20) as f64))
        .collect();
    writeln!(out, "tensor types:  {}", types.join(", "))?;
    // Stored bytes (tile padding included) per weight: what decode reads.
    let bits = |bytes: u64, weights: u64| bytes as f64 * 8.0 / weights.max(1) as f64;
    let per_type: Vec<String> =
        present().map(|(d, (_, bytes, weights))| format!("{} {:.2}", d.name(), bits(bytes, weights))).collect();
    writeln!(out, "bits/weight:   {} (whole file {:.2})", per_type.join(", "), bits(file.file_len(), n_params))?;
    writeln!(out, "layers:        {}", h.n_layers)?;
    writeln!(out, "dim:           {}", h.dim)?;
    writeln!(out, "heads:         {} (kv {}, head_dim {})", h.n_heads, h.n_kv_heads, h.head_dim)?;
    writeln!(out, "ffn_dim:       {}", h.ffn_dim)?;
    writeln!(out, "vocab:         {}", h.vocab_size)?;
    writeln!(out, "context:       {}", h.max_seq_len)?;
    if h.arch.learned_positions() {
        writeln!(out, "positions:     learned")?;
    } else {
        writeln!(out, "rope_theta:    {}", h.rope_theta)?;
    }
    writeln!(out, "norm_eps:      {:e}", h.norm_eps)?;
    let v = &h.variant;
    let mut extras: Vec<String> = [
        (v.qkv_bias, "qkv bias"),
        (v.qk_norm, "qk-norm"),
        (v.post_norms, "post-norms"),
        (v.gelu_gate, "geglu"),
        (v.rope_freqs, "rope scaling"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| name.to_string())
    .collect();
    if v.rope_dim != 0 {
        extras.push(format!("rope_dim {}", v.rope_dim));
    }
    if h.has_sliding() {
        let n = (0..h.n_layers as usize).filter(|&l| h.is_sliding(l)).count();
        extras.push(format!("sliding window {} on {n} of {} layers", v.sliding_window, h.n_layers));
        if v.rope_theta_swa != 0.0 {
            extras.push(format!("their rope_theta {}", v.rope_theta_swa));
        }
    }
    if v.attn_scale != 0.0 {
        extras.push(format!("attn_scale {}", v.attn_scale));
    }
    if v.embed_scale != 0.0 {
        extras.push(format!("embed_scale {}", v.embed_scale));
    }
    if !extras.is_empty() {
        writeln!(out, "variations:    {}", extras.join(", "))?;
    }
    writeln!(out, "tied embed:    {}", if h.tied_embeddings { "yes" } else { "no" })?;
    match gpt_fast::model::select_kernels(None) {
        Ok(k) => writeln!(out, "kernels:       {} (GPT_FAST_ISA overrides)", k.isa.name())?,
        Err(e) => writeln!(out, "kernels:       {e}")?,
    }
    let tok = file.tokenizer();
    let id = |id: Option<u32>| id.map_or_else(|| "none".to_string(), |i| i.to_string());
    let model = match tok.model {
        gpt_fast::tokenizer::TokenizerModel::ByteLevelBpe => {
            format!("byte-level BPE, {} pre-tokenizer, {} merges", tok.pre.name(), tok.merges.len())
        }
        gpt_fast::tokenizer::TokenizerModel::SentencePiece => format!("SentencePiece BPE, {} tokens", tok.tokens.len()),
    };
    writeln!(
        out,
        "tokenizer:     {model}, bos {}, eos {}, adds bos: {}",
        id(tok.bos_id),
        id(tok.eos_id),
        if tok.add_bos { "yes" } else { "no" }
    )?;
    // Tensor groups: the name with the layer index folded ("blk.*.attn_qkv.weight"),
    // one per type where layers differ (llama.cpp's mixes give some layers more bits).
    let mut groups: BTreeMap<(String, usize), (usize, u64)> = BTreeMap::new();
    for t in file.tensors() {
        let key = match t.name.strip_prefix("blk.") {
            Some(rest) => format!("blk.*.{}", rest.split_once('.').map_or(rest, |(_, r)| r)),
            None => t.name.clone(),
        };
        let g = groups.entry((key, t.dtype.index())).or_default();
        g.0 += 1;
        g.1 += t.n_bytes;
    }
    writeln!(out, "tensors:       {}", file.tensors().len())?;
    for ((name, dtype), (count, bytes)) in groups {
        let dtype = gpt_fast::format::DType::ALL[dtype].name();
        writeln!(out, "  {name:<28} {dtype:<5} x{count:<3} {bytes:>12} bytes")?;
    }
    print_out(&out)
}

/// Every check `run` makes when it opens the file (header, directory,
/// tokenizer consistency), plus every tensor's checksum.
pub fn verify(path: &Path) -> CliResult {
    let options = gpt_fast::model::ModelOptions { verify: true, ..Default::default() };
    let model = gpt_fast::model::Model::open(&super::source::file_to_verify(path)?, options)?;
    print_out(&format!(
        "{}: OK ({} tensors, header and tensor checksums match, tokenizer consistent)\n",
        path.display(),
        model.file().tensors().len()
    ))?;
    Ok(())
}
