//! The MiniMax-01 model: embeddings → layers (lightning or softmax attention + MoE, post- or
//! pre-norm residuals with alpha/beta factors) → final norm → lm_head.

pub mod attention;
pub mod decode_graph;
pub mod layer;
pub mod lightning;
pub mod linear;
pub mod moe;
pub mod moe_streamed;
pub mod rope;
pub mod snapshot;
pub mod state;

pub use state::{KvCache, LayerState, Mark, State};

use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use std::sync::{Arc, Mutex};

use crate::config::{Ffn, ModelConfig, NormPlacement};
use crate::experts::store_source::StoreExperts;
use crate::experts::synthetic::SyntheticExperts;
use crate::experts::{ExpertCache, ExpertLayout, ExpertSource};
use crate::error::{Error, RuntimeError, WeightsError};
use crate::kernels::{rms_norm::{rms_norm, rms_norm_route}, uses_wgsl};
use crate::weights::{Loader, Names, StoredDType, WeightSource};
use layer::{FeedForward, Layer};
use state::DeviceStep;
use moe_streamed::Streamed;
use linear::Linear;

/// Which rows of logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// `[T, vocab]`.
    All,
    /// `[1, vocab]`, for the last token only (generation).
    Last,
}

/// A loaded model, immutable during inference; all sequence state lives in [`State`].
#[derive(Debug, Clone)]
pub struct Model {
    pub config: ModelConfig,
    pub device: Device,
    /// `[vocab, C]` in row blocks (see [`Linear`]).
    embed: Linear,
    layers: Vec<Layer>,
    norm: Tensor<1>,
    lm_head: Linear,
    /// Block size of the lightning prefill: our kernel's tile on the GPU, the config's block
    /// size on the CPU (where bigger blocks mean fewer, larger tensor ops).
    block: usize,
    /// Identifies the model in saved states (see [`snapshot`]).
    pub fingerprint: String,
    /// The expert cache, when the experts stream from a pack instead of being loaded whole.
    pub experts: Option<Arc<Mutex<ExpertCache>>>,
    prefetch: bool,
    /// How the weights of linear layers are stored.
    pub matrices: Matrices,
    /// Tokens per prefill chunk when the caller names none (see [`prefill_chunk`]).
    pub prefill_chunk: usize,
    /// The storage-binding limit the model was loaded for (`None` on the CPU).
    max_binding_bytes: Option<u64>,
    /// Positions a state may reach: the runtime's cap (`--max-context`) and a sliding window
    /// we do not implement; `None` for no limit (see [`Model::forward`]).
    pub max_context: Option<usize>,
    /// Whether the warning about passing `max_position_embeddings` was given.
    warned_past_trained: Arc<std::sync::atomic::AtomicBool>,
}

/// Working set of a prefill chunk: activations are 0.44 MB per token at MiniMax Text-01
/// dimensions, so 1 GiB gives chunks of 2416 tokens there and the 8K cap on small models; a
/// chunk that long keeps a GPU busy either way.
pub const PREFILL_BUDGET_BYTES: u64 = 1 << 30;

/// The default prefill chunk: as many tokens as keep a chunk's activations within `budget`
/// bytes and its largest tensor within `max_binding` bytes (a storage binding), at most 8192,
/// a multiple of 16. A prompt is fed a chunk at a time (feeding it in pieces gives
/// the same logits), so prefill memory is bounded whatever the prompt's length: only the KV
/// cache, and the logits of every position when they are asked for, grow with it.
pub fn prefill_chunk(config: &ModelConfig, budget: u64, max_binding: Option<u64>) -> usize {
    let (all, largest) = config.prefill_bytes_per_token();
    let by_budget = budget / all.max(1);
    let by_binding = max_binding.map_or(u64::MAX, |b| b / largest.max(1));
    // A multiple of 16 where the limits allow 16 or more; fewer only under a binding limit
    // too small for 16 (never on real adapters, whose limits are 128 MiB and up).
    let chunk = by_budget.min(by_binding).clamp(1, 8192) as usize;
    if chunk >= 16 { chunk / 16 * 16 } else { chunk }
}

