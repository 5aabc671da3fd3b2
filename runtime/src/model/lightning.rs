//! Lightning attention block of MiniMax-01.
//!
//! `qkv = SiLU(x W_qkvᵀ)`, laid out per head as `q | k | v`; per head
//! `S_t = λ S_{t-1} + k_tᵀ v_t`, `o_t = q_t S_t` with no scale and no RoPE, where
//! `λ = exp(-s_h)` and `s_h` comes from the ALiBi slope and the global layer index
//! ([`ModelConfig::lightning_rates`]). The output is RMS-normalised over all heads
//! (eps 1e-6), gated by `sigmoid(x W_gateᵀ)` and projected by `W_out`.

use burn::tensor::{Device, Tensor, TensorData};

use super::linear::Linear;
use crate::config::{LIGHTNING_NORM_EPS, ModelConfig};
use crate::error::{Error, WeightsError};
use crate::kernels::qgemv::Epilogue;
use crate::kernels::lightning_decode::{lightning_decode, lightning_decode_in_place};
use crate::kernels::{lightning_prefill::lightning_prefill, rms_norm::rms_norm};
use crate::weights::{Loader, Names};

#[derive(Debug, Clone)]
pub struct LightningAttention {
    qkv: Linear,
    gate: Linear,
    out: Linear,
    /// `[H * D]`, the RMSNorm over all heads.
    norm: Tensor<1>,
    /// `[H]` decay rates `s_h`.
    rates: Tensor<1>,
}

impl LightningAttention {
    pub fn load(config: &ModelConfig, layer: usize, loader: &Loader<'_>, device: &Device) -> Result<Self, WeightsError> {
        let n = Names;
        let (c, hd) = (config.hidden_size, config.num_heads * config.head_dim);
        let rates = config.lightning_rates(layer);
        Ok(Self {
            qkv: Linear::load(loader, &n.attn(layer, "qkv_proj"), 3 * hd, c)?,
            gate: Linear::load(loader, &n.attn(layer, "output_gate"), hd, c)?,
            out: Linear::load(loader, &n.attn(layer, "out_proj"), c, hd)?,
            norm: loader.vector(&n.attn(layer, "norm"), [hd])?,
            rates: Tensor::from_data(TensorData::new(rates, [config.num_heads]), device),
        })
    }

    /// # Shapes
    /// `x`: `[T, C]`; `state`: `[H, D, D]` f32 → (`[T, C]`, `[H, D, D]`).
    /// One token takes the fused recurrent kernel; more take the blocked one with `block`.
    pub fn forward(&self, x: Tensor<2>, state: Tensor<3>, block: usize) -> Result<(Tensor<2>, Tensor<3>), Error> {
        let t = x.dims()[0];
        // SiLU and the sigmoid gate run inside the projections' kernels at decode.
        let qkv = self.qkv.forward_with(x.clone(), Epilogue::Silu);
        if t == 1 {
            let (o, state) = lightning_decode(qkv, state, &self.rates, &self.norm)?;
            return Ok((self.finish_normed(x, o), state));
        }
        let (o, state) = lightning_prefill(qkv, state, &self.rates, block)?;
        Ok((self.finish(x, o)?, state))
    }

    /// One token, updating `state` in place and leaving the state as it was in `backup` (a
    /// decode step replayed from a graph, see [`lightning_decode_in_place`]).
    pub fn forward_in_place(&self, x: Tensor<2>, state: &mut Tensor<3>, backup: &mut Tensor<3>) -> Result<Tensor<2>, Error> {
        let qkv = self.qkv.forward_with(x.clone(), Epilogue::Silu);
        let o = lightning_decode_in_place(qkv, state, backup, &self.rates, &self.norm)?;
        Ok(self.finish_normed(x, o))
    }

    /// [`Self::finish`] for one decoded token, whose kernel left `o ⊙ norm` and the partial
    /// sums of `o²`: the gate's matmul applies the norm in its epilogue (no launch of its own).
    fn finish_normed(&self, x: Tensor<2>, o: Tensor<2>) -> Tensor<2> {
        let o = self.gate.forward_with(x, Epilogue::NormGate { o, eps: LIGHTNING_NORM_EPS });
        self.out.forward(o)
    }

    /// The norm over all heads, the sigmoid gate from the layer's input `x`, and out_proj.
    fn finish(&self, x: Tensor<2>, o: Tensor<2>) -> Result<Tensor<2>, Error> {
        let (_, o) = rms_norm(o, None, &self.norm, LIGHTNING_NORM_EPS)?;
        let o = self.gate.forward_with(x, Epilogue::Gate(o));
        Ok(self.out.forward(o))
    }
}
