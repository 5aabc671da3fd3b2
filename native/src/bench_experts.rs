//! The expert-streaming side of `minimax bench`: synthetic experts that stream from host
//! memory, the cache statistics of the timed decode steps, and the host→GPU copy rate they
//! are measured against.

use std::sync::Arc;
use std::time::Instant;

use clap::ValueEnum;
use minimax_runtime::experts::pool::Pool;
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
        predicted_needed: after.predicted_needed - before.predicted_needed,
        predicted_right: after.predicted_right - before.predicted_right,
    }
}

/// Seconds to copy `n` records from host memory into pool slots, up to a read-back that
/// waits for the copies (median of 5).
pub fn host_to_gpu(model: &Model, n: usize) -> Result<Option<(f64, u64)>> {
    let Some(cache) = &model.experts else { return Ok(None) };
    let layout = cache.lock().map_err(|_| "expert cache lock")?.layout();
    if !minimax_runtime::kernels::uses_wgsl(&model.device) {
        return Ok(None);
    }
    let source = SyntheticExperts::new(layout, 1, 1, 0.02);
    let mut pool = Pool::new(n, layout.slot_bytes(), &model.device);
    let mut times = Vec::new();
    for _ in 0..6 {
        let records: Vec<Vec<u8>> = (0..n).map(|_| source.read(0, 0)).collect::<std::result::Result<_, _>>()?;
        let start = Instant::now();
        for (slot, record) in records.into_iter().enumerate() {
            pool.write(slot, layout.slot_bytes(), record);
        }
        let _ = pool.words.clone().slice([0..1]).into_data();
        times.push(start.elapsed().as_secs_f64());
    }
    times.remove(0);
    times.sort_by(f64::total_cmp);
    Ok(Some((times[times.len() / 2], (n * layout.bytes()) as u64)))
}