impl Model {
    /// Refuses a prefill chunk of `chunk` tokens whose largest tensor (a projection's output,
    /// or the logits of every position) could not be bound on this GPU, before any work:
    /// otherwise the chunk fails deep inside, after the chunks before it ran.
    pub fn check_chunk(&self, chunk: usize) -> Result<(), RuntimeError> {
        let Some(limit) = self.max_binding_bytes else { return Ok(()) };
        let largest = self.config.prefill_bytes_per_token().1;
        let bytes = largest.saturating_mul(chunk as u64);
        if bytes <= limit {
            return Ok(());
        }
        let max = (limit / largest.max(1)) as usize;
        Err(RuntimeError::ChunkTooLarge { chunk, bytes, limit, max })
    }
}

/// How the big matrices are stored on the device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Matrices {
    /// Float matrices (embeddings, and every matrix when nothing is quantized): f32 or f16.
    pub float: DType,
    /// The block format of quantized linear layers (wgpu only; the CPU backend dequantizes
    /// them at load).
    pub quant: Option<StoredDType>,
}

impl Matrices {
    /// Storage of the linear layers' weights: a block format or a float type.
    pub fn linear(&self) -> StoredDType {
        self.quant.unwrap_or(if self.float == DType::F16 { StoredDType::F16 } else { StoredDType::F32 })
    }

    /// Bytes per weight of the linear layers (blocks included).
    pub fn bytes_per_weight(&self) -> f64 {
        let t = self.linear();
        t.block_bytes() as f64 / t.block_elems() as f64
    }
}

/// Experts that stream from a pack into a bounded cache.
pub struct StreamedExperts {
    pub source: Arc<dyn ExpertSource>,
    /// The cache budget in bytes (at least `top_k` experts are kept whatever it says).
    pub budget_bytes: u64,
    /// Whether to load the next layer's predicted experts ahead of need.
    pub prefetch: bool,
}

/// A checkpoint's experts as records in one GPU pool per layer (or a few), all resident, when
/// the model runs on a GPU: decode then routes on the device with no host read-back (see
/// [`crate::experts::store_source`]). Experts stored as blocks (a GGUF's) keep their blocks.
/// `None` on the CPU backend, for models without experts, for blocks our kernels do not read
/// or of mixed formats, and where one expert's record would not fit a storage binding (the
/// experts' matrices are then split into row blocks instead).
fn resident_experts(
    config: &ModelConfig,
    source: &WeightSource,
    device: &Device,
    matrices: Matrices,
    max_binding_bytes: Option<u64>,
) -> Result<Option<StreamedExperts>, Error> {
    let (Ffn::Moe(moe), true) = (&config.ffn, uses_wgsl(device)) else {
        return Ok(None);
    };
    let (c, f, e) = (config.hidden_size, moe.intermediate_size, moe.num_experts);
    let fits = |layout: &ExpertLayout| layout.slot_bytes() as u64 <= max_binding_bytes.unwrap_or(u64::MAX).min(1 << 31);
    // Experts stored as blocks keep their format (a GGUF's); floats take the linear layers'.
    let source: Arc<dyn ExpertSource> = match source {
        WeightSource::Files(store) => match StoreExperts::new(store.clone(), matrices.linear(), [c, f, e], config.num_layers())? {
            Some(experts) if fits(&experts.layout()) => Arc::new(experts),
            _ => return Ok(None),
        },
        // Synthetic benchmark models: random records (a few distinct ones, shared).
        WeightSource::Random { std } => match ExpertLayout::new(matrices.linear(), c, f) {
            Ok(layout) if fits(&layout) => Arc::new(SyntheticExperts::new(layout, e, 16, *std as f32)),
            _ => return Ok(None),
        },
    };
    Ok(Some(StreamedExperts { source, budget_bytes: u64::MAX, prefetch: false }))
}

/// Lightning prefill block of the WGSL kernel (fits WebGPU's 16 KiB workgroup memory for
/// head dims up to 128).
pub const GPU_LIGHTNING_BLOCK: usize = 16;

