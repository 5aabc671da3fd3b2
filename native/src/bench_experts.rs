//! The expert-streaming side of `minimax bench`: synthetic experts that stream from host
//! memory, the cache statistics of the timed decode steps, and the host→GPU copy rate they
//! are measured against.

use std::sync::Arc;
use std::time::Instant;

use clap::ValueEnum;
use minimax_runtime::experts::pool::Pool;
use minimax_runtime::experts::staging::StagingRing;
use minimax_runtime::experts::synthetic::SyntheticExperts;
use minimax_runtime::experts::{CacheStats, ExpertLayout, ExpertSource};
use minimax_runtime::model::Model;
use minimax_runtime::weights::StoredDType;

use crate::common::Result;

/// Formats of synthetic streamed experts.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExpertQuant {
    /// Q4_1 blocks: 20 bytes per 32 weights.
    Q4,
    /// Q8_0 blocks: 34 bytes per 32 weights.
    Q8,
    F16,
}

impl ExpertQuant {
    pub fn dtype(self) -> StoredDType {
        match self {
            Self::Q4 => StoredDType::Q4_1,
            Self::Q8 => StoredDType::Q8_0,
            Self::F16 => StoredDType::F16,
        }
    }
}

/// Random records for a synthetic model's experts (16 distinct ones, shared).
pub fn source(quant: ExpertQuant, hidden: usize, ffn: usize, experts: usize) -> Result<Arc<dyn ExpertSource>> {
    let layout = ExpertLayout::new(quant.dtype(), hidden, ffn)?;
    Ok(Arc::new(SyntheticExperts::new(layout, experts, 16, 0.02)))
}

/// Counters accumulated between two snapshots.
pub fn delta(after: CacheStats, before: CacheStats) -> CacheStats {
    CacheStats {
        hits: after.hits - before.hits,
        misses: after.misses - before.misses,
        evictions: after.evictions - before.evictions,
        bytes_streamed: after.bytes_streamed - before.bytes_streamed,
        stall_seconds: after.stall_seconds - before.stall_seconds,
        prefetched: after.prefetched - before.prefetched,
        staged: after.staged - before.staged,
        predicted_needed: after.predicted_needed - before.predicted_needed,
        predicted_right: after.predicted_right - before.predicted_right,
    }
}

/// Host→GPU copy rates of expert records: seconds per `bytes`, by queue writes and through
/// the staging ring (`None` where there is none).
pub struct CopyRates {
    pub bytes: u64,
    pub queue_write: f64,
    pub staged: Option<f64>,
}

/// Times copying `n` records from host memory into pool slots, up to a read-back that waits
/// for the copies (median of 5 after a warm-up): by 1 MiB queue writes, and by filling staging
/// buffers and copying each with one `copy_buffer_to_buffer`.
pub fn host_to_gpu(model: &Model, n: usize) -> Result<Option<CopyRates>> {
    let Some(cache) = &model.experts else { return Ok(None) };
    let layout = cache.lock().map_err(|_| "expert cache lock")?.layout();
    if !minimax_runtime::kernels::uses_wgsl(&model.device) {
        return Ok(None);
    }
    let source = SyntheticExperts::new(layout, 1, 1, 0.02);
    let record = source.read(0, 0)?;
    let mut pool = Pool::new(n, layout.slot_bytes(), &model.device);
    let median = |mut times: Vec<f64>| {
        times.remove(0);
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let mut times = Vec::new();
    for _ in 0..6 {
        let records: Vec<Vec<u8>> = (0..n).map(|_| record.clone()).collect();
        let start = Instant::now();
        for (slot, record) in records.into_iter().enumerate() {
            pool.write(slot, layout.slot_bytes(), record);
        }
        let _ = pool.words.clone().slice([0..1]).into_data();
        times.push(start.elapsed().as_secs_f64());
    }
    let queue_write = median(times);
    let staged = minimax_runtime::device::wgpu_queue().map(|(device, queue)| {
        let ring = StagingRing::new(device, queue, layout.bytes(), n);
        let mut times = Vec::new();
        for _ in 0..6 {
            let start = Instant::now();
            for slot in 0..n {
                let staged = loop {
                    match ring.try_acquire() {
                        Some(s) => break s,
                        None => ring.wait(),
                    }
                };
                staged.fill_at(0, &record);
                pool.copy_staged(slot, layout.slot_bytes(), staged);
            }
            let _ = pool.words.clone().slice([0..1]).into_data();
            times.push(start.elapsed().as_secs_f64());
        }
        median(times)
    });
    Ok(Some(CopyRates {
        bytes: (n * layout.bytes()) as u64,
        queue_write,
        staged,
    }))
}
