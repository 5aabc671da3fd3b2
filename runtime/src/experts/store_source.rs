//! Expert records made from a checkpoint's own tensors: the [`ExpertSource`] behind resident
//! experts on a GPU, and the reading half of `minimax convert`.
//!
//! A MoE layer whose experts all live in one GPU pool, addressed by a table of record offsets,
//! decodes without any host read-back: the router's ids index the table on the device (see
//! `model::moe_streamed`). Checkpoints store experts as separate matrices (or fused stacks),
//! so on a GPU they are encoded at load into the records of an expert pack
//! ([`ExpertLayout`]), in the format the linear layers use, and kept all resident in an
//! [`ExpertCache`](super::ExpertCache) whose budget holds them all.
//!
//! Records are encoded on all cores, a run of experts of one layer at a time, since the cache
//! asks for them in order: one expert's f32 widening and quantization on one thread would
//! make loading a large model minutes slower than reading it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{ExpertLayout, ExpertSource};
use crate::error::WeightsError;
use crate::weights::quantized::to_blocks;
use crate::weights::{MOE_PREFIXES, Names, StoredDType, TensorStore};

/// How one layer stores its experts.
#[derive(Debug, Clone)]
pub(crate) enum Stored {
    /// `experts.{e}.w1/w3/w2.weight`, under `prefix`.
    PerExpert(&'static str),
    /// `experts.gate_up_proj` `[E, 2F, C]` and `experts.down_proj` `[E, C, F]`.
    Fused(&'static str),
}

/// The layers that have experts, and how each stores them, with every shape checked before
/// anything is written. `dims` is `[C, F, E]`.
pub(crate) fn plan_layers(store: &dyn TensorStore, layers: usize, [c, f, e]: [usize; 3]) -> Result<Vec<(usize, Stored)>, WeightsError> {
    let n = Names;
    let check = |name: String, expected: Vec<usize>| match store.shape_of(&name)? {
        Some(found) if found == expected => Ok(()),
        Some(found) => Err(WeightsError::Shape { name, expected, found }),
        None => Err(WeightsError::Missing { name, expected }),
    };
    let mut plan = Vec::new();
    for layer in 0..layers {
        let found = MOE_PREFIXES.into_iter().find_map(|p| {
            if store.contains(&n.expert(layer, p, 0, "w1")) {
                Some(Stored::PerExpert(p))
            } else if store.contains(&n.fused_experts(layer, p, "gate_up_proj")) {
                Some(Stored::Fused(p))
            } else {
                None
            }
        });
        match found {
            Some(Stored::PerExpert(p)) => {
                for x in 0..e {
                    check(n.expert(layer, p, x, "w1"), vec![f, c])?;
                    check(n.expert(layer, p, x, "w3"), vec![f, c])?;
                    check(n.expert(layer, p, x, "w2"), vec![c, f])?;
                }
            }
            Some(Stored::Fused(p)) => {
                check(n.fused_experts(layer, p, "gate_up_proj"), vec![e, 2 * f, c])?;
                check(n.fused_experts(layer, p, "down_proj"), vec![e, c, f])?;
            }
            None => continue,
        }
        plan.push((layer, found.expect("matched above")));
    }
    Ok(plan)
}

pub(crate) fn expert_tensor_names(layer: usize, stored: &Stored, e: usize) -> Vec<String> {
    let n = Names;
    match *stored {
        Stored::PerExpert(p) => (0..e).flat_map(|x| ["w1", "w2", "w3"].map(|w| n.expert(layer, p, x, w))).collect(),
        Stored::Fused(p) => vec![n.fused_experts(layer, p, "gate_up_proj"), n.fused_experts(layer, p, "down_proj")],
    }
}

/// Whether a matrix stored as `stored` goes into a record of `record` format without being
/// quantized a second time: floats are quantized once, blocks are kept as the kernels run
/// them ([`StoredDType::runs_as`]), as the linear layers keep them.
fn keeps_blocks(stored: StoredDType, record: StoredDType) -> bool {
    stored.runs_as().is_none_or(|r| r == record)
}

/// One expert's record: its three matrices read (only its rows of a fused tensor) and put in
/// the record's format. Both layouts give the same values, hence the same record.
pub(crate) fn encode_expert(store: &dyn TensorStore, layout: &ExpertLayout, layer: usize, stored: &Stored, x: usize, e: usize) -> Result<Vec<u8>, WeightsError> {
    let (n, c, f) = (Names, layout.hidden, layout.ffn);
    let missing = |name: String, expected: Vec<usize>| WeightsError::Missing { name, expected };
    let read = |name: String, shape: [usize; 2]| -> Result<Vec<u8>, WeightsError> {
        Ok(to_blocks(store.get(&name)?.ok_or_else(|| missing(name, shape.to_vec()))?, layout.dtype))
    };
    let rows = |name: String, start: usize, count: usize, cols: usize| -> Result<Vec<u8>, WeightsError> {
        Ok(to_blocks(store.get_rows(&name, start, count, cols)?.ok_or_else(|| missing(name, vec![e, count, cols]))?, layout.dtype))
    };
    Ok(match *stored {
        Stored::PerExpert(p) => {
            let w1 = read(n.expert(layer, p, x, "w1"), [f, c])?;
            let w3 = read(n.expert(layer, p, x, "w3"), [f, c])?;
            let w2 = read(n.expert(layer, p, x, "w2"), [c, f])?;
            layout.assemble(&[w1, w3].concat(), &w2)
        }
        Stored::Fused(p) => {
            // gate_up rows 0..F are w1 and F..2F are w3, as in the record.
            let gate_up = rows(n.fused_experts(layer, p, "gate_up_proj"), x * 2 * f, 2 * f, c)?;
            let down = rows(n.fused_experts(layer, p, "down_proj"), x * c, c, f)?;
            layout.assemble(&gate_up, &down)
        }
    })
}


/// The experts of a checkpoint as records of `layout`, encoded on demand.
pub struct StoreExperts {
    store: Arc<dyn TensorStore>,
    layout: ExpertLayout,
    experts: usize,
    plan: HashMap<usize, Stored>,
    /// Records encoded ahead (one run of a layer's experts), taken once each.
    ready: Mutex<HashMap<(usize, usize), Arc<Vec<u8>>>>,
}

impl std::fmt::Debug for StoreExperts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreExperts").field("layout", &self.layout).field("layers", &self.plan.len()).finish()
    }
}