impl Model {
    /// Loads every tensor of `config` from `source` onto `device`; big matrices are stored as
    /// `matrices` says (f32, f16 on GPUs with shader-f16, or quantized blocks for the linear
    /// layers). `progress` gets the stored bytes of each piece read.
    /// `max_binding_bytes` is the adapter's storage-binding limit (`None` on the CPU).
    pub fn load(
        config: ModelConfig,
        source: &WeightSource,
        device: &Device,
        matrices: Matrices,
        max_binding_bytes: Option<u64>,
        streamed: Option<StreamedExperts>,
        progress: Option<&dyn Fn(u64)>,
    ) -> Result<Self, Error> {
        // The CPU backend runs dequantized copies (see `Linear::load_stacked`).
        let matrices = if uses_wgsl(device) { matrices } else { Matrices { float: DType::F32, ..matrices } };
        let loader = Loader {
            source,
            device,
            matrix_dtype: matrices.float,
            max_binding_bytes,
            progress,
            quant: matrices.quant,
        };
        let n = Names;
        let (v, c) = (config.vocab_size, config.hidden_size);
        let _span = tracing::info_span!("load", layers = config.num_layers()).entered();
        let streamed = match streamed {
            Some(s) => Some(s),
            None => resident_experts(&config, source, device, matrices, max_binding_bytes)?,
        };
        let embed = Linear::load_float(&loader, &n.embed(), v, c)?;
        let layers = (0..config.num_layers())
            .map(|i| Layer::load(&config, i, &loader, device, streamed.is_some()))
            .collect::<Result<Vec<_>, _>>()?;
        let norm = loader.vector(&n.final_norm(), [c])?;
        let lm_head = if config.tie_word_embeddings && !source.has(&n.lm_head()) {
            // Tied: the embedding table itself, or, when linear layers are quantized, a
            // quantized copy of it (the table stays float for row lookups).
            match loader.quant_for(c) {
                Some(_) => Linear::load(&loader, &n.embed(), v, c)?,
                None => embed.clone(),
            }
        } else {
            Linear::load(&loader, &n.lm_head(), v, c)?
        };
        let block = if uses_wgsl(device) { GPU_LIGHTNING_BLOCK } else { config.block_size.max(1) };
        let sample = match source {
            WeightSource::Files(set) => set
                .get(&n.embed())?
                .map(|t| t.bytes[..t.bytes.len().min(1 << 16)].to_vec())
                .unwrap_or_default(),
            WeightSource::Random { .. } => b"random".to_vec(),
        };
        let fingerprint = snapshot::fingerprint(&[format!("{config:?}").as_bytes(), &sample]);
        let prefetch = streamed.as_ref().is_some_and(|s| s.prefetch);
        let experts = match (streamed, &config.ffn) {
            (Some(s), Ffn::Moe(moe)) => {
                let layers: Vec<usize> = (0..config.num_layers()).collect();
                let layout = s.source.layout();
                if (layout.hidden, layout.ffn) != (c, moe.intermediate_size) {
                    return Err(WeightsError::Format {
                        path: "experts".into(),
                        reason: format!(
                            "the pack's experts are {}×{} but the config says hidden {c}, FFN {}",
                            layout.hidden, layout.ffn, moe.intermediate_size
                        ),
                    }
                    .into());
                }
                let cache = ExpertCache::new(
                    s.source,
                    &layers,
                    moe.num_experts,
                    s.budget_bytes,
                    moe.top_k,
                    device,
                    max_binding_bytes,
                )?;
                Some(Arc::new(Mutex::new(cache)))
            }
            (Some(_), Ffn::Dense { .. }) => {
                return Err(WeightsError::Format {
                    path: "experts".into(),
                    reason: "an expert pack was given for a model without experts".into(),
                }
                .into());
            }
            (None, _) => None,
        };
        let prefill_chunk = prefill_chunk(&config, PREFILL_BUDGET_BYTES, max_binding_bytes);
        let max_context = config.sliding_window;
        Ok(Self {
            prefill_chunk,
            max_binding_bytes,
            max_context,
            warned_past_trained: Default::default(),
            config,
            device: device.clone(),
            embed,
            layers,
            norm,
            lm_head,
            block,
            fingerprint,
            experts,
            prefetch,
            matrices: if uses_wgsl(device) { matrices } else { Matrices { quant: None, ..matrices } },
        })
    }

