//! One decoder layer: a token mixer (lightning or softmax attention) and a MoE or dense FFN, each in
//! a residual branch weighted by the layer's alpha/beta factors.
//!
//! Post-norm (MiniMax): `a = norm(x)`, `x' = alpha · a + beta · f(a)`, i.e. the residual is
//! the *normalised* input. Pre-norm (Llama): `x' = x + f(norm(x))`. The combine of one branch
//! and the norm of the next run as one fused `rms_norm` kernel; see [`super::Model::forward`].

use burn::tensor::{Device, Tensor};

use super::attention::Attention;
use super::lightning::LightningAttention;
use super::moe::{Expert, Moe};
use super::moe_streamed::Streamed;
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
    /// `streamed` is given for a MoE whose experts live in the expert cache.
    pub async fn forward(&self, x: Tensor<2>, streamed: Option<Streamed<'_>>) -> Result<Tensor<2>, Error> {
        match self {
            FeedForward::Moe(moe) => moe.forward(x, streamed).await,
            FeedForward::Dense(mlp) => Ok(mlp.forward(x)),
        }
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