impl StoreExperts {
    /// The experts of `layers` layers of `experts` experts each, with hidden size `c` and FFN
    /// size `f`, as records in the format their blocks run as when they are stored as blocks
    /// (never quantized again: a GGUF's Q8_0 experts make Q8_0 records, its Q4_0 ones Q4_1),
    /// else in `float_format`. `None` when the checkpoint has no experts in a layout we read,
    /// stores them as blocks of mixed formats, or records cannot take the format.
    pub fn new(store: Arc<dyn TensorStore>, float_format: StoredDType, [c, f, experts]: [usize; 3], layers: usize) -> Result<Option<Self>, WeightsError> {
        let plan = plan_layers(store.as_ref(), layers, [c, f, experts])?;
        let Some((layer, stored)) = plan.first() else { return Ok(None) };
        let first = &expert_tensor_names(*layer, stored, experts)[0];
        let format = store.dtype_of(first)?.and_then(StoredDType::runs_as).unwrap_or(float_format);
        let Ok(layout) = ExpertLayout::new(format, c, f) else { return Ok(None) };
        for (layer, stored) in &plan {
            for name in expert_tensor_names(*layer, stored, experts) {
                if store.dtype_of(&name)?.is_some_and(|d| !keeps_blocks(d, layout.dtype)) {
                    return Ok(None);
                }
            }
        }
        Ok(Some(Self { store, layout, experts, plan: plan.into_iter().collect(), ready: Mutex::new(HashMap::new()) }))
    }

    /// The layers that have experts.
    pub fn layers(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.plan.keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn encode(&self, layer: usize, expert: usize) -> Result<Vec<u8>, WeightsError> {
        let stored = self.plan.get(&layer).ok_or_else(|| WeightsError::Missing {
            name: Names.expert(layer, MOE_PREFIXES[0], expert, "w1"),
            expected: vec![self.layout.ffn, self.layout.hidden],
        })?;
        encode_expert(self.store.as_ref(), &self.layout, layer, stored, expert, self.experts)
    }

    /// The record of `(layer, expert)`, encoding it and the next experts of the layer on as
    /// many threads as there are cores when it was not encoded ahead.
    fn record(&self, layer: usize, expert: usize) -> Result<Arc<Vec<u8>>, WeightsError> {
        let mut ready = self.ready.lock().expect("expert records");
        if let Some(r) = ready.get(&(layer, expert)) {
            return Ok(r.clone());
        }
        #[cfg(not(target_arch = "wasm32"))]
        let run = std::thread::available_parallelism().map_or(1, |n| n.get()).min(self.experts - expert);
        ready.clear();
        #[cfg(not(target_arch = "wasm32"))]
        let records: Vec<Result<Vec<u8>, WeightsError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (expert..expert + run).map(|e| s.spawn(move || self.encode(layer, e))).collect();
            handles.into_iter().map(|h| h.join().expect("expert encoder")).collect()
        });
        #[cfg(target_arch = "wasm32")]
        let records = vec![self.encode(layer, expert)];
        for (i, r) in records.into_iter().enumerate() {
            ready.insert((layer, expert + i), Arc::new(r?));
        }
        Ok(ready[&(layer, expert)].clone())
    }
}

impl ExpertSource for StoreExperts {
    fn layout(&self) -> ExpertLayout {
        self.layout
    }

    fn read(&self, layer: usize, expert: usize) -> Result<Vec<u8>, WeightsError> {
        Ok(self.record(layer, expert)?.as_ref().clone())
    }

    fn read_into(&self, layer: usize, expert: usize, out: &mut [u8]) -> Result<(), WeightsError> {
        self.read_part(layer, expert, 0, out)
    }

    fn read_part(&self, layer: usize, expert: usize, start: usize, out: &mut [u8]) -> Result<(), WeightsError> {
        let record = self.record(layer, expert)?;
        out.copy_from_slice(&record[start..start + out.len()]);
        Ok(())
    }
}
