//! The MoE forward over experts held in an [`ExpertCache`] (from a pack) instead of resident
//! Burn tensors. The math is [`super::moe`]'s; what changes is where the weights are.
//!
//! - **Few tokens** (decode): one `qgemv` per pool computes gate_up for every (token, expert)
//!   pair straight from the router's ids on the device, a second one down with the SwiGLU
//!   fused into its input and the router-weighted sum of each token's pairs into its output.
//!   A checkpoint's experts on a GPU live in such pools too, all resident
//!   ([`crate::experts::store_source`]), so every load path decodes this way. When every
//!   expert is resident this path has no host read-back at all. When streaming, the ids are
//!   read back first (a few integers) so that misses can be loaded, together with the
//!   prediction for the next MoE layer: its router applied to this layer's input.
//! - **Many tokens** (prefill): tokens are grouped by expert (`moe_gather`, whose boundaries
//!   are read back) and each expert with tokens is made resident and runs `qgemm` twice.
//!
//! Both paths give the same results whether experts were resident or streamed: each output
//! depends only on the record's bytes, never on which slot holds it.

use std::ops::Range;
use std::sync::Mutex;

use burn::tensor::{Int, Tensor};

use super::linear::Linear;
use super::moe::{grouped, read_ints};
use crate::error::Error;
use crate::experts::ExpertCache;
use crate::kernels::moe_route::moe_route;
use crate::kernels::moe_gather::moe_gather;
use crate::kernels::moe_scatter::moe_scatter;
use crate::kernels::qgemm::{Group, qgemm, qgemm_grouped};
use crate::kernels::qgemv::{XMode, qgemv, qgemv_combine};
use crate::kernels::rms_norm::Route;
use crate::kernels::uses_wgsl;

/// Up to this many (token, expert) pairs take the per-pair `qgemv` path.
pub const GEMV_MAX_PAIRS: usize = 8;

/// What the streamed MoE of one layer needs besides its input.
pub struct Streamed<'a> {
    pub cache: &'a Mutex<ExpertCache>,
    pub layer: usize,
    pub top_k: usize,
    pub num_experts: usize,
    /// The next MoE layer and its router, for prefetching.
    pub next: Option<(usize, &'a Linear)>,
}