    /// Embedding rows of `tokens`: `[T, C]` f32. With a split table, each token is looked up
    /// in its block and the rows are put back in order.
    fn embed_tokens(&self, tokens: &[u32]) -> Tensor<2> {
        let index = |ids: Vec<i64>| {
            let n = ids.len();
            Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), &self.device)
        };
        let mut rows = Vec::new();
        let mut order = Vec::new();
        let mut start = 0;
        for part in self.embed.float_parts().expect("embeddings stay float") {
            let n = part.dims()[0];
            let (ids, at): (Vec<i64>, Vec<i64>) = tokens
                .iter()
                .enumerate()
                .filter(|(_, id)| (start..start + n).contains(&(**id as usize)))
                .map(|(i, &id)| ((id as usize - start) as i64, i as i64))
                .unzip();
            if !ids.is_empty() {
                rows.push(part.clone().select(0, index(ids)));
                order.extend(at);
            }
            start += n;
        }
        let mut x = if rows.len() == 1 { rows.pop().expect("one part") } else { Tensor::cat(rows, 0) };
        if self.embed.float_parts().is_some_and(|p| p.len() > 1) {
            // Row r of `x` belongs to token order[r]; invert that permutation.
            let mut inverse = vec![0i64; order.len()];
            for (r, &i) in order.iter().enumerate() {
                inverse[i as usize] = r as i64;
            }
            x = x.select(0, index(inverse));
        }
        f32_rows(x)
    }

    /// A fresh per-sequence state on this model's device.
    pub fn new_state(&self) -> State {
        State::new(&self.config, &self.device)
    }

    /// Runs `tokens` through the model, advancing `state`; returns f32 logits.
    ///
    /// Any number of tokens may be fed at once: one token takes the recurrent decode kernels,
    /// more take the blocked prefill kernels, and feeding a prompt in pieces gives the same
    /// logits as feeding it whole.
    ///
    /// # Shapes
    /// `tokens`: `T` ids → `[T, vocab]` ([`Logits::All`]) or `[1, vocab]` ([`Logits::Last`]).
    pub async fn forward(&self, tokens: &[u32], state: &mut State, logits: Logits) -> Result<Tensor<2>, Error> {
        if tokens.is_empty() {
            return Err(RuntimeError::EmptyInput.into());
        }
        let vocab = self.config.vocab_size;
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(RuntimeError::TokenOutOfRange { id, vocab }.into());
        }
        self.check_context(state.position + tokens.len())?;
        self.run(self.embed_tokens(tokens), state, logits, None).await
    }

    /// [`forward`](Self::forward) for one token whose id is still on the device, `[1]` (the
    /// argmax of the step before): greedy decoding feeds it without waiting to read it back.
    /// The id must be below the vocabulary size, as an argmax over the logits is. `None` when
    /// the embedding table is split in blocks, whose lookup sorts the ids on the host.
    pub async fn forward_on_device(
        &self,
        id: Tensor<1, Int>,
        state: &mut State,
        logits: Logits,
    ) -> Result<Option<Tensor<2>>, Error> {
        let parts = self.embed.float_parts().expect("embeddings stay float");
        if parts.len() != 1 || id.dims() != [1] {
            return Ok(None);
        }
        self.check_context(state.position + 1)?;
        let x = f32_rows(parts[0].clone().select(0, id));
        Ok(Some(self.run(x, state, logits, None).await?))
    }

    /// Whether a state may grow to `needed` positions (the runtime's cap, if any).
    pub fn fits(&self, needed: usize) -> bool {
        self.max_context.is_none_or(|max| needed <= max)
    }

    /// How many more positions a state at `position` may be fed (the runtime's cap, if any).
    pub fn room(&self, position: usize) -> usize {
        self.max_context.map_or(usize::MAX, |max| max.saturating_sub(position))
    }

    /// Whether a state may grow to `needed` positions; warns once past the trained length.
    pub fn check_context(&self, needed: usize) -> Result<(), Error> {
        // The trained length is information, not a wall: RoPE and the lightning decay extend
        // past it (how well is the model's business), so it is said once. Walls are a cap the
        // runtime was given and a sliding window, which attention here does not implement.
        if let Some(max) = self.max_context.filter(|_| !self.fits(needed)) {
            return Err(RuntimeError::ContextOverflow { needed, max }.into());
        }
        let trained = self.config.max_position_embeddings;
        if needed > trained && !self.warned_past_trained.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!("the context passes the {trained} positions the model was trained for ({needed}); continuing");
        }
        Ok(())
    }

    /// The layers and the head over embedded tokens `x`, `[T, C]` f32.
    /// With `device`, `x` is one token of a decode step whose position is read on the device.
    async fn run(
        &self,
        mut x: Tensor<2>,
        state: &mut State,
        logits: Logits,
        mut device: Option<&mut DeviceStep>,
    ) -> Result<Tensor<2>, Error> {
        let t = x.dims()[0];

        // `x` is the residual stream; `pending` the branch output (and its weights) not yet
        // added to it, so that each combine fuses with the norm that follows.
        let post = self.config.norm == NormPlacement::Post;
        let eps = self.config.rms_norm_eps;
        let mut pending: Option<(Tensor<2>, f32, f32)> = None;
        let routers: Vec<Option<&Linear>> = self
            .layers
            .iter()
            .map(|l| match &l.ffn {
                FeedForward::Moe(m) => Some(&m.router),
                FeedForward::Dense(_) => None,
            })
            .collect();
        for (i, layer) in self.layers.iter().enumerate() {
            let _span = tracing::debug_span!("layer", i).entered();
            let (h, a) = rms_norm(x, pending.take(), &layer.input_norm, eps)?;
            let mixed = match device.as_deref_mut() {
                Some(step) => layer.mix_at(a.clone(), &mut state.layers[i], step, i)?,
                None => layer.mix(a.clone(), &mut state.layers[i], state.position, self.block)?,
            };
            let residual = if post { a } else { h };
            let branch = Some((mixed, layer.config.attn_alpha, layer.config.attn_beta));
            // Decode through the expert cache routes in the norm's launch.
            let fused = layer.ffn.fusable_router(t).filter(|_| self.experts.is_some());
            let (h, b, route) = match fused {
                Some((router, top_k)) => {
                    let (h, b, route) = rms_norm_route(residual, branch, &layer.post_attention_norm, eps, router, top_k)?;
                    (h, b, Some(route))
                }
                None => {
                    let (h, b) = rms_norm(residual, branch, &layer.post_attention_norm, eps)?;
                    (h, b, None)
                }
            };
            let streamed = match (&self.experts, &layer.ffn) {
                (Some(cache), FeedForward::Moe(moe)) => Some(Streamed {
                    cache,
                    layer: i,
                    top_k: moe.top_k,
                    num_experts: moe.num_experts,
                    next: (i + 1..routers.len())
                        .find_map(|j| routers[j].map(|r| (j, r)))
                        .filter(|_| self.prefetch),
                }),
                _ => None,
            };
            let ffn = layer.ffn.forward(b.clone(), streamed, route).await?;
            x = if post { b } else { h };
            pending = Some((ffn, layer.config.mlp_alpha, layer.config.mlp_beta));
        }
        state.position += t;

        if logits == Logits::Last {
            x = x.narrow(0, t - 1, 1);
            pending = pending.map(|(f, a, b)| (f.narrow(0, t - 1, 1), a, b));
        }
        let (_, y) = rms_norm(x, pending, &self.norm, eps)?;
        Ok(self.lm_head.forward(y))
    }
}

/// Embedding rows as the residual stream holds them: f32 (tables may be stored narrower).
fn f32_rows(x: Tensor<2>) -> Tensor<2> {
    if x.dtype() != DType::F32 { x.cast(DType::F32) } else { x }
}
