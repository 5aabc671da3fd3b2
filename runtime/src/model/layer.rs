//! One decoder layer: a token mixer (lightning or softmax attention) and a MoE or dense FFN, each in
//! a residual branch weighted by the layer's alpha/beta factors.
//!
//! Post-norm (MiniMax): `a = norm(x)`, `x' = alpha · a + beta · f(a)`, i.e. the residual is
//! the *normalised* input. Pre-norm (Llama): `x' = x + f(norm(x))`. The combine of one branch
//! and the norm of the next run as one fused `rms_norm` kernel; see [`super::Model::forward`].

use burn::tensor::{DType, Device, Tensor};

use super::attention::Attention;
use super::lightning::LightningAttention;
use super::moe::{Expert, Moe};
use super::moe_streamed::{GEMV_MAX_PAIRS, Streamed};
use crate::kernels::rms_norm::{ROUTE_MAX_ROWS, Route};
use super::state::{DeviceStep, LayerState};
use crate::config::{Ffn, LayerConfig, LayerKind, ModelConfig};
use crate::error::{Error, WeightsError};
use crate::weights::{Loader, Names};

#[derive(Debug, Clone)]
pub enum Mixer {
    Lightning(LightningAttention),
    Softmax(Attention),
}

#[derive(Debug, Clone)]
pub enum FeedForward {
    Moe(Moe),
    Dense(Expert),
}

impl FeedForward {
    /// # Shapes
    /// `x`: `[T, C]` → `[T, C]`.
    /// `streamed` is given for a MoE whose experts live in the expert cache; `route`, when the
    /// MoE's routing of `x` was computed with the norm that made it ([`rms_norm_route`]).
    ///
    /// [`rms_norm_route`]: crate::kernels::rms_norm::rms_norm_route
    pub async fn forward(&self, x: Tensor<2>, streamed: Option<Streamed<'_>>, route: Option<Route>) -> Result<Tensor<2>, Error> {
        match self {
            FeedForward::Moe(moe) => moe.forward(x, streamed, route).await,
            FeedForward::Dense(mlp) => Ok(mlp.forward(x)),
        }
    }

    /// The router and top-k of a MoE whose routing of `t` rows may be fused into the norm
    /// before it: experts in the expert cache (whose decode path takes ids on the device), few
    /// enough rows, and the router in one f32 block.
    pub fn fusable_router(&self, t: usize) -> Option<(&Tensor<2>, usize)> {
        let FeedForward::Moe(moe) = self else { return None };
        let parts = moe.router.float_parts().filter(|p| p.len() == 1 && moe.router.bias.is_none())?;
        let few = t <= ROUTE_MAX_ROWS && t * moe.top_k <= GEMV_MAX_PAIRS;
        (few && parts[0].dtype() == DType::F32).then(|| (&parts[0], moe.top_k))
    }
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub config: LayerConfig,
    pub input_norm: Tensor<1>,
    pub post_attention_norm: Tensor<1>,
    pub mixer: Mixer,
    pub ffn: FeedForward,
}

impl Layer {
    pub fn load(
        config: &ModelConfig,
        index: usize,
        loader: &Loader<'_>,
        device: &Device,
        streamed_experts: bool,
    ) -> Result<Self, WeightsError> {
        let n = Names;
        let c = config.hidden_size;
        let layer = config.layers[index].clone();
        let mixer = match layer.kind {
            LayerKind::Lightning => Mixer::Lightning(LightningAttention::load(config, index, loader, device)?),
            LayerKind::Softmax => Mixer::Softmax(Attention::load(config, index, loader)?),
        };
        Ok(Self {
            config: layer,
            input_norm: loader.vector(&n.input_norm(index), [c])?,
            post_attention_norm: loader.vector(&n.post_attention_norm(index), [c])?,
            mixer,
            ffn: match &config.ffn {
                Ffn::Moe(moe) => FeedForward::Moe(Moe::load(moe, c, index, loader, streamed_experts)?),
                Ffn::Dense { .. } => FeedForward::Dense(Expert::load_dense(config, index, loader)?),
            },
        })
    }

    /// The token mixer on normalised input `a` (`[T, C]`), updating this layer's state.
    pub fn mix(&self, a: Tensor<2>, state: &mut LayerState, position: usize, block: usize) -> Result<Tensor<2>, Error> {
        match (&self.mixer, state) {
            (Mixer::Lightning(m), LayerState::Lightning(s)) => {
                let (o, next) = m.forward(a, s.clone(), block)?;
                *s = next;
                Ok(o)
            }
            (Mixer::Softmax(m), LayerState::Softmax(cache)) => m.forward(a, cache, position),
            _ => unreachable!("State::new builds the states from the same layer kinds"),
        }
    }

    /// [`Self::mix`] for one token of a decode step read on the device (see [`DeviceStep`]);
    /// `index` is this layer's.
    pub fn mix_at(&self, a: Tensor<2>, state: &mut LayerState, step: &mut DeviceStep, index: usize) -> Result<Tensor<2>, Error> {
        match (&self.mixer, state) {
            (Mixer::Lightning(m), LayerState::Lightning(s)) => {
                let backup = step.backups[index].as_mut().expect("a device step has a backup per lightning layer");
                m.forward_in_place(a, s, backup)
            }
            (Mixer::Softmax(m), LayerState::Softmax(cache)) => m.forward_at(a, cache, step),
            _ => unreachable!("State::new builds the states from the same layer kinds"),
        }
    }
}
