//! Softmax attention with GQA and (partial) RoPE: the 1-in-8 layers of MiniMax-01 and every
//! layer of Llama-family models. Scores are scaled by `1/sqrt(D)`.

use burn::tensor::Tensor;

use super::linear::Linear;
use super::rope;
use super::state::{DeviceStep, KvCache};
use crate::config::ModelConfig;
use crate::error::{Error, WeightsError};
use crate::kernels::rope::{rope, rope_at};
use crate::kernels::{
    attention_decode::{attention_decode_at, attention_decode_prefix},
    attention_prefill::attention_prefill_prefix,
};
use crate::weights::{Loader, Names};

#[derive(Debug, Clone)]
pub struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rotary_dim: usize,
    theta: f64,
}

impl Attention {
    pub fn load(config: &ModelConfig, layer: usize, loader: &Loader<'_>) -> Result<Self, WeightsError> {
        let n = Names;
        let c = config.hidden_size;
        let (hd, kvd) = (config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim);
        let projection = |part: &str, out: usize| {
            let linear = Linear::load(loader, &n.attn(layer, part), out, c)?;
            if config.attention_bias {
                linear.with_bias(loader, &n.attn_bias(layer, part))
            } else {
                Ok(linear)
            }
        };
        Ok(Self {
            q: projection("q_proj", hd)?,
            k: projection("k_proj", kvd)?,
            v: projection("v_proj", kvd)?,
            o: Linear::load(loader, &n.attn(layer, "o_proj"), c, hd)?,
            heads: config.num_heads,
            kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            rotary_dim: config.rotary_dim,
            theta: config.rope_theta,
        })
    }

    /// # Shapes
    /// `x`: `[T, C]` at positions `position..position + T` → `[T, C]`; appends to `cache`.
    pub fn forward(&self, x: Tensor<2>, cache: &mut KvCache, position: usize) -> Result<Tensor<2>, Error> {
        let [t, _] = x.dims();
        let (d, device) = (self.head_dim, x.device());
        let (cos, sin) = rope::tables(position, t, self.rotary_dim, self.theta, &device);
        let q = rope(self.q.forward(x.clone()).reshape([t, self.heads, d]), &cos, &sin)?;
        let k = rope(self.k.forward(x.clone()).reshape([t, self.kv_heads, d]), &cos, &sin)?;
        let v = self.v.forward(x).reshape([t, self.kv_heads, d]);
        cache.append(k, v);
        let o = if t == 1 {
            // The whole cache and its length: a view of the valid rows would be copied.
            let (k, v) = cache.buffers();
            attention_decode_prefix(q, k, v, cache.len())?
        } else {
            let (k, v) = cache.buffers();
            attention_prefill_prefix(q, k, v, cache.len())?
        };
        Ok(self.o.forward(o))
    }

    /// [`Self::forward`] for one token of a decode step whose position is read on the device
    /// (a step replayed from a graph): RoPE from `step`'s tables, the KV rows appended in place
    /// at that position, attention over the prefix it ends.
    pub fn forward_at(&self, x: Tensor<2>, cache: &mut KvCache, step: &DeviceStep) -> Result<Tensor<2>, Error> {
        let d = self.head_dim;
        let (cos, sin, base) = step.rope.as_ref().expect("a device step of a model with softmax layers has RoPE tables");
        let q = rope_at(self.q.forward(x.clone()).reshape([1, self.heads, d]), cos, sin, &step.pos, *base)?;
        let k = rope_at(self.k.forward(x.clone()).reshape([1, self.kv_heads, d]), cos, sin, &step.pos, *base)?;
        let v = self.v.forward(x).reshape([1, self.kv_heads, d]);
        cache.append_at(k, v, &step.pos)?;
        let (k, v) = cache.buffers();
        Ok(self.o.forward(attention_decode_at(q, k, v, &step.pos)?))
    }

    /// The rotary dims and base of this layer's RoPE.
    pub fn rotary(&self) -> (usize, f64) {
        (self.rotary_dim, self.theta)
    }
}
