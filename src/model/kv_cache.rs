//! The key/value cache: each layer's keys and values of every position seen so
//! far, so a new token attends to them without recomputing them (the seed's
//! "KV cache"). Allocated once, in the layout the attention kernel reads:
//! `[layer][kv_head][position][head_dim]`.

use crate::format::HParams;

pub struct KvCache {
    n_kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    /// `(n_layers, n_kv_heads, capacity, head_dim)`
    keys: Vec<f32>,
    /// `(n_layers, n_kv_heads, capacity, head_dim)`
    values: Vec<f32>,
}

impl KvCache {
    pub fn new(h: &HParams, capacity: usize) -> Self {
        let size = h.n_layers as usize * h.n_kv_heads as usize * capacity * h.head_dim as usize;
        Self {
            n_kv_heads: h.n_kv_heads as usize,
            head_dim: h.head_dim as usize,
            capacity,
            keys: vec![0.0; size],
            values: vec![0.0; size],
        }
    }

    /// Positions it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes allocated for keys and values.
    pub fn bytes(&self) -> usize {
        (self.keys.len() + self.values.len()) * std::mem::size_of::<f32>()
    }

    fn head_start(&self, layer: usize, head: usize) -> usize {
        (layer * self.n_kv_heads + head) * self.capacity * self.head_dim
    }

    /// Stores position `pos`'s keys and values (`n_kv_heads * head_dim` each).
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let hd = self.head_dim;
        for head in 0..self.n_kv_heads {
            let at = self.head_start(layer, head) + pos * hd;
            self.keys[at..at + hd].copy_from_slice(&k[head * hd..][..hd]);
            self.values[at..at + hd].copy_from_slice(&v[head * hd..][..hd]);
        }
    }

    /// Keys and values of positions `0..n_pos` of one KV head: `[n_pos][head_dim]` each.
    pub fn head(&self, layer: usize, head: usize, n_pos: usize) -> (&[f32], &[f32]) {
        let start = self.head_start(layer, head);
        let len = n_pos * self.head_dim;
        (&self.keys[start..start + len], &self.values[start..start + len])
    }
}
