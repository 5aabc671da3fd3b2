//! The expert cache: a fixed number of slots, filled on demand from an [`ExpertSource`].
//!
//! - **Slots.** On a wgpu device the slots live in a few large [`Pool`] buffers, so a kernel
//!   binds one pool and finds an expert through a per-layer table of word offsets. On the CPU
//!   backend a slot holds the decoded f32 matrices instead (there is no transfer to save).
//! - **Residency.** When every expert fits the budget, all are loaded at start and the tables
//!   never change: routing then needs no host read-back at all. Otherwise the model reads back
//!   the few expert ids a layer needs and calls [`ExpertCache::ensure`] before using them.
//! - **Eviction.** Least recently used first, never an expert pinned by the current batch.
//!   Overwriting a slot is safe even while earlier kernels that read it are queued: the queue
//!   write is ordered after them.
//! - **Prefetch.** [`ExpertCache::prefetch`] is told which experts a layer is predicted to use
//!   (from the next layer's router applied early) and keeps score of how many were right. On
//!   native builds a [`Reader`]'s threads read those records into staging buffers while the
//!   GPU computes, and the layer's [`ExpertCache::ensure`] places them with one GPU copy each.
//!   Without threads (wasm) the predicted records are loaded into unpinned slots at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::layout::ExpertLayout;
use super::pool::Pool;
use super::reader::{Reader, Record};
use crate::error::{Error, WeightsError};
use crate::kernels::uses_wgsl;
use crate::model::moe::Expert;
use web_time::Instant;

/// Where expert records come from: a pack file, HTTP Range requests, or synthetic bytes.
pub trait ExpertSource: Send + Sync {
    fn layout(&self) -> ExpertLayout;
    /// The record of expert `expert` of layer `layer` (exactly [`ExpertLayout::bytes`] bytes).
    fn read(&self, layer: usize, expert: usize) -> Result<Vec<u8>, WeightsError>;
    /// The same record into `out` (exactly [`ExpertLayout::bytes`] long), for readers that
    /// reuse one buffer.
    fn read_into(&self, layer: usize, expert: usize, out: &mut [u8]) -> Result<(), WeightsError> {
        out.copy_from_slice(&self.read(layer, expert)?);
        Ok(())
    }
    /// Bytes `start .. start + out.len()` of the record, unchecked: a reader that splits a
    /// record among threads checks the whole with [`Self::check`]. The default reads the
    /// whole record; sources that can read a range override it.
    fn read_part(&self, layer: usize, expert: usize, start: usize, out: &mut [u8]) -> Result<(), WeightsError> {
        let record = self.read(layer, expert)?;
        out.copy_from_slice(&record[start..start + out.len()]);
        Ok(())
    }
    /// Checks a record read in parts against its checksum, `crc` being the CRC-32 of its
    /// bytes. Sources without checksums accept it.
    fn check(&self, layer: usize, expert: usize, crc: u32) -> Result<(), WeightsError> {
        let _ = (layer, expert, crc);
        Ok(())
    }
}

/// Counters since the model was loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CacheStats {
    /// Experts needed and found resident, or read ahead in time.
    pub hits: u64,
    /// Experts needed and not read in time: read on the spot, or waited for.
    pub misses: u64,
    /// Residents replaced to make room.
    pub evictions: u64,
    /// Record bytes copied into slots (misses and prefetches).
    pub bytes_streamed: u64,
    /// Seconds the computation waited on records: reads that had not finished, and placing
    /// records in slots.
    pub stall_seconds: f64,
    /// Experts read ahead of need (by prediction) and placed in slots.
    pub prefetched: u64,
    /// Records placed with one GPU copy from a staging buffer (native wgpu); the others went
    /// by queue writes, or were decoded on the CPU backend.
    pub staged: u64,
    /// Experts a layer needed (after a prediction was made for it).
    pub predicted_needed: u64,
    /// Of those, how many had been predicted.
    pub predicted_right: u64,
}

impl CacheStats {
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 { 1.0 } else { self.hits as f64 / total as f64 }
    }

    /// Fraction of needed experts that the prefetcher had predicted (`None` before any).
    pub fn prediction_accuracy(&self) -> Option<f64> {
        (self.predicted_needed > 0).then(|| self.predicted_right as f64 / self.predicted_needed as f64)
    }
}

type Key = (usize, usize);

enum Slots {
    /// Pools on a wgpu device; slot `s` is slot `s % per_pool` of pool `s / per_pool`.
    Gpu { pools: Vec<Pool>, per_pool: usize },
    /// Decoded experts on the CPU backend.
    Cpu(Vec<Option<Expert>>),
}

