//! Lightning attention block of MiniMax-01.
//!
//! `qkv = SiLU(x W_qkvᵀ)`, laid out per head as `q | k | v`; per head
//! `S_t = λ S_{t-1} + k_tᵀ v_t`, `o_t = q_t S_t` with no scale and no RoPE, where
//! `λ = exp(-s_h)` and `s_h` comes from the ALiBi slope and the global layer index
//! ([`ModelConfig::lightning_rates`]). The output is RMS-normalised over all heads
//! (eps 1e-6), gated by `sigmoid(x W_gateᵀ)` and projected by `W_out`.
//!
//! `W_qkv` and `W_gate` read the same input, so they are one matrix stacked by rows: one
//! pass over `x` for both. A decoded token then takes three launches: the projection (SiLU
//! and sigmoid in its epilogue), the recurrence (which leaves the norm's partial sums), and
//! out_proj, whose input read applies the norm and the gate.

use burn::tensor::activation::{sigmoid, silu};
use burn::tensor::{Device, Tensor, TensorData};

use super::linear::Linear;
use crate::config::{LIGHTNING_NORM_EPS, ModelConfig};
use crate::error::{Error, WeightsError};
use crate::kernels::qgemv::{Epilogue, Gated};
use crate::kernels::lightning_decode::{lightning_decode, lightning_decode_in_place};
use crate::kernels::{lightning_prefill::lightning_prefill, rms_norm::rms_norm};
use crate::weights::{Loader, Names};

#[derive(Debug, Clone)]
pub struct LightningAttention {
    /// `[4 H D, C]`: rows `0..3HD` are W_qkv, then W_gate.
    qkv_gate: Linear,
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
            qkv_gate: Linear::load_stacked(
                loader,
                &[(&n.attn(layer, "qkv_proj"), 3 * hd), (&n.attn(layer, "output_gate"), hd)],
                c,
            )?,
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
        let hd = self.norm.dims()[0];
        if t == 1 {
            let y = self.project(x);
            let (o, state) = lightning_decode(y.clone(), state, &self.rates, &self.norm)?;
            return Ok((self.finish_normed(o, y), state));
        }
        let y = self.qkv_gate.forward(x);
        let qkv = silu(y.clone().narrow(1, 0, 3 * hd));
        let (o, state) = lightning_prefill(qkv, state, &self.rates, block)?;
        let (_, o) = rms_norm(o, None, &self.norm, LIGHTNING_NORM_EPS)?;
        let gate = sigmoid(y.narrow(1, 3 * hd, hd));
        Ok((self.out.forward(o * gate), state))
    }

    /// One token, updating `state` in place and leaving the state as it was in `backup` (a
    /// decode step replayed from a graph, see [`lightning_decode_in_place`]).
    pub fn forward_in_place(&self, x: Tensor<2>, state: &mut Tensor<3>, backup: &mut Tensor<3>) -> Result<Tensor<2>, Error> {
        let y = self.project(x);
        let o = lightning_decode_in_place(y.clone(), state, backup, &self.rates, &self.norm)?;
        Ok(self.finish_normed(o, y))
    }

    /// `[silu(x W_qkvᵀ) | sigmoid(x W_gateᵀ)]`, `[T, 4 H D]`: both activations in the
    /// projection's epilogue. The recurrence reads the first `3 H D` columns.
    fn project(&self, x: Tensor<2>) -> Tensor<2> {
        let hd = self.norm.dims()[0];
        self.qkv_gate.forward_with(x, Epilogue::SiluSigmoid { split: 3 * hd })
    }

    /// out_proj of the norm over all heads, gated: `o` is the decode kernel's `o ⊙ norm` and
    /// partial sums of `o²`, `y` the projection with the sigmoid gate in its last `H D`
    /// columns; out_proj's input read applies both.
    fn finish_normed(&self, o: Tensor<2>, y: Tensor<2>) -> Tensor<2> {
        let hd = self.norm.dims()[0];
        self.out.forward_norm_gated(o, Gated { values: y, offset: 3 * hd, eps: LIGHTNING_NORM_EPS })
    }
}
