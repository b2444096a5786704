//! The key/value cache: each layer's keys and values of the positions seen so
//! far, so a new token attends to them without recomputing them (the seed's
//! "KV cache"). Allocated once, in the layout the attention kernels read:
//! `[layer][kv_head][slot][head_dim]`, in f16 by default ([`KvType`]; the
//! attention kernels widen it as they load it, docs/DESIGN.md).
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
//!
//! Sliding-window layers attend to the last `window` positions only
//! ([`KvCache::window`]). Past the wrap those are consecutive ring entries that
//! may run over the ring's end; the first `window - 1` ring slots are therefore
//! also written after the end (a mirror), so a window is always one run of
//! slots, as the attention kernels read them.

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::format::HParams;
use crate::mmap::ZeroedBuffer;

/// Positions kept for ever at the start of the context (StreamingLLM's default).
pub const DEFAULT_SINKS: usize = 4;

/// Element type of the cached keys and values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvType {
    /// Half the memory and half the bytes read per attended position; keys and
    /// values are rounded to nearest (even) when stored, as llama.cpp's default
    /// cache does. Values beyond ±65504 would become infinite (activations of
    /// the supported models stay far below).
    #[default]
    F16,
    /// Exact: what the f32 reference tests check against.
    F32,
}

impl KvType {
    /// Its name, as `--kv-type` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::F16 => "f16",
            Self::F32 => "f32",
        }
    }

    /// Bytes per cached value.
    pub fn size(self) -> usize {
        match self {
            Self::F16 => 2,
            Self::F32 => 4,
        }
    }
}

impl std::str::FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f16" => Ok(Self::F16),
            "f32" => Ok(Self::F32),
            other => Err(format!("unknown KV cache type '{other}' (expected f16 or f32)")),
        }
    }
}

/// Keys or values of every layer and KV head: `(n_layers, n_kv_heads, capacity, head_dim)`.
enum Store {
    F16(ZeroedBuffer<f16>),
    F32(ZeroedBuffer<f32>),
}

impl Store {
    fn new(kv_type: KvType, len: usize) -> std::io::Result<Self> {
        Ok(match kv_type {
            KvType::F16 => Self::F16(ZeroedBuffer::new(len)?),
            KvType::F32 => Self::F32(ZeroedBuffer::new(len)?),
        })
    }

    fn len(&self) -> usize {
        match self {
            Self::F16(d) => d.len(),
            Self::F32(d) => d.len(),
        }
    }

    /// Appends elements `range`, little-endian.
    fn append_le(&self, range: std::ops::Range<usize>, out: &mut Vec<u8>) {
        match self {
            Self::F16(d) => d[range].iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            Self::F32(d) => d[range].iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        }
    }