pub struct ExpertCache {
    layout: ExpertLayout,
    reader: Reader,
    num_experts: usize,
    device: Device,
    slots: Slots,
    owner: Vec<Option<Key>>,
    slot_of: HashMap<Key, usize>,
    last_use: Vec<u64>,
    clock: u64,
    pinned: HashSet<usize>,
    all_resident: bool,
    /// Per layer, for each pool holding any of its experts: the pool's index and the table
    /// expert → word offset of its record (-1: not in that pool).
    tables: HashMap<usize, Vec<(usize, Tensor<1, Int>)>>,
    dirty: HashSet<usize>,
    predictions: HashMap<usize, HashSet<usize>>,
    stats: CacheStats,
}

impl std::fmt::Debug for ExpertCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpertCache")
            .field("layout", &self.layout)
            .field("slots", &self.owner.len())
            .field("all_resident", &self.all_resident)
            .field("stats", &self.stats)
            .finish()
    }
}

impl ExpertCache {
    /// A cache of `budget_bytes` worth of slots (at least `min_slots`) for the experts of
    /// `layers`; when the budget holds them all, every expert is loaded now.
    /// `max_binding_bytes` bounds one pool buffer on a wgpu device.
    pub fn new(
        source: Arc<dyn ExpertSource>,
        layers: &[usize],
        num_experts: usize,
        budget_bytes: u64,
        min_slots: usize,
        device: &Device,
        max_binding_bytes: Option<u64>,
    ) -> Result<Self, Error> {
        let layout = source.layout();
        let slot_bytes = layout.slot_bytes();
        let total = layers.len() * num_experts;
        let wanted = ((budget_bytes / slot_bytes as u64) as usize).max(min_slots);
        let count = wanted.min(total);
        let gpu = uses_wgsl(device);
        let slots = if gpu {
            // One pool never exceeds a storage binding (kernels bind it whole), nor 2 GiB, so
            // that word offsets stay well inside an i32 and allocations stay modest.
            let limit = max_binding_bytes.unwrap_or(u64::MAX).min(1 << 31);
            let per_pool = (limit / slot_bytes as u64) as usize;
            if per_pool == 0 {
                return Err(WeightsError::Format {
                    path: "experts".into(),
                    reason: format!("one expert ({slot_bytes} bytes) exceeds the storage binding limit ({limit} bytes)"),
                }
                .into());
            }
            let pools = (0..count.div_ceil(per_pool))
                .map(|p| Pool::new(per_pool.min(count - p * per_pool), slot_bytes, device))
                .collect();
            Slots::Gpu { pools, per_pool }
        } else {
            Slots::Cpu((0..count).map(|_| None).collect())
        };
        let reader = reader(source, &layout, gpu, count == total);
        let mut cache = Self {
            layout,
            reader,
            num_experts,
            device: device.clone(),
            slots,
            owner: vec![None; count],
            slot_of: HashMap::new(),
            last_use: vec![0; count],
            clock: 0,
            pinned: HashSet::new(),
            all_resident: count == total,
            tables: HashMap::new(),
            dirty: layers.iter().copied().collect(),
            predictions: HashMap::new(),
            stats: CacheStats::default(),
        };
        if cache.all_resident {
            for &layer in layers {
                for e in 0..num_experts {
                    cache.load(layer, e)?;
                }
            }
            // Loading everything up front is neither a miss nor streaming during inference.
            cache.stats = CacheStats::default();
        }
        Ok(cache)
    }

    pub fn layout(&self) -> ExpertLayout {
        self.layout
    }

    /// Whether every expert is resident (routing can then stay on the device).
    pub fn all_resident(&self) -> bool {
        self.all_resident
    }