fn distinct(ids: &[usize]) -> Vec<usize> {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

impl Streamed<'_> {
    /// # Shapes
    /// `x`: `[T, C]` → `[T, C]`; `router`: this layer's `[E, C]` router; `route`: its routing
    /// of `x`, when computed already (with the norm before it).
    pub async fn forward(&self, x: Tensor<2>, router: &Linear, route: Option<Route>) -> Result<Tensor<2>, Error> {
        let t = x.dims()[0];
        let (ids, weights) = match route {
            Some(route) => route,
            None => moe_route(router.forward(x.clone()), self.top_k)?,
        };
        let pairs = t * self.top_k;
        let gpu = uses_wgsl(&x.device());
        let resident = self.cache.lock().expect("cache lock").all_resident();
        if gpu && pairs <= GEMV_MAX_PAIRS {
            let mut predicted = Vec::new();
            if !resident {
                // One read-back for this layer's ids and the next layer's predicted ones.
                let mut both = vec![ids.clone()];
                if let Some((_, next_router)) = self.next {
                    both.push(moe_route(next_router.forward(x.clone()), self.top_k)?.0);
                }
                let all = read_ints(Tensor::cat(both, 1)).await?;
                let width = all.len() / t;
                let (mut needed, mut next) = (Vec::new(), Vec::new());
                for row in all.chunks(width) {
                    needed.extend_from_slice(&row[..self.top_k]);
                    next.extend_from_slice(&row[self.top_k..]);
                }
                let needed = distinct(&needed);
                predicted = distinct(&next);
                let mut cache = self.cache.lock().expect("cache lock");
                if needed.len() > cache.slots() {
                    drop(cache);
                    return self.grouped(x, ids, weights).await;
                }
                cache.unpin_all();
                cache.ensure(self.layer, &needed)?;
            } else {
                self.cache.lock().expect("cache lock").count_resident_hits(pairs);
            }
            let y = self.pairs(x, ids, weights)?;
            if let (Some((next_layer, _)), false) = (self.next, predicted.is_empty()) {
                // Queued after this layer's kernels, so overwriting their slots is safe.
                self.cache.lock().expect("cache lock").prefetch(next_layer, &predicted)?;
            }
            return Ok(y);
        }
        self.grouped(x, ids, weights).await
    }

    /// The per-pair path (all needed experts resident): gate_up for every pair, then down with
    /// the router-weighted sum of each token's pairs fused in. Every pair's expert is in one of
    /// the pools, so neither output needs zeroing: each pool's dispatch writes its pairs' rows
    /// (gate_up) or adds its share (down).
    fn pairs(&self, x: Tensor<2>, ids: Tensor<2, Int>, weights: Tensor<2>) -> Result<Tensor<2>, Error> {
        let [t, _] = x.dims();
        let k = self.top_k;
        let mut cache = self.cache.lock().expect("cache lock");
        let layout = cache.layout();
        let tables: Vec<_> = cache
            .tables(self.layer)
            .into_iter()
            .map(|(pool, table)| (cache.pools()[pool].words.clone(), table))
            .collect();
        drop(cache);
        let ids = ids.reshape([t * k]);
        let mut h = None;
        for (pool, table) in &tables {
            h = Some(qgemv(x.clone(), ids.clone(), table, pool, h, layout.gate_up(), XMode::Rows { per: k as u32 })?);
        }
        let h = h.expect("a layer's resident experts are in at least one pool");
        let mut y = None;
        for (pool, table) in &tables {
            y = Some(qgemv_combine(h.clone(), ids.clone(), table, pool, weights.clone(), y, layout.down(), XMode::SwiGlu)?);
        }
        Ok(y.expect("at least one pool"))
    }

    /// Many tokens: grouped by expert. On a GPU whose expert cache can hold every expert the
    /// tokens chose, each matrix is one grouped launch per pool over all of them
    /// ([`qgemm_grouped`]): one launch per expert would leave most of the GPU idle, since a
    /// 512-token prefill gives each of 16 experts about 64 rows, one row of tiles. Otherwise
    /// (the CPU, or more experts than slots) the experts run one by one, each made resident in
    /// turn.
    async fn grouped(&self, x: Tensor<2>, ids: Tensor<2, Int>, weights: Tensor<2>) -> Result<Tensor<2>, Error> {
        if uses_wgsl(&x.device()) {
            let g = moe_gather(x, ids, self.num_experts)?;
            let offsets = read_ints(g.offsets).await?;
            let spans: Vec<(usize, Range<usize>)> = offsets
                .windows(2)
                .enumerate()
                .filter(|(_, b)| b[1] > b[0])
                .map(|(e, b)| (e, b[0]..b[1]))
                .collect();
            let experts: Vec<usize> = spans.iter().map(|(e, _)| *e).collect();
            let mut cache = self.cache.lock().expect("cache lock");
            cache.read_ahead(self.layer, &experts);
            let y = if experts.len() <= cache.slots() {
                cache.unpin_all();
                cache.ensure(self.layer, &experts)?;
                let layout = cache.layout();
                // Groups per pool, each with its expert's record.
                let mut by_pool: Vec<(usize, Vec<Group>)> = Vec::new();
                for (e, rows) in spans {
                    let (pool, record) = cache.location(self.layer, e).expect("just made resident");
                    let group = Group { rows, record: record as usize };
                    match by_pool.iter_mut().find(|(p, _)| *p == pool) {
                        Some((_, groups)) => groups.push(group),
                        None => by_pool.push((pool, vec![group])),
                    }
                }
                let words: Vec<_> = by_pool.iter().map(|(p, _)| cache.pools()[*p].words.clone()).collect();
                drop(cache);
                let mut h = None;
                for ((_, groups), words) in by_pool.iter().zip(&words) {
                    h = Some(qgemm_grouped(g.xs.clone(), words, groups, layout.gate_up(), XMode::Rows { per: 1 }, h)?);
                }
                let h = h.expect("tokens chose at least one expert");
                let mut y = None;
                for ((_, groups), words) in by_pool.iter().zip(&words) {
                    y = Some(qgemm_grouped(h.clone(), words, groups, layout.down(), XMode::SwiGlu, y)?);
                }
                y.expect("tokens chose at least one expert")
            } else {
                drop(cache);
                let mut parts = Vec::new();
                for (e, rows) in spans {
                    let mut cache = self.cache.lock().expect("cache lock");
                    cache.unpin_all();
                    cache.ensure(self.layer, &[e])?;
                    let layout = cache.layout();
                    let (pool, offset) = cache.location(self.layer, e).expect("just made resident");
                    let words = cache.pools()[pool].words.clone();
                    drop(cache);
                    let xs = g.xs.clone().narrow(0, rows.start, rows.len());
                    let h = qgemm(xs, &words, offset as usize, layout.gate_up(), XMode::Rows { per: 1 })?;
                    parts.push(qgemm(h, &words, offset as usize, layout.down(), XMode::SwiGlu)?);
                }
                Tensor::cat(parts, 0)
            };
            return Ok(moe_scatter(y, weights, g.positions)?);
        }
        let plan = |experts: &[usize]| self.cache.lock().expect("cache lock").read_ahead(self.layer, experts);
        grouped(x, ids, weights, self.num_experts, plan, |e, xs| {
            let mut cache = self.cache.lock().expect("cache lock");
            cache.unpin_all();
            cache.ensure(self.layer, &[e])?;
            let expert = cache.decoded(self.layer, e).expect("just made resident").clone();
            drop(cache);
            Ok(expert.forward(xs))
        })
        .await
    }
}