    /// `self[at..]` = the little-endian elements of `bytes`.
    fn set_le(&mut self, at: usize, bytes: &[u8]) {
        match self {
            Self::F16(d) => {
                for (v, b) in d[at..].iter_mut().zip(bytes.chunks_exact(2)) {
                    *v = f16::from_le_bytes([b[0], b[1]]);
                }
            }
            Self::F32(d) => {
                for (v, b) in d[at..].iter_mut().zip(bytes.chunks_exact(4)) {
                    *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
    }

    /// `self[at..at + x.len()] = x`, rounded to the element type.
    fn write(&mut self, at: usize, x: &[f32]) {
        match self {
            Self::F16(d) => d[at..at + x.len()].convert_from_f32_slice(x),
            Self::F32(d) => d[at..at + x.len()].copy_from_slice(x),
        }
    }
}

/// One KV head's keys and values, `[slot][head_dim]` each, in the cache's type.
#[derive(Clone, Copy, Debug)]
#[doc(hidden)]
pub enum KvHead<'a> {
    F16 { keys: &'a [f16], values: &'a [f16] },
    F32 { keys: &'a [f32], values: &'a [f32] },
}

#[doc(hidden)]
pub struct KvCache {
    n_kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    sinks: usize,
    /// Ring slots repeated after the last one (sliding windows, see above).
    mirror: usize,
    /// Slots per layer and KV head: `capacity + mirror`.
    stride: usize,
    kv_type: KvType,
    /// `(n_layers, n_kv_heads, capacity + mirror, head_dim)`
    keys: Store,
    /// `(n_layers, n_kv_heads, capacity + mirror, head_dim)`
    values: Store,
    /// `(n_layers, n_kv_heads, sinks, head_dim)`: the sinks' keys before RoPE,
    /// f32 whatever the cache's type: re-rotated for every token past the
    /// wrap, they are rounded once (when stored rotated), as every other key.
    sink_keys_raw: Vec<f32>,
    /// `(head_dim)`: a sink key being re-rotated.
    sink_key: Vec<f32>,
}

#[doc(hidden)]
impl KvCache {
    /// Bytes [`KvCache::new`] allocates for these sizes (as [`KvCache::bytes`]) (checked: `None` on
    /// overflow), so a caller can refuse a cache before asking for it.
    pub fn bytes_for(h: &HParams, capacity: usize, sinks: usize, kv_type: KvType) -> Option<u64> {
        let sinks = sinks.min(capacity / 2);
        let stride = capacity.checked_add(Self::mirror_for(h, capacity, sinks))? as u64;
        let per_slot = u64::from(h.n_layers).checked_mul(h.kv_dim())?;
        let kv = per_slot.checked_mul(stride)?.checked_mul(2 * kv_type.size() as u64)?;
        let sink_keys = per_slot.checked_mul(sinks as u64)?.checked_mul(4)?;
        kv.checked_add(sink_keys)
    }

    /// Ring slots mirrored after the end for sliding windows. A window at
    /// least as long as the ring sees all of it (as a global layer does) and
    /// needs no mirror.
    fn mirror_for(h: &HParams, capacity: usize, sinks: usize) -> usize {
        let window = h.variant.sliding_window as usize;
        if h.has_sliding() && window < capacity - sinks {
            window.saturating_sub(1)
        } else {
            0
        }
    }

    /// `sinks` is clamped to at most half the capacity. Fails only if the
    /// memory cannot be had (check [`KvCache::bytes_for`] first).
    pub fn new(h: &HParams, capacity: usize, sinks: usize, kv_type: KvType) -> std::io::Result<Self> {
        let sinks = sinks.min(capacity / 2);
        let too_big = || std::io::Error::new(std::io::ErrorKind::OutOfMemory, "KV cache size overflows");
        Self::bytes_for(h, capacity, sinks, kv_type).filter(|&b| usize::try_from(b).is_ok()).ok_or_else(too_big)?;
        let per_slot = h.n_layers as usize * h.n_kv_heads as usize * h.head_dim as usize;
        let mirror = Self::mirror_for(h, capacity, sinks);
        let stride = capacity + mirror;
        Ok(Self {
            n_kv_heads: h.n_kv_heads as usize,
            head_dim: h.head_dim as usize,
            capacity,
            sinks,
            mirror,
            stride,
            kv_type,
            keys: Store::new(kv_type, per_slot * stride)?,
            values: Store::new(kv_type, per_slot * stride)?,
            sink_keys_raw: vec![0.0; per_slot * sinks],
            sink_key: vec![0.0; h.head_dim as usize],
        })
    }

    /// Slots (the most positions attended to at once).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions kept for ever at the start.
    pub fn sinks(&self) -> usize {
        self.sinks
    }

    /// Element type of keys and values.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// Bytes allocated for keys and values (and the sinks' raw keys).
    pub fn bytes(&self) -> usize {
        (self.keys.len() + self.values.len()) * self.kv_type.size()
            + self.sink_keys_raw.len() * std::mem::size_of::<f32>()
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

    /// The run of slots `(first, count)` holding the last `window` positions
    /// up to `pos` (stored), which a sliding-window layer's token at `pos`
    /// attends to. Before the wrap slots are positions; after it the run may
    /// reach into the mirror. A window longer than the ring is all of the cache.
    pub fn window(&self, pos: usize, window: usize) -> (usize, usize) {
        if pos < self.capacity {
            let first = (pos + 1).saturating_sub(window);
            (first, pos + 1 - first)
        } else if window < self.capacity - self.sinks {
            debug_assert!(self.mirror + 1 >= window, "the cache was made for a shorter window");
            (self.slot(pos + 1 - window), window)
        } else {
            (0, self.capacity)
        }
    }

    fn head_start(&self, layer: usize, head: usize) -> usize {
        (layer * self.n_kv_heads + head) * self.stride * self.head_dim
    }

    /// Stores position `pos`'s keys (already rotated) and values
    /// (`n_kv_heads * head_dim` each).
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let hd = self.head_dim;
        let slot = self.slot(pos);
        let mirrored =
            (slot >= self.sinks && slot - self.sinks < self.mirror).then(|| self.capacity + slot - self.sinks);
        for head in 0..self.n_kv_heads {
            for s in std::iter::once(slot).chain(mirrored) {
                let at = self.head_start(layer, head) + s * hd;
                self.keys.write(at, &k[head * hd..][..hd]);
                self.values.write(at, &v[head * hd..][..hd]);
            }
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
                self.sink_key.copy_from_slice(&self.sink_keys_raw[raw..raw + hd]);
                rotate(sink, &mut self.sink_key);
                self.keys.write(start + sink * hd, &self.sink_key);
            }
        }
    }

    fn n_layers(&self) -> usize {
        self.keys.len() / (self.n_kv_heads * self.stride * self.head_dim).max(1)
    }

    /// Bytes [`Self::save_positions`] writes for `n` positions.
    pub fn positions_bytes(&self, n: usize) -> usize {
        2 * self.n_layers() * self.n_kv_heads * n * self.head_dim * self.kv_type.size()
            + self.n_layers() * self.n_kv_heads * n.min(self.sinks) * self.head_dim * 4
    }

    /// Appends positions `0..n` (`n <= capacity`: not wrapped, so slots are
    /// positions): per layer and KV head their keys then their values,
    /// little-endian in the cache's type; then the sinks' unrotated keys
    /// among them, f32.
    pub fn save_positions(&self, n: usize, out: &mut Vec<u8>) {
        assert!(n <= self.capacity, "{n} positions in a cache of {}", self.capacity);
        let hd = self.head_dim;
        for layer in 0..self.n_layers() {
            for head in 0..self.n_kv_heads {
                let start = self.head_start(layer, head);
                self.keys.append_le(start..start + n * hd, out);
                self.values.append_le(start..start + n * hd, out);
            }
        }
        let sinks = n.min(self.sinks);
        for lh in 0..self.n_layers() * self.n_kv_heads {
            let at = lh * self.sinks * hd;
            self.sink_keys_raw[at..at + sinks * hd].iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
    }

    /// Restores positions `0..n` from [`Self::save_positions`]'s bytes, saved
    /// from a cache of the same model, type and number of sinks
    /// (`bytes.len() == positions_bytes(n)`, checked by the caller).
    pub fn load_positions(&mut self, n: usize, bytes: &[u8]) {
        assert!(n <= self.capacity && bytes.len() == self.positions_bytes(n), "positions do not fit this cache");
        let hd = self.head_dim;
        let run = n * hd * self.kv_type.size();
        let mut at = 0;
        for layer in 0..self.n_layers() {
            for head in 0..self.n_kv_heads {
                let start = self.head_start(layer, head);
                self.keys.set_le(start, &bytes[at..at + run]);
                self.values.set_le(start, &bytes[at + run..at + 2 * run]);
                // The mirror is left alone: a window reaches into it only past
                // the wrap, where the mirrored slots hold positions stored after it.
                at += 2 * run;
            }
        }
        let sinks = n.min(self.sinks);
        for lh in 0..self.n_layers() * self.n_kv_heads {
            let dst = &mut self.sink_keys_raw[lh * self.sinks * hd..][..sinks * hd];
            for (v, b) in dst.iter_mut().zip(bytes[at..].chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            at += sinks * hd * 4;
        }
    }

    /// Keys and values of slots `first..first + n_slots` of one KV head.
    pub fn head(&self, layer: usize, head: usize, first: usize, n_slots: usize) -> KvHead<'_> {
        assert!(first + n_slots <= self.stride, "slots {first}+{n_slots} of {}", self.stride);
        let start = self.head_start(layer, head) + first * self.head_dim;
        let range = start..start + n_slots * self.head_dim;
        match (&self.keys, &self.values) {
            (Store::F16(k), Store::F16(v)) => KvHead::F16 { keys: &k[range.clone()], values: &v[range] },
            (Store::F32(k), Store::F32(v)) => KvHead::F32 { keys: &k[range.clone()], values: &v[range] },
            _ => unreachable!("keys and values are allocated with one type"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_wrap_after_the_sinks() {
        let h = crate::synthetic::config("test-llama").unwrap();
        let c = KvCache::new(&h, 10, 4, KvType::F16).unwrap();
        let slots: Vec<usize> = (0..20).map(|p| c.slot(p)).collect();
        assert_eq!(slots, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 4, 5, 6, 7, 8, 9, 4, 5, 6, 7]);
        assert_eq!(c.filled(3), 4);
        assert_eq!(c.filled(50), 10);
    }

    #[test]
    fn a_window_past_the_wrap_is_one_run_of_slots_through_the_mirror() {
        let mut h = crate::synthetic::config("test-llama").unwrap();
        h.variant.sliding_window = 3;
        // 2 sinks + a ring of 6: slots 0..8, then the first 2 ring slots again at 8, 9.
        let mut c = KvCache::new(&h, 8, 2, KvType::F32).unwrap();
        assert_eq!(c.bytes() as u64, KvCache::bytes_for(&h, 8, 2, KvType::F32).unwrap());
        let kv = (h.n_kv_heads * h.head_dim) as usize;
        let hd = h.head_dim as usize;
        for pos in 0..30 {
            let k = vec![pos as f32; kv];
            c.store(0, pos, &k, &k);
            let (first, n) = c.window(pos, 3);
            assert_eq!(n, 3.min(pos + 1), "pos {pos}");
            let KvHead::F32 { keys, .. } = c.head(0, 1, first, n) else { panic!("f32 cache") };
            let held: Vec<f32> = keys.chunks_exact(hd).map(|key| key[0]).collect();
            let want: Vec<f32> = (pos + 1 - n..=pos).map(|p| p as f32).collect();
            assert_eq!(held, want, "pos {pos}: slots {first}..{}", first + n);
        }
    }

    #[test]
    fn bytes_follow_the_element_type() {
        let h = crate::synthetic::config("test-llama").unwrap();
        let (f16, f32) = (KvCache::new(&h, 16, 4, KvType::F16).unwrap(), KvCache::new(&h, 16, 4, KvType::F32).unwrap());
        let per_slot = (h.n_layers * h.n_kv_heads * h.head_dim) as usize;
        assert_eq!(f32.bytes(), 2 * per_slot * 16 * 4 + per_slot * 4 * 4);
        assert_eq!(f16.bytes(), 2 * per_slot * 16 * 2 + per_slot * 4 * 4);
        assert_eq!(KvCache::bytes_for(&h, 16, 4, KvType::F32), Some(f32.bytes() as u64));
        assert_eq!(KvCache::bytes_for(&h, 16, 4, KvType::F16), Some(f16.bytes() as u64));
        let huge = HParams { n_layers: 1 << 24, n_kv_heads: 1 << 24, head_dim: 1 << 24, ..h };
        assert_eq!(KvCache::bytes_for(&huge, usize::MAX, 4, KvType::F32), None);
    }

    #[test]
    fn f16_store_rounds_to_nearest_even() {
        let h = crate::synthetic::config("test-llama").unwrap();
        let mut c = KvCache::new(&h, 8, 0, KvType::F16).unwrap();
        let kv = (h.n_kv_heads * h.head_dim) as usize;
        // 1 + 2^-11 is halfway between two f16 values: ties go to the even one (1.0).
        let mut k: Vec<f32> = (0..kv).map(|i| i as f32 * 0.37 - 3.0).collect();
        k[0] = 1.0 + 2f32.powi(-11);
        let v: Vec<f32> = k.iter().map(|x| -x).collect();
        c.store(1, 5, &k, &v);
        let KvHead::F16 { keys, values } = c.head(1, 0, 0, 6) else { panic!("f16 cache") };
        let hd = h.head_dim as usize;
        assert_eq!(keys[5 * hd].to_f32(), 1.0);
        for i in 0..hd {
            assert_eq!(keys[5 * hd + i], f16::from_f32(k[i]));
            assert_eq!(values[5 * hd + i], f16::from_f32(v[i]));
        }
    }
}