    pub fn slots(&self) -> usize {
        self.owner.len()
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Counts `n` uses of experts that are resident by construction (no read-back was made).
    pub fn count_resident_hits(&mut self, n: usize) {
        self.stats.hits += n as u64;
    }

    /// Starts a new batch: nothing is pinned.
    pub fn unpin_all(&mut self) {
        self.pinned.clear();
    }

    /// Makes `experts` of `layer` resident and pins them until [`Self::unpin_all`]. Records of
    /// `layer` read ahead and not needed now also go into unpinned slots, for later tokens.
    pub fn ensure(&mut self, layer: usize, experts: &[usize]) -> Result<(), Error> {
        if let Some(predicted) = self.predictions.remove(&layer) {
            self.stats.predicted_needed += experts.len() as u64;
            self.stats.predicted_right += experts.iter().filter(|e| predicted.contains(e)).count() as u64;
        }
        // Pin the resident ones first, so that nothing placed below evicts them.
        let mut absent = Vec::new();
        for &e in experts {
            match self.slot_of.get(&(layer, e)) {
                Some(&slot) => {
                    self.stats.hits += 1;
                    self.pinned.insert(slot);
                    self.touch(slot);
                }
                None => absent.push(e),
            }
        }
        let started = Instant::now();
        // Read ahead in time: these count as hits.
        let ahead: HashSet<Key> = self.reader.ready_of(layer).into_iter().collect();
        let waited = !absent.is_empty() || !ahead.is_empty();
        // The reader threads read the missing records side by side, ahead of the rest of the
        // queue (a prefill's later experts), while this thread waits for the first.
        let keys: Vec<Key> = absent.iter().map(|&e| (layer, e)).collect();
        self.reader.expedite(&keys);
        for e in absent {
            let slot = self.load(layer, e)?;
            if ahead.contains(&(layer, e)) {
                self.stats.hits += 1;
                self.stats.prefetched += 1;
            } else {
                self.stats.misses += 1;
            }
            self.pinned.insert(slot);
            self.touch(slot);
        }
        for (_, e) in self.reader.ready_of(layer) {
            if self.pinned.len() >= self.owner.len() {
                break;
            }
            if !self.slot_of.contains_key(&(layer, e)) {
                let slot = self.load(layer, e)?;
                self.stats.prefetched += 1;
                self.touch(slot);
            }
        }
        if waited {
            self.stats.stall_seconds += started.elapsed().as_secs_f64();
        }
        Ok(())
    }

    /// Records that `layer` is predicted to need `experts` (scored at its [`Self::ensure`])
    /// and gets them ready: read in the background where there are reader threads, otherwise
    /// loaded into free or unpinned slots now (they stay unpinned).
    pub fn prefetch(&mut self, layer: usize, experts: &[usize]) -> Result<(), Error> {
        self.predictions.insert(layer, experts.iter().copied().collect());
        if self.reader.workers() > 0 {
            self.read_ahead(layer, experts);
            return Ok(());
        }
        for &e in experts {
            if self.slot_of.contains_key(&(layer, e)) || self.pinned.len() >= self.owner.len() {
                continue;
            }
            let slot = self.load(layer, e)?;
            self.stats.prefetched += 1;
            self.touch(slot);
        }
        Ok(())
    }

    /// Starts reading the records of `experts` of `layer` that are not resident, in the
    /// background (nothing happens without reader threads).
    pub fn read_ahead(&mut self, layer: usize, experts: &[usize]) {
        let keys: Vec<Key> = experts
            .iter()
            .map(|&e| (layer, e))
            .filter(|k| !self.slot_of.contains_key(k))
            .collect();
        self.reader.request(&keys);
    }

    /// The pool index and word offset of a resident expert's record (wgpu).
    pub fn location(&self, layer: usize, expert: usize) -> Option<(usize, u32)> {
        let slot = *self.slot_of.get(&(layer, expert))?;
        match &self.slots {
            Slots::Gpu { per_pool, .. } => {
                Some((slot / per_pool, ((slot % per_pool) * self.layout.slot_bytes() / 4) as u32))
            }
            Slots::Cpu(_) => None,
        }
    }

    /// The pools (wgpu; empty on the CPU).
    pub fn pools(&self) -> &[Pool] {
        match &self.slots {
            Slots::Gpu { pools, .. } => pools,
            Slots::Cpu(_) => &[],
        }
    }

    /// A resident expert's decoded matrices (CPU backend).
    pub fn decoded(&self, layer: usize, expert: usize) -> Option<&Expert> {
        let slot = *self.slot_of.get(&(layer, expert))?;
        match &self.slots {
            Slots::Cpu(experts) => experts[slot].as_ref(),
            Slots::Gpu { .. } => None,
        }
    }

    /// For each pool that holds any of `layer`'s resident experts, the pool's index and its
    /// `[E]` table of their word offsets (-1 for experts not in it). Pools without any are
    /// left out, so a kernel runs once per pool that matters: one or two when a layer's
    /// experts were loaded together.
    pub fn tables(&mut self, layer: usize) -> Vec<(usize, Tensor<1, Int>)> {
        if self.dirty.remove(&layer) || !self.tables.contains_key(&layer) {
            let pools = self.pools().len();
            let mut words = vec![vec![-1i32; self.num_experts]; pools];
            for e in 0..self.num_experts {
                if let Some((pool, offset)) = self.location(layer, e) {
                    words[pool][e] = offset as i32;
                }
            }
            let n = self.num_experts;
            let tables = words
                .into_iter()
                .enumerate()
                .filter(|(_, w)| w.iter().any(|&o| o >= 0))
                .map(|(pool, w)| (pool, Tensor::from_data(TensorData::new(w, [n]), &self.device)))
                .collect();
            self.tables.insert(layer, tables);
        }
        self.tables[&layer].clone()
    }

    fn touch(&mut self, slot: usize) {
        self.clock += 1;
        self.last_use[slot] = self.clock;
    }

    /// Puts `(layer, expert)`'s record into a free slot or the least recently used unpinned
    /// one; returns the slot.
    fn load(&mut self, layer: usize, expert: usize) -> Result<usize, Error> {
        let slot = match self.owner.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                let victim = (0..self.owner.len())
                    .filter(|s| !self.pinned.contains(s))
                    .min_by_key(|&s| self.last_use[s])
                    .ok_or_else(|| WeightsError::Format {
                        path: "experts".into(),
                        reason: format!("all {} cache slots are pinned by the current batch", self.owner.len()),
                    })?;
                let old = self.owner[victim].take().expect("full cache");
                self.slot_of.remove(&old);
                self.dirty.insert(old.0);
                self.stats.evictions += 1;
                victim
            }
        };
        let record = match self.reader.take(layer, expert)? {
            Record::Host(bytes) => bytes,
            #[cfg(not(target_arch = "wasm32"))]
            Record::Staged(staged) => {
                let Slots::Gpu { pools, per_pool } = &mut self.slots else {
                    unreachable!("staging buffers exist only for wgpu pools")
                };
                pools[slot / *per_pool].copy_staged(slot % *per_pool, self.layout.slot_bytes(), staged);
                self.stats.staged += 1;
                return Ok(self.placed(layer, expert, slot));
            }
        };
        let slot_bytes = self.layout.slot_bytes();
        match &mut self.slots {
            Slots::Gpu { pools, per_pool } => pools[slot / *per_pool].write(slot % *per_pool, slot_bytes, record),
            Slots::Cpu(experts) => {
                let (gate_up, down) = self.layout.decode(&record);
                let (c, f) = (self.layout.hidden, self.layout.ffn);
                let matrix = |v: Vec<f32>, shape: [usize; 2]| Tensor::from_data(TensorData::new(v, shape), &self.device);
                experts[slot] = Some(Expert::from_matrices(matrix(gate_up, [2 * f, c]), matrix(down, [c, f])));
            }
        }
        Ok(self.placed(layer, expert, slot))
    }

    /// Books `(layer, expert)` into `slot` once its record is on its way there.
    fn placed(&mut self, layer: usize, expert: usize, slot: usize) -> usize {
        self.stats.bytes_streamed += self.layout.bytes() as u64;
        self.owner[slot] = Some((layer, expert));
        self.slot_of.insert((layer, expert), slot);
        self.dirty.insert(layer);
        slot
    }
}

