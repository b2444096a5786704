//! The key/value cache: each layer's keys and values of the positions seen so
//! far, so a new token attends to them without recomputing them (the seed's
//! "KV cache"). Allocated once, in the layout the attention kernel reads:
//! `[layer][kv_head][slot][head_dim]`.
//!
//! It is a ring with attention sinks (StreamingLLM): positions `0..sinks` keep
//! their slots for ever, and once the cache is full each new position
//! overwrites the oldest of the rest, so generation goes on without a pause or
//! an allocation. Slot of absolute position `p`: `p` while `p < capacity`, then
//! `sinks + (p - sinks) % (capacity - sinks)`.
//!
//! RoPE positions after the wrap (docs/DESIGN.md, "Context shift"): ring keys
//! are stored rotated by their absolute position, so query–key distances in
//! the ring are the true ones (at most `capacity`). The sinks' true distance
//! would grow without bound, so their unrotated keys are kept aside and, for
//! each query past the wrap, rotated to the positions just before the oldest
//! ring entry (`sinks × head_dim` rotations per KV head and layer per token).

use crate::format::HParams;

/// Positions kept for ever at the start of the context (StreamingLLM's default).
pub const DEFAULT_SINKS: usize = 4;

pub struct KvCache {
    n_kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    sinks: usize,
    /// `(n_layers, n_kv_heads, capacity, head_dim)`
    keys: Vec<f32>,
    /// `(n_layers, n_kv_heads, capacity, head_dim)`
    values: Vec<f32>,
    /// `(n_layers, n_kv_heads, sinks, head_dim)`: the sinks' keys before RoPE.
    sink_keys_raw: Vec<f32>,
}

impl KvCache {
    /// `sinks` is clamped to at most half the capacity.
    pub fn new(h: &HParams, capacity: usize, sinks: usize) -> Self {
        let sinks = sinks.min(capacity / 2);
        let per_slot = h.n_layers as usize * h.n_kv_heads as usize * h.head_dim as usize;
        Self {
            n_kv_heads: h.n_kv_heads as usize,
            head_dim: h.head_dim as usize,
            capacity,
            sinks,
            keys: vec![0.0; per_slot * capacity],
            values: vec![0.0; per_slot * capacity],
            sink_keys_raw: vec![0.0; per_slot * sinks],
        }
    }

    /// Slots (the most positions attended to at once).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn sinks(&self) -> usize {
        self.sinks
    }

    /// Bytes allocated for keys and values.
    pub fn bytes(&self) -> usize {
        (self.keys.len() + self.values.len() + self.sink_keys_raw.len()) * std::mem::size_of::<f32>()
    }

    /// The slot that absolute position `pos` occupies.
    pub fn slot(&self, pos: usize) -> usize {
        if pos < self.capacity {
            pos
        } else {
            self.sinks + (pos - self.sinks) % (self.capacity - self.sinks)
        }
    }

    /// Slots filled once position `pos` is stored.
    pub fn filled(&self, pos: usize) -> usize {
        (pos + 1).min(self.capacity)
    }

    fn head_start(&self, layer: usize, head: usize) -> usize {
        (layer * self.n_kv_heads + head) * self.capacity * self.head_dim
    }

    /// Stores position `pos`'s keys (already rotated) and values
    /// (`n_kv_heads * head_dim` each).
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let hd = self.head_dim;
        let slot = self.slot(pos);
        for head in 0..self.n_kv_heads {
            let at = self.head_start(layer, head) + slot * hd;
            self.keys[at..at + hd].copy_from_slice(&k[head * hd..][..hd]);
            self.values[at..at + hd].copy_from_slice(&v[head * hd..][..hd]);
        }
    }

    /// Keeps a sink position's keys before RoPE (`pos < sinks`).
    pub fn store_sink_raw(&mut self, layer: usize, pos: usize, k: &[f32]) {
        let hd = self.head_dim;
        for head in 0..self.n_kv_heads {
            let at = ((layer * self.n_kv_heads + head) * self.sinks + pos) * hd;
            self.sink_keys_raw[at..at + hd].copy_from_slice(&k[head * hd..][..hd]);
        }
    }

    /// Rewrites the sinks' keys of one layer rotated by `rotate(sink, key)`.
    pub fn refresh_sinks(&mut self, layer: usize, mut rotate: impl FnMut(usize, &mut [f32])) {
        let hd = self.head_dim;
        for head in 0..self.n_kv_heads {
            let start = self.head_start(layer, head);
            for sink in 0..self.sinks {
                let raw = ((layer * self.n_kv_heads + head) * self.sinks + sink) * hd;
                let key = &mut self.keys[start + sink * hd..][..hd];
                key.copy_from_slice(&self.sink_keys_raw[raw..raw + hd]);
                rotate(sink, key);
            }
        }
    }

    /// Keys and values of the first `n_slots` slots of one KV head: `[n_slots][head_dim]` each.
    pub fn head(&self, layer: usize, head: usize, n_slots: usize) -> (&[f32], &[f32]) {
        let start = self.head_start(layer, head);
        let len = n_slots * self.head_dim;
        (&self.keys[start..start + len], &self.values[start..start + len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_wrap_after_the_sinks() {
        let h = crate::synthetic::config("test-llama").unwrap();
        let c = KvCache::new(&h, 10, 4);
        let slots: Vec<usize> = (0..20).map(|p| c.slot(p)).collect();
        assert_eq!(slots, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 4, 5, 6, 7, 8, 9, 4, 5, 6, 7]);
        assert_eq!(c.filled(3), 4);
        assert_eq!(c.filled(50), 10);
    }
}
