//! Sparse mixture of experts: a softmax router picks the top-k experts per token, their
//! SwiGLU outputs `W2 (SiLU(W1 x) ⊙ W3 x)` are summed with the renormalised router weights.
//!
//! Tokens are grouped by expert on the device (`moe_gather`), each expert multiplies one
//! contiguous block, and `moe_scatter` adds the weighted results back in token order. The
//! expert boundaries (E + 1 integers) are the only host read-back.
//!
//! This executor serves the CPU backend and experts stored as blocks (a GGUF's). On a GPU a
//! checkpoint's float experts are encoded into resident pools at load instead and run by
//! [`super::moe_streamed`], whose decode needs no read-back.

use burn::tensor::{Int, Tensor};

use super::linear::Linear;
use super::moe_streamed::Streamed;
use crate::config::{ModelConfig, MoeConfig};
use crate::error::{Error, RuntimeError, WeightsError};
use crate::kernels::rms_norm::Route;
use crate::kernels::{moe_gather::moe_gather, moe_route::moe_route, moe_scatter::moe_scatter};
use crate::weights::{Loader, MOE_PREFIXES, Names};

/// One SwiGLU expert, with the gate (w1) and up (w3) projections fused into one matrix.
#[derive(Debug, Clone)]
pub struct Expert {
    /// `[2F, C]`: rows `0..F` are w1 (gate), `F..2F` are w3 (up).
    gate_up: Linear,
    /// `[C, F]`: w2.
    down: Linear,
}

impl Expert {
    /// An expert from its fused `gate_up [2F, C]` and `down [C, F]` matrices.
    pub fn from_matrices(gate_up: Tensor<2>, down: Tensor<2>) -> Self {
        Self {
            gate_up: Linear::new(gate_up),
            down: Linear::new(down),
        }
    }

    /// The dense SwiGLU MLP of a Llama-family layer: `gate_proj`, `up_proj`, `down_proj`.
    pub fn load_dense(config: &ModelConfig, layer: usize, loader: &Loader<'_>) -> Result<Self, WeightsError> {
        let n = Names;
        let (c, f) = (config.hidden_size, config.ffn.intermediate_size());
        let gate = loader.matrix(&n.mlp(layer, "gate_proj"), [f, c])?;
        let up = loader.matrix(&n.mlp(layer, "up_proj"), [f, c])?;
        Ok(Self {
            gate_up: Linear::new(Tensor::cat(vec![gate, up], 0)),
            down: Linear::load(loader, &n.mlp(layer, "down_proj"), c, f)?,
        })
    }

    /// # Shapes
    /// `x`: `[N, C]` → `[N, C]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.down.forward_swiglu(self.gate_up.forward(x))
    }
}

#[derive(Debug, Clone)]
pub struct Moe {
    /// `[E, C]`, kept in f32.
    pub(crate) router: Linear,
    /// Resident experts; empty when they stream from a pack (see [`super::moe_streamed`]).
    experts: Vec<Expert>,
    pub(crate) num_experts: usize,
    pub(crate) top_k: usize,
}

impl Moe {
    /// Loads either expert layout (see [`crate::weights::names`]); with `streamed`, only the
    /// router (the experts live in an expert cache).
    pub fn load(
        config: &MoeConfig,
        hidden: usize,
        layer: usize,
        loader: &Loader<'_>,
        streamed: bool,
    ) -> Result<Self, WeightsError> {
        let n = Names;
        let (c, f, e) = (hidden, config.intermediate_size, config.num_experts);
        let prefix = MOE_PREFIXES
            .into_iter()
            .find(|p| loader.source.has(&n.router(layer, p)))
            .unwrap_or(MOE_PREFIXES[0]);
        let router = Linear::new(loader.router(&n.router(layer, prefix), [e, c])?);
        if streamed {
            return Ok(Self {
                router,
                experts: Vec::new(),
                num_experts: e,
                top_k: config.top_k,
            });
        }
        let fused_name = n.fused_experts(layer, prefix, "gate_up_proj");
        let fused = !loader.source.has(&n.expert(layer, prefix, 0, "w1")) && loader.source.has(&fused_name);
        let experts = (0..e)
            .map(|i| {
                if fused {
                    let down_name = n.fused_experts(layer, prefix, "down_proj");
                    Ok(Expert {
                        gate_up: Linear::new(loader.matrix_of_stack(&fused_name, [e, 2 * f, c], i)?),
                        down: Linear::new(loader.matrix_of_stack(&down_name, [e, c, f], i)?),
                    })
                } else {
                    let (w1, w3) = (n.expert(layer, prefix, i, "w1"), n.expert(layer, prefix, i, "w3"));
                    Ok(Expert {
                        gate_up: Linear::load_stacked(loader, &[(&w1, f), (&w3, f)], c)?,
                        down: Linear::load(loader, &n.expert(layer, prefix, i, "w2"), c, f)?,
                    })
                }
            })
            .collect::<Result<_, WeightsError>>()?;
        Ok(Self {
            router,
            experts,
            num_experts: e,
            top_k: config.top_k,
        })
    }

    /// # Shapes
    /// `x`: `[T, C]` → `[T, C]`.
    /// `route` is this layer's routing of `x` when it was computed already.
    pub async fn forward(&self, x: Tensor<2>, streamed: Option<Streamed<'_>>, route: Option<Route>) -> Result<Tensor<2>, Error> {
        if let Some(streamed) = streamed {
            return streamed.forward(x, &self.router, route).await;
        }
        let (ids, weights) = match route {
            Some(route) => route,
            None => moe_route(self.router.forward(x.clone()), self.top_k)?,
        };
        grouped(x, ids, weights, self.experts.len(), |_| {}, |e, xs| Ok(self.experts[e].forward(xs))).await
    }
}

/// The expert boundaries (or any small Int tensor) read back to the host.
pub(crate) async fn read_ints<const D: usize>(t: Tensor<D, Int>) -> Result<Vec<usize>, Error> {
    let v = t
        .into_data_async()
        .await
        .map_err(RuntimeError::readback)?
        .try_into_vec_as::<i64>()
        .map_err(RuntimeError::readback)?;
    Ok(v.into_iter().map(|i| i as usize).collect())
}

/// Tokens grouped by expert: `moe_gather`, one read-back of the E + 1 boundaries, `plan` with
/// the experts that have tokens, `expert(e, rows)` on each expert's contiguous rows, then the weighted `moe_scatter` back in token order.
/// Shared by resident experts and experts in the expert cache.
pub(crate) async fn grouped(
    x: Tensor<2>,
    ids: Tensor<2, Int>,
    weights: Tensor<2>,
    num_experts: usize,
    plan: impl FnOnce(&[usize]),
    mut expert: impl FnMut(usize, Tensor<2>) -> Result<Tensor<2>, Error>,
) -> Result<Tensor<2>, Error> {
    let grouped = moe_gather(x, ids, num_experts)?;
    let offsets = read_ints(grouped.offsets).await?;
    let with_tokens: Vec<usize> = offsets.windows(2).enumerate().filter(|(_, b)| b[1] > b[0]).map(|(e, _)| e).collect();
    plan(&with_tokens);
    let mut parts = Vec::new();
    for (e, bounds) in offsets.windows(2).enumerate() {
        let (start, end) = (bounds[0], bounds[1]);
        if end > start {
            parts.push(expert(e, grouped.xs.clone().narrow(0, start, end - start))?);
        }
    }
    Ok(moe_scatter(Tensor::cat(parts, 0), weights, grouped.positions)?)
}