/// The reader for a cache: on native wgpu, records go through a ring of staging buffers;
/// reader threads read ahead unless every expert is resident (then nothing is predicted).
/// For measurements, `MINIMAX_EXPERT_READERS` sets the thread count (0 turns reading ahead
/// off), `MINIMAX_EXPERT_READ_PARTS` the threads per record, and `MINIMAX_EXPERT_STAGING=0`
/// falls back to queue writes.
fn reader(source: Arc<dyn ExpertSource>, layout: &ExpertLayout, gpu: bool, all_resident: bool) -> Reader {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<usize>().ok());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = if all_resident { 0 } else { env("MINIMAX_EXPERT_READERS").unwrap_or(cores.clamp(1, 4)) };
        // Up to 1 GiB of staging, 2 to 12 records: enough for a layer's needs and the next
        // layer's predictions at decode.
        let capacity = ((1usize << 30) / layout.bytes().max(1)).clamp(2, 12);
        // Each staged record is read on up to 8 threads (half the cores): one thread's copy
        // is the bottleneck of a miss otherwise.
        let parts = env("MINIMAX_EXPERT_READ_PARTS").unwrap_or((cores / 2).clamp(1, 8));
        let ring = crate::device::wgpu_queue()
            .filter(|(device, _)| gpu && env("MINIMAX_EXPERT_STAGING") != Some(0) && layout.bytes() as u64 <= device.limits().max_buffer_size)
            .map(|(device, queue)| (super::staging::StagingRing::new(device, queue, layout.bytes(), capacity), parts));
        Reader::new(source, ring, workers, capacity)
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = (layout, gpu, all_resident);
        Reader::new(source, 0, 1)
    }
}

impl ExpertSource for super::pack::ExpertPack {
    fn layout(&self) -> ExpertLayout {
        super::pack::ExpertPack::layout(self)
    }

    fn read(&self, layer: usize, expert: usize) -> Result<Vec<u8>, WeightsError> {
        self.read_expert(layer, expert)
    }

    fn read_into(&self, layer: usize, expert: usize, out: &mut [u8]) -> Result<(), WeightsError> {
        self.read_expert_into(layer, expert, out)
    }

    fn read_part(&self, layer: usize, expert: usize, start: usize, out: &mut [u8]) -> Result<(), WeightsError> {
        self.read_expert_part(layer, expert, start, out)
    }

    fn check(&self, layer: usize, expert: usize, crc: u32) -> Result<(), WeightsError> {
        self.check_expert(layer, expert, crc)
    }
}
